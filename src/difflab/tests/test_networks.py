"""Tests of the networks: UNet, MLP, classifier."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from difflab.nets.classifier import Classifier, ClassifierConfig
from difflab.nets.mlp import MLP, MLPConfig
from difflab.nets.unet import (
    CrossAttention,
    SelfAttention,
    UNet,
    UNetConfig,
    ddpm_cifar10_config,
    num_groups,
    sinusoidal_embedding,
)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def randomise_zero_inits(module: nn.Module, generator: torch.Generator) -> None:
    """Give every all-zero parameter random values (undo the DDPM zero init)."""
    with torch.no_grad():
        for p in module.parameters():
            if not p.any():
                p.copy_(0.1 * torch.randn(p.shape, generator=generator))


CONFIGS = {
    "digits-8x8": UNetConfig(image_size=8, channels=16, channel_mult=(1, 2, 2)),
    "mnist-28x28-attn": UNetConfig(channels=16, attn_resolutions=(7,)),
    "cifar-32x32x3": UNetConfig(
        in_channels=3,
        image_size=32,
        channels=16,
        channel_mult=(1, 2, 2, 2),
        num_res_blocks=2,
        attn_resolutions=(16,),
        num_heads=2,
        dropout=0.1,
    ),
    "class-conditional": UNetConfig(image_size=8, channels=16, num_classes=10),
    "cross-attention": UNetConfig(
        image_size=8, channels=16, attn_resolutions=(4, 2), context_dim=12, head_dim=8
    ),
    "out-channels": UNetConfig(image_size=8, channels=24, out_channels=2),
}


def inputs(cfg: UNetConfig, B: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, cfg.in_channels, cfg.image_size, cfg.image_size, generator=g)
    t = torch.randint(0, 1000, (B,), generator=g).float()
    y = (
        torch.randint(0, cfg.num_classes, (B,), generator=g)
        if cfg.num_classes
        else None
    )
    context = (
        torch.randn(B, 5, cfg.context_dim, generator=g) if cfg.context_dim else None
    )
    return x, t, y, context


@pytest.mark.parametrize("name", list(CONFIGS))
def test_unet_output_shape(name):
    cfg = CONFIGS[name]
    net = UNet(cfg)
    randomise_zero_inits(net, torch.Generator().manual_seed(1))
    x, t, y, context = inputs(cfg)
    cond = {k: v for k, v in (("y", y), ("context", context)) if v is not None}
    out = net(x, t, cond or None)
    c_out = cfg.out_channels or cfg.in_channels
    assert out.shape == (x.shape[0], c_out, cfg.image_size, cfg.image_size)
    assert torch.isfinite(out).all()


def test_ddpm_cifar10_parameter_count_and_structure():
    net = UNet(ddpm_cifar10_config())
    # Ho et al. 2020, Appendix B: 35.7M parameters for CIFAR-10.
    assert abs(n_params(net) - 35.7e6) < 0.1e6
    # Attention: 2 blocks down and 3 up at 16x16, one in the middle.
    assert sum(isinstance(m, SelfAttention) for m in net.modules()) == 6
    assert all(m.num_groups == 32 for m in net.modules() if isinstance(m, nn.GroupNorm))


def test_bad_configs_raise():
    with pytest.raises(ValueError, match="cannot be halved"):
        UNet(UNetConfig(image_size=28, channel_mult=(1, 2, 2, 2)))
    with pytest.raises(ValueError, match="attn_resolutions"):
        UNet(UNetConfig(image_size=28, attn_resolutions=(16,)))
    net = UNet(CONFIGS["digits-8x8"])
    x, t, _, _ = inputs(CONFIGS["digits-8x8"])
    with pytest.raises(ValueError, match="context"):
        net(x, t, {"context": torch.randn(3, 5, 4)})
    with pytest.raises(ValueError, match="num_classes"):
        net(x, t, {"y": torch.zeros(3, dtype=torch.long)})


def test_num_groups_divides_and_matches_ddpm():
    for c in (8, 16, 24, 32, 48, 64, 96, 128, 256, 384, 512):
        g = num_groups(c)
        assert c % g == 0 and c // g >= 2 and g <= 32
    assert [num_groups(c) for c in (128, 256, 512)] == [32, 32, 32]


def test_sinusoidal_embedding_properties():
    dim, half = 64, 32
    t = torch.arange(1000, dtype=torch.float64)
    emb = sinusoidal_embedding(t, dim)
    assert emb.shape == (1000, dim)
    assert emb.abs().max() <= 1.0
    # sin^2 + cos^2 = 1 for each frequency.
    pairs = emb[:, :half] ** 2 + emb[:, half:] ** 2
    torch.testing.assert_close(pairs, torch.ones_like(pairs))
    # t = 0 is (0, ..., 0, 1, ..., 1).
    torch.testing.assert_close(
        emb[0], torch.cat([torch.zeros(half), torch.ones(half)]).double()
    )
    # Vaswani et al. 2017, Sec. 3.5: wavelengths form a geometric progression,
    # here frequency w_i = 10000^(-i / half).
    i, s = 5, 123.0
    w = 10000.0 ** (-i / half)
    got = sinusoidal_embedding(torch.tensor([s], dtype=torch.float64), dim)[0]
    torch.testing.assert_close(
        got[[i, half + i]],
        torch.tensor([math.sin(s * w), math.cos(s * w)], dtype=torch.float64),
    )
    # Distinct times give distinct embeddings (all 1000 DDPM steps).
    dist = torch.cdist(emb, emb) + torch.eye(1000, dtype=torch.float64)
    assert dist.min() > 1e-2
    # Odd width: padded with one zero column.
    odd = sinusoidal_embedding(t[:4], 7)
    assert odd.shape == (4, 7) and (odd[:, -1] == 0).all()


def test_untrained_unet_outputs_exactly_zero():
    cfg = CONFIGS["class-conditional"]
    x, t, y, _ = inputs(cfg)
    out = UNet(cfg)(x, t, {"y": y})
    assert (out == 0).all()


def test_self_attention_matches_softmax_reference():
    torch.manual_seed(0)
    B, C, H, W, heads = 2, 16, 3, 4, 4
    attn = SelfAttention(C, heads)
    nn.init.normal_(attn.proj.weight)
    x = torch.randn(B, C, H, W)
    h = attn.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
    q, k, v = attn.qkv(h).chunk(3, dim=-1)  # each (B, HW, C), head-major channels
    d = C // heads
    outs = []
    for j in range(heads):
        qj, kj, vj = (z[..., j * d : (j + 1) * d] for z in (q, k, v))
        a = torch.softmax(qj @ kj.transpose(1, 2) / math.sqrt(d), dim=-1)
        outs.append(a @ vj)
    ref = x + attn.proj(torch.cat(outs, -1)).transpose(1, 2).reshape(B, C, H, W)
    torch.testing.assert_close(attn(x), ref)


def test_cross_attention_matches_softmax_reference():
    torch.manual_seed(0)
    B, C, H, W, L, D, heads = 2, 8, 2, 3, 5, 6, 2
    attn = CrossAttention(C, D, heads)
    nn.init.normal_(attn.proj.weight)
    x, context = torch.randn(B, C, H, W), torch.randn(B, L, D)
    q = attn.q(attn.norm(x).flatten(2).transpose(1, 2))  # (B, HW, C)
    k, v = attn.kv(context).chunk(2, dim=-1)  # each (B, L, C)
    d = C // heads
    outs = []
    for j in range(heads):
        qj, kj, vj = (z[..., j * d : (j + 1) * d] for z in (q, k, v))
        outs.append(torch.softmax(qj @ kj.transpose(1, 2) / math.sqrt(d), -1) @ vj)
    ref = x + attn.proj(torch.cat(outs, -1)).transpose(1, 2).reshape(B, C, H, W)
    torch.testing.assert_close(attn(x, context), ref)


def test_class_conditioning_acts_after_training_steps():
    cfg = CONFIGS["class-conditional"]
    net = UNet(cfg)
    x, t, _, _ = inputs(cfg, B=4)
    y = torch.tensor([0, 1, 2, 10])  # 10 is the null label
    target = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    # Step 1 moves only the zero-initialised output conv; from step 2 on the
    # gradient reaches the class embedding through the residual blocks.
    for _ in range(2):
        opt.zero_grad()
        F.mse_loss(net(x, t, {"y": y}), target).backward()
        opt.step()
    with torch.no_grad():
        a = net(x, t, {"y": torch.zeros(4, dtype=torch.long)})
        b = net(x, t, {"y": torch.ones(4, dtype=torch.long)})
        null = net(x, t, {"y": torch.full((4,), 10)})
        none = net(x, t)
    assert (a - b).abs().max() > 1e-6
    torch.testing.assert_close(null, none)  # no "y" means the null class


def test_context_changes_output():
    cfg = CONFIGS["cross-attention"]
    net = UNet(cfg)
    randomise_zero_inits(net, torch.Generator().manual_seed(0))
    x, t, _, context = inputs(cfg)
    with torch.no_grad():
        assert (
            net(x, t, {"context": context}) - net(x, t, {"context": -context})
        ).abs().max() > 1e-4


def test_cross_attention_ignores_padded_tokens():
    """mask False = padding: changing those tokens changes nothing, a real one does."""
    cfg = CONFIGS["cross-attention"]
    net = UNet(cfg)
    randomise_zero_inits(net, torch.Generator().manual_seed(0))
    x, t, _, context = inputs(cfg)  # context (B, 5, D)
    mask = torch.ones(context.shape[:2], dtype=torch.bool)
    mask[:, 3:] = False  # the last two tokens of every sample are padding
    mask[0, 1:] = False  # sample 0 has a single real token
    other = context.clone()
    other[~mask] = 100 * torch.randn(int((~mask).sum()), context.shape[-1])
    with torch.no_grad():
        a = net(x, t, {"context": context, "mask": mask})
        b = net(x, t, {"context": other, "mask": mask})
        # Exactly zero attention weight on padding: the same output to rounding.
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
        changed = context.clone()
        changed[:, 0] = -changed[:, 0]  # a real token
        c = net(x, t, {"context": changed, "mask": mask})
        assert (a - c).abs().max() > 1e-4
        # Without the mask the padding does count (the test above is not vacuous).
        assert (net(x, t, {"context": other}) - a).abs().max() > 1e-4
        # All padding: attends to nothing, finite output.
        empty = net(x, t, {"context": context, "mask": torch.zeros_like(mask)})
        assert torch.isfinite(empty).all()


def test_time_scale_is_a_change_of_time_variable():
    cfg = CONFIGS["digits-8x8"]
    net = UNet(cfg)
    randomise_zero_inits(net, torch.Generator().manual_seed(0))
    scaled = UNet(UNetConfig(**{**cfg.__dict__, "time_scale": 1000.0}))
    scaled.load_state_dict(net.state_dict())
    x, t, _, _ = inputs(cfg)
    with torch.no_grad():
        torch.testing.assert_close(net(x, t), scaled(x, t / 1000.0))


def test_channels_last_and_bf16_follow_the_input():
    cfg = CONFIGS["mnist-28x28-attn"]
    net = UNet(cfg).eval()
    randomise_zero_inits(net, torch.Generator().manual_seed(0))
    x, t, _, _ = inputs(cfg)
    with torch.no_grad():
        ref = net(x, t)
        out = net.to(memory_format=torch.channels_last)(
            x.to(memory_format=torch.channels_last), t
        )
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
        low = net.to(torch.bfloat16)(x.bfloat16(), t)
    assert low.dtype == torch.bfloat16
    assert (low.float() - ref).abs().mean() < 0.05 * ref.abs().mean() + 1e-3


def test_tiny_unet_overfits_one_batch():
    torch.manual_seed(0)
    cfg = UNetConfig(
        image_size=8, channels=16, channel_mult=(1, 2), attn_resolutions=(4,)
    )
    net = UNet(cfg)
    x, t, _, _ = inputs(cfg, B=8)
    target = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):  # the loss typically falls ~100x in these 40 steps
        loss = F.mse_loss(net(x, t), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10


def test_mlp_shapes_and_conditioning():
    g = torch.Generator().manual_seed(0)
    x, t = (
        torch.randn(16, 2, generator=g),
        torch.randint(0, 1000, (16,), generator=g).float(),
    )
    assert MLP(MLPConfig())(x, t).shape == (16, 2)
    net = MLP(MLPConfig(dim=3, num_classes=4, hidden=32, depth=2))
    x3 = torch.randn(16, 3, generator=g)
    y = torch.randint(0, 4, (16,), generator=g)
    out = net(x3, t, {"y": y})
    assert out.shape == (16, 3)
    assert (out - net(x3, t, {"y": (y + 1) % 4})).abs().max() > 1e-6
    torch.testing.assert_close(net(x3, t), net(x3, t, {"y": torch.full((16,), 4)}))
    with pytest.raises(ValueError):
        MLP(MLPConfig())(x, t, {"y": y})


def test_mlp_time_scale():
    torch.manual_seed(0)
    a, b = MLP(MLPConfig()), MLP(MLPConfig(time_scale=1000.0))
    b.load_state_dict(a.state_dict())
    x, t = torch.randn(8, 2), torch.rand(8)
    torch.testing.assert_close(b(x, t), a(x, 1000.0 * t))


@pytest.mark.parametrize("shape", [(1, 8), (1, 28), (3, 32)])
def test_classifier_shapes_and_features(shape):
    c, size = shape
    net = Classifier(ClassifierConfig(in_channels=c, image_size=size, width=8))
    x = torch.randn(5, c, size, size, generator=torch.Generator().manual_seed(0))
    feats = net.features(x)
    assert feats.shape == (5, net.feature_dim) == (5, 32)
    logits = net(x)
    assert logits.shape == (5, 10)
    # The logits are an affine map of exactly these features.
    torch.testing.assert_close(logits, feats @ net.head.weight.T + net.head.bias)
