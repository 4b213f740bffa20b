"""The small Stable Diffusion: captions, tokenizer, text encoder, cross-attention, sampling.

Every model here is tiny and untrained, with its zero-initialised output layers
given random weights so that each part of the network matters.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from difflab.data import captions as cap
from difflab.diffusion.schedules import make_schedule
from difflab.nets.autoencoder import Autoencoder, AutoencoderConfig
from difflab.nets.text import (
    TextConditioned,
    TextEncoder,
    TextEncoderConfig,
    WordTokenizer,
    attention_maps,
    cross_attention_weights,
)
from difflab.nets.unet import CrossAttention, UNet, UNetConfig
from difflab.pipelines.autoencoder import TrainedAutoencoder, autoencoder_recipe
from difflab.pipelines.stable_diffusion import (
    StableDiffusionRecipe,
    TrainedStableDiffusion,
    tokenizer,
)
from difflab.train.loop import TrainConfig


def _randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter redrawn N(0, 0.2^2): no zero-initialised layer stays silent."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    return module.eval()


def _tiny_model() -> TrainedStableDiffusion:
    tok = tokenizer()
    text = TextEncoderConfig(len(tok), tok.max_length, dim=8, layers=1, heads=2)
    unet = UNetConfig(
        in_channels=2,
        image_size=4,
        channels=8,
        channel_mult=(1, 2),
        attn_resolutions=(4,),
        head_dim=8,
        context_dim=8,
    )
    ae_recipe = autoencoder_recipe("quick", 4, 2)
    ae_net = Autoencoder(AutoencoderConfig(1, 16, 4, 2, channels=8))
    ae = TrainedAutoencoder(ae_recipe, _randomise(ae_net, 1), 1.0, 0.0)
    train = TrainConfig(steps=1, cond_drop=0.1, null_cond=tok.null())
    recipe = StableDiffusionRecipe(ae_recipe, text, unet, train, T=100)
    net = _randomise(TextConditioned(TextEncoder(text), UNet(unet)), 2)
    return TrainedStableDiffusion(
        recipe, net, ae, make_schedule("linear", 100), tok, 0, 0.0, []
    )


# --- captions ------------------------------------------------------------------------


def _sheared_bar(s: float, size: int = 32) -> torch.Tensor:
    """A one-pixel-wide bar through (u0 + s v, v), split linearly between columns.

    Linear splitting keeps each row's ink-weighted mean column at exactly
    u0 + s v, and every row has the same ink, so cov(u, v) = s var(v).
    """
    ink = torch.zeros(size, size, dtype=torch.float64)
    for row in range(4, size - 4):
        v = -row  # upwards
        u = size / 2 + s * (v + size / 2)
        lo = math.floor(u)
        ink[row, lo] += 1 - (u - lo)
        ink[row, lo + 1] += u - lo
    return (2 * ink - 1)[None, None]


@pytest.mark.parametrize("s", [-0.4, 0.0, 0.25])
def test_slant_of_a_sheared_bar_is_its_shear(s):
    # Exact up to float64 rounding of sums of ~100 terms: tolerance 1e-9.
    assert abs(cap.slant(_sheared_bar(s)).item() - s) < 1e-9


def test_slant_with_the_wrong_normaliser_misses():
    # cov(u, v) / var(u) (the regression of v on u) is not the shear.
    x = _sheared_bar(0.25)
    ink = (x[0, 0] + 1) / 2
    H, W = ink.shape
    v = -torch.arange(H, dtype=torch.float64)[:, None].expand(H, W)
    u = torch.arange(W, dtype=torch.float64)[None, :].expand(H, W)
    m = ink.sum()
    du, dv = u - (ink * u).sum() / m, v - (ink * v).sum() / m
    wrong = (ink * du * dv).sum() / (ink * du * du).sum()
    assert abs(wrong.item() - 0.25) > 0.1


def test_thickness_is_the_inked_fraction():
    x = -torch.ones(1, 1, 10, 10)
    x[0, 0, 2:5, 1:9] = 1.0  # 24 of 100 pixels fully inked
    assert cap.thickness(x).item() == pytest.approx(0.24, abs=1e-12)


def test_describe_bins_by_the_class_thresholds():
    bins = cap.AttributeBins((0.1,) * 10, (-0.1,) * 10, (0.1,) * 10)
    images = torch.cat([_sheared_bar(-0.4), _sheared_bar(0.0), _sheared_bar(0.25)])
    th, sl = cap.describe(images, torch.zeros(3, dtype=torch.long), bins)
    assert sl.tolist() == [0, 1, 2]
    assert th.tolist() == [0, 0, 0]  # a 1-pixel bar inks about 3% of the square


def test_captions_follow_the_grammar_and_hold_out_pairs():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(200, 1, 8, 8, generator=gen) * 2 - 1
    labels = torch.arange(200) % 10
    bins = cap.fit_attributes(images, labels)
    rows = cap.captioned(images, labels, bins)
    assert rows.kept + rows.dropped == 200 and len(rows.captions) == 4 * rows.kept
    assert rows.dropped > 0
    # each row names its image: four rows per kept image, none for a dropped one
    assert torch.equal(rows.images, images[rows.source])
    assert rows.source.bincount(minlength=200).unique().tolist() == [0, 4]
    for c in rows.captions:
        words = c.split()
        assert words[0] == "a" and set(words) <= set(cap.VOCABULARY)
        digit = next(cap.DIGIT_WORDS.index(w) for w in words if w in cap.DIGIT_WORDS)
        for d, word in cap.HELD_OUT:
            assert not (digit == d and word in c), c
    assert cap.caption(7, 1, 2) == "a thick seven leaning right"


# --- tokenizer -----------------------------------------------------------------------


def test_tokenizer_round_trip():
    tok = tokenizer()
    prompts = [
        cap.caption(d, a, b)
        for d in range(10)
        for a in (None, 0, 1)
        for b in (None, 0, 1, 2)
    ]
    ids, mask = tok.encode(prompts)
    assert ids.shape == (len(prompts), tok.max_length)
    assert tok.decode(ids) == prompts
    assert mask.sum(1).tolist() == [len(p.split()) for p in prompts]
    assert (ids[~mask] == tok.pad_id).all() and (ids[mask] > tok.unk_id).all()


def test_unknown_word_is_unk_with_one_warning():
    tok = WordTokenizer(["a", "two"], max_length=4)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ids, _ = tok.encode(["a purple two", "a purple two"])
    assert len(seen) == 1 and "purple" in str(seen[0].message)
    assert ids[0].tolist() == [2, tok.unk_id, 3, 0]
    assert tok.decode(ids[:1]) == ["a <unk> two"]


@pytest.mark.parametrize("prompt", ["", "   ", "a thick seven leaning right now"])
def test_empty_or_long_prompt_is_refused(prompt):
    with pytest.raises(ValueError, match="empty|more than"):
        tokenizer().encode(prompt)


# --- the network ---------------------------------------------------------------------


def test_cross_attention_ignores_padding():
    torch.manual_seed(0)
    cfg = UNetConfig(
        in_channels=2, image_size=4, channels=8, channel_mult=(1, 2),
        attn_resolutions=(4,), head_dim=8, context_dim=6,
    )  # fmt: skip
    net = _randomise(UNet(cfg))
    x, t = torch.randn(2, 2, 4, 4), torch.tensor([3.0, 70.0])
    context = torch.randn(2, 5, 6)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0]], dtype=torch.bool)
    other = torch.where(mask[..., None], context, 100 * torch.randn(2, 5, 6))
    with torch.no_grad():
        a = net(x, t, {"context": context, "mask": mask})
        b = net(x, t, {"context": other, "mask": mask})
        unmasked = net(x, t, {"context": other})
    # Padding gets softmax weight exp(-inf) = 0 exactly: the outputs are identical.
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # Without the mask the same change is seen (the check can fail).
    assert (a - unmasked).abs().max() > 1e-3


def test_text_encoder_ignores_padded_ids():
    model = _tiny_model().net
    tok = tokenizer()
    ids, mask = tok.encode(["a thin two", "a nine"])
    junk = torch.where(mask, ids, torch.randint(2, len(tok), ids.shape))
    x, t = torch.randn(2, 2, 4, 4), torch.tensor([10.0, 50.0])
    with torch.no_grad():
        a = model(x, t, {"ids": ids, "mask": mask})
        b = model(x, t, {"ids": junk, "mask": mask})
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_cross_attention_weights_give_the_blocks_output():
    """Eq. 3 of Rombach et al. 2022 by hand equals the block; no 1/sqrt(d) misses."""
    torch.manual_seed(0)
    block = _randomise(CrossAttention(8, 6, heads=2))
    x, context = torch.randn(3, 8, 4, 4), torch.randn(3, 5, 6)
    mask = torch.rand(3, 5) > 0.4
    mask[:, 0] = True
    weights = cross_attention_weights(block, x, context, mask)  # (B, heads, HW, L)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 2, 16))
    assert (weights.masked_select(~mask[:, None, None, :]) == 0).all()

    def by_hand(w):
        v = block.kv(context).view(3, 5, 2, 2, 4)[:, :, 1].transpose(1, 2)
        h = (w @ v).transpose(1, 2).reshape(3, 16, 8)  # (B, HW, C)
        return x + block.proj(h).transpose(1, 2).view(3, 8, 4, 4)

    with torch.no_grad():
        out = block(x, context, mask)
        # float32 kernels sum in another order: 1e-5 is ~100 ulp at these scales.
        torch.testing.assert_close(by_hand(weights), out, rtol=1e-5, atol=1e-5)
        d = 4
        wrong = cross_attention_weights(block, x, context, mask) ** math.sqrt(d)
        wrong = wrong / wrong.sum(-1, keepdim=True)  # softmax of Q K^T, unscaled
        assert (by_hand(wrong) - out).abs().max() > 1e-3


def test_attention_maps_are_distributions_over_the_prompt():
    m = _tiny_model()
    cond = m.encode_prompts(["a thin two"])
    block = m.net.unet.down[0].cross
    w = attention_maps(m.net, block, torch.randn(1, 2, 4, 4), torch.tensor([5]), cond)
    assert w.shape == (1, 1, 16, tokenizer().max_length + 1)
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 1, 16))
    assert (w[..., 4:] == 0).all()  # start + 3 words are real; padding gets 0


# --- sampling ------------------------------------------------------------------------


def test_text_to_image_is_deterministic_under_a_seed():
    m = _tiny_model()
    a = m.text_to_image("a thick seven", n=2, steps=5, guidance=3.0, seed=7)
    b = m.text_to_image("a thick seven", n=2, steps=5, guidance=3.0, seed=7)
    c = m.text_to_image("a thick seven", n=2, steps=5, guidance=3.0, seed=8)
    assert a.shape == (2, 1, 16, 16)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - c).abs().max() > 1e-3


def test_empty_caption_is_the_unconditional_branch():
    m = _tiny_model()
    tok = m.tokenizer
    null = tok.null()
    cond = m.encode_prompts(["a thin two", "a nine leaning left"])
    empty = {
        "ids": torch.zeros_like(cond["ids"]),
        "mask": torch.zeros_like(cond["mask"]),
    }
    x, t = torch.randn(2, 2, 4, 4), torch.tensor([10, 60])
    with torch.no_grad():
        torch.testing.assert_close(
            m.net(x, t.float(), null(cond)), m.net(x, t.float(), empty), rtol=0, atol=0
        )
        # The prompt does matter when it is given.
        assert (
            m.net(x, t.float(), cond) - m.net(x, t.float(), empty)
        ).abs().max() > 1e-3
    # Guidance 0 is the unconditional model: the prompt no longer matters. The
    # guided eps is eps_c - (eps_c - eps_u), equal to eps_u up to float32 rounding
    # (a few ulp per step over 5 steps): tolerance 1e-5.
    a = m.text_to_image("a thin two", steps=5, guidance=0.0, seed=3)
    b = m.text_to_image("a nine leaning left", steps=5, guidance=0.0, seed=3)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    c = m.text_to_image("a nine leaning left", steps=5, guidance=1.0, seed=3)
    assert (a - c).abs().max() > 1e-3


@pytest.mark.parametrize("w", [float("nan"), float("inf"), -float("inf")])
def test_guidance_must_be_finite(w):
    with pytest.raises(ValueError, match="finite"):
        _tiny_model().text_to_image("a two", steps=2, guidance=w)


def test_bad_prompts_are_refused():
    m = _tiny_model()
    with pytest.raises(ValueError, match="empty"):
        m.text_to_image("", steps=2)
    with pytest.raises(ValueError, match="more than"):
        m.text_to_image("a thin two leaning left and right", steps=2)
    with pytest.raises(TypeError, match="number"):
        m.text_to_image("a two", steps=2, guidance="strong")


# --- command line --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sample", "sd", "--prompt", ""], "empty"),
        (["sample", "sd", "--prompt", "a b c d e f"], "more than"),
        (["sample", "sd"], "required: --prompt"),
        (["sample", "ddpm", "--prompt", "a two"], "unrecognized arguments: --prompt"),
        (["sample", "sd", "--prompt", "a two", "--eta", "0.5"], "eta 0"),
        (["sample", "sd", "--prompt", "a two", "--solver", "heun", "--nfe", "2"], "3"),
        (["sample", "sd", "--prompt", "a two", "--solver", "dpm++3"], "invalid choice"),
        (["train", "sd"], "can only be sampled"),
        (["train", "audio"], "can only be sampled"),
        (["sample", "sd", "--prompt", "seven " * 1700], "10,200 characters"),
        (["sample", "sd", "--prompt", "x" * 10_000], "10,000 characters"),
        (["sample", "ddpm", "--sampler", "ddpm", "--steps", "20"], "all T steps"),
    ],
)
def test_sample_sd_refuses_bad_input_before_any_work(argv, message, tmp_path, capsys):
    """Bad input is exit status 2 and one short line (a long prompt is not echoed)."""
    from difflab.cli import main

    out = ["--out", str(tmp_path / "grid.png")] if argv[0] == "sample" else []
    assert main([*argv, *out, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1 and len(err) < 300, err[:500]
    assert not (tmp_path / "grid.png").exists()


def test_sample_sd_checks_the_budget_against_the_recipes_own_T(
    monkeypatch, tmp_path, capsys
):
    """``--nfe`` is held to the T of the recipe that will be sampled, read from
    the recipe (here shortened to 40 steps), not to a number in the CLI."""
    from dataclasses import replace

    import difflab.pipelines.stable_diffusion as sd
    from difflab.cli import main

    real = sd.stable_diffusion_recipe
    monkeypatch.setattr(
        sd, "stable_diffusion_recipe", lambda *a, **k: replace(real(*a, **k), T=40)
    )
    out = ["--out", str(tmp_path / "grid.png"), "--no-progress"]
    argv = ["sample", "sd", "--prompt", "a two", "--solver", "ddim", "--nfe", "41"]
    assert main([*argv, *out]) == 2
    err = capsys.readouterr().err
    assert "more than the recipe's T = 40" in err and err.count("\n") == 1, err
