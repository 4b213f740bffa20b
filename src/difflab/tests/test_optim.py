"""The fused optimisers of difflab.core.optim against torch's reference loops."""

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from difflab.core.optim import adam, clip_grad_norm


def _run(make_opt, steps=25, clip=None):
    """``steps`` updates of a small MLP on a fixed regression; its final weights."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 5, generator=g), torch.randn(64, 3, generator=g)
    opt = make_opt(net.parameters())
    for _ in range(steps):
        loss = (net(x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        if clip is not None:
            clip(net.parameters())
        opt.step()
    return torch.cat([p.detach().flatten() for p in net.parameters()]), opt


@pytest.mark.parametrize("decoupled", [False, True])
def test_fused_adam_is_torchs_adam(decoupled):
    ref_cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    kw = dict(lr=3e-2, betas=(0.5, 0.99), weight_decay=0.1)
    got, opt = _run(lambda p: adam(p, decoupled=decoupled, **kw))
    want, _ = _run(lambda p: ref_cls(p, foreach=False, **kw))
    assert type(opt) is ref_cls and opt.defaults["fused"] is True
    assert_close(got, want, rtol=1e-5, atol=1e-6)
    # Adam's L2 penalty and AdamW's decoupled decay differ at this weight decay:
    # the comparison above can tell the two apart.
    other, _ = _run(lambda p: adam(p, decoupled=not decoupled, **kw))
    assert (other - want).abs().max() > 1e-3


def test_clip_grad_norm_is_torchs():
    kw = dict(lr=1e-2)
    got, _ = _run(lambda p: adam(p, **kw), clip=lambda p: clip_grad_norm(p, 0.05))
    ref = lambda p: nn.utils.clip_grad_norm_(list(p), 0.05, foreach=False)  # noqa: E731
    want, _ = _run(lambda p: torch.optim.Adam(p, foreach=False, **kw), clip=ref)
    unclipped, _ = _run(lambda p: adam(p, **kw))
    assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert (unclipped - want).abs().max() > 1e-3  # the clip was active
