"""Audio: STFT and inverse, Griffin-Lim, WAV files, the 1D UNet, v, the classifier."""

from __future__ import annotations

import math
import struct

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from difflab.data.audio import load_fsdd
from difflab.data.common import DatasetCorruptError
from difflab.data.signal import (
    griffin_lim,
    hann,
    istft,
    mel_filterbank,
    overlap_add_norm,
    read_wav,
    resample_half,
    stft,
    wav_bytes,
)
from difflab.diffusion.parameterization import (
    eps_from_v,
    v_from_x0_eps,
    x0_from_v,
)
from difflab.nets.unet1d import UNet1D, UNet1DConfig

F64 = torch.float64


def chirp(length: int = 1024, rate: int = 4000) -> torch.Tensor:
    t = torch.arange(length, dtype=F64) / rate
    env = torch.exp(-(((t - t[-1] / 2) / (t[-1] / 4)) ** 2))
    return env * torch.sin(2 * math.pi * 300 * t * (1 + 2 * t))


@pytest.mark.parametrize("hop", [32, 64])
def test_stft_matches_torch_and_inverts(hop):
    x = torch.randn(3, 1000, generator=torch.Generator().manual_seed(0), dtype=F64)
    X = stft(x, 128, hop)
    ref = torch.stft(
        x, 128, hop, window=hann(128, F64), center=True, pad_mode="constant",
        return_complex=True,
    )  # fmt: skip
    # Both are the same sums of 128 products of O(1) numbers in float64.
    assert_close(X, ref, atol=1e-12, rtol=1e-12)
    assert_close(istft(X, 128, hop, 1000), x, atol=1e-12, rtol=0)
    # Dividing by sum w (the condition for an unwindowed synthesis) instead of
    # sum w^2 misses by O(1): the check sees the wrong overlap-add.
    wrong = istft(X, 128, hop, 1000) * overlap_add_norm(1000, 128, hop)
    wrong = wrong / F.fold(
        hann(128, F64)[None, :, None].expand(1, 128, X.shape[-1]), (1, 1000 + 128 - 1),
        (1, 128), stride=(1, hop),
    ).reshape(-1)[64 : 64 + 1000]  # fmt: skip
    assert (wrong - x).abs().max() > 0.1


def test_hann_overlap_add_is_constant_at_75_percent():
    norm = overlap_add_norm(2048, 128, 32)[128:-128]  # away from the ends
    assert_close(norm, torch.full_like(norm, 3 * 128 / (8 * 32)), atol=1e-12, rtol=0)
    half = overlap_add_norm(2048, 128, 64)
    assert half.min() >= 0.5 - 1e-12 and half.max() <= 1 + 1e-12  # sin^4 + cos^4


def test_griffin_lim_decreases_and_beats_random_phase():
    x = chirp()
    mag = stft(x, 128, 32).abs()
    _, conv = griffin_lim(mag, 128, 32, len(x), iters=40,
                          generator=torch.Generator().manual_seed(0))  # fmt: skip
    # Griffin & Lim (1984) prove the distance does not increase; float64 rounding
    # of sums of ~1e3 terms is ~1e-13 relative.
    assert (conv[1:] - conv[:-1]).max() <= 1e-10
    assert conv[-1] < 0.5 * conv[0]  # far better than the random-phase start


def test_wav_round_trip_is_bit_exact_and_bad_bytes_are_refused():
    g = torch.Generator().manual_seed(1)
    k = torch.randint(-32768, 32768, (4001,), generator=g)
    x = k.float() / 32768
    data = wav_bytes(x, 8000)
    y, rate = read_wav(data)
    assert rate == 8000 and torch.equal(y, x) and wav_bytes(y, 8000) == data
    assert struct.unpack("<H", data[34:36])[0] == 16  # bits per sample in the header
    with pytest.raises(ValueError, match="truncated"):
        read_wav(data[:-100])
    with pytest.raises(ValueError, match="not a WAV"):
        read_wav(b"not a wav file at all, just some bytes....")


def test_resample_half_keeps_low_tones_and_mel_bands_tile():
    n = torch.arange(64, dtype=F64)
    x = torch.sin(2 * math.pi * 5 * n / 64) + torch.cos(2 * math.pi * 20 * n / 64)
    # 20 cycles is above the new Nyquist (16): removed; 5 cycles kept exactly.
    want = torch.sin(2 * math.pi * 5 * torch.arange(32, dtype=F64) / 32)
    assert_close(resample_half(x), want, atol=1e-12, rtol=0)
    fb = mel_filterbank(16, 256, 8000)
    # Between the first and the last peak, neighbouring triangles sum to one.
    peaks = fb.argmax(1)
    assert_close(fb.sum(0)[peaks[0] : peaks[-1]], torch.ones(peaks[-1] - peaks[0]),
                 atol=1e-6, rtol=0)  # fmt: skip


@pytest.mark.parametrize("length", [64, 50, 67])
def test_unet1d_keeps_length_and_pads_with_zeros(length):
    torch.manual_seed(0)
    cfg = UNet1DConfig(channels=8, channel_mult=(1, 2, 2), factors=(4, 4),
                       num_classes=10)  # fmt: skip
    net = UNet1D(cfg)
    for p in net.parameters():  # the zero-initialised layers get weights too
        if not p.any():
            torch.nn.init.normal_(p, std=0.1)
    x, t = torch.randn(2, 1, length), torch.tensor([3.0, 700.0])
    cond = {"y": torch.tensor([7, 10])}
    out = net(x, t, cond)
    assert out.shape == x.shape and out.abs().max() > 0
    # The net zero-pads on the right to a multiple of 16 and crops: padding by
    # hand the same way gives the same numbers (float32 rounding only); padding
    # on the left instead would not.
    pad = -length % 16
    padded = net(F.pad(x, (0, pad)), t, cond)
    assert padded.shape[-1] % 16 == 0
    assert_close(out, padded[..., :length], atol=1e-5, rtol=1e-5)
    if pad:
        left = net(F.pad(x, (pad, 0)), t, cond)[..., pad:]
        assert (left - out).abs().max() > 1e-3
    assert not torch.allclose(out[0], net(x, t, {"y": torch.tensor([3, 10])})[0])


def test_v_is_a_rotation_of_eps_and_x0():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 5, 7, generator=g, dtype=F64)
    a = torch.rand(5, 1, generator=g, dtype=F64) * 0.98 + 0.01
    phi = torch.atan2((1 - a).sqrt(), a.sqrt())  # alpha = cos phi, sigma = sin phi
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    v = v_from_x0_eps(x0, eps, a)
    # (x_t, v) = R(phi) (x0, eps): v = cos phi eps - sin phi x0 = d x_t / d phi.
    assert_close(v, torch.cos(phi) * eps - torch.sin(phi) * x0, atol=1e-14, rtol=0)
    h = 1e-6
    dx = (torch.cos(phi + h) - torch.cos(phi - h)) * x0 + (
        torch.sin(phi + h) - torch.sin(phi - h)) * eps  # fmt: skip
    assert_close(v, dx / (2 * h), atol=1e-8, rtol=0)  # central difference, O(h^2)
    assert_close(x_t.square() + v.square(), x0.square() + eps.square(), atol=1e-13,
                 rtol=0)  # a rotation keeps the norm (per coordinate)  # fmt: skip
    assert_close(x0_from_v(x_t, v, a), x0, atol=1e-13, rtol=0)
    assert_close(eps_from_v(x_t, v, a), eps, atol=1e-13, rtol=0)
    wrong = a.sqrt() * eps + (1 - a).sqrt() * x0  # sign slip: not a rotation
    assert (x0_from_v(x_t, wrong, a) - x0).abs().max() > 0.1


def test_audio_classifier_beats_chance(tmp_path, monkeypatch):
    from difflab.eval.audio_metrics import (
        AudioClassifierConfig,
        predict,
        proportion,
        train_audio_classifier,
    )
    from difflab.pipelines.audio import clips

    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path))
    torch.set_num_threads(1)
    clf, hit = train_audio_classifier(AudioClassifierConfig(dataset="tones", epochs=1))
    x, data = clips("tones", "test", 4000, 2048)
    acc, _ = proportion(predict(clf, x)[0] == data.labels)
    # Under chance (p = 0.1) the accuracy of 300 clips has s.e. sqrt(.1 .9 / 300)
    # = 0.017; 0.1 + 6 s.e. = 0.20 is a margin chance passes with p < 1e-8.
    assert acc > 0.1 + 6 * math.sqrt(0.1 * 0.9 / len(x)), acc


def test_bad_fsdd_file_names_itself_and_the_fix(tmp_path):
    folder = tmp_path / "free-spoken-digit-dataset" / "recordings"
    folder.mkdir(parents=True)
    good = wav_bytes(torch.zeros(800), 8000)
    (folder / "3_jackson_7.wav").write_bytes(good)
    (folder / "4_jackson_9.wav").write_bytes(good[:-300])  # truncated
    with pytest.raises(DatasetCorruptError) as err:
        load_fsdd("train", tmp_path)
    assert "4_jackson_9.wav" in str(err.value)
    assert "download-datasets.sh fsdd" in str(err.value)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--digit", "10"], "'10' is not a digit"),
        (["--digit", "7", "--n", "0"], "'0' is not a positive int"),
        (["--digit", "7", "--out", "FILE/clips"], "is a file, not a folder"),
    ],
)
def test_cli_sample_audio_refuses_bad_input(argv, message, tmp_path, capsys):
    from difflab.cli import main

    (tmp_path / "FILE").write_text("")
    argv = [a.replace("FILE", str(tmp_path / "FILE")) for a in argv]
    assert main(["sample", "audio", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1  # one line, no traceback


def test_cli_sample_audio_checks_the_budget_against_the_recipes_own_T(
    monkeypatch, tmp_path, capsys
):
    """``--nfe`` is held to the T of the audio recipe asked for (``--model``,
    ``--profile``), read from the recipe (here shortened to 30 steps)."""
    from dataclasses import replace

    import difflab.pipelines.audio as audio
    from difflab.cli import main

    real = audio.audio_recipe
    asked = []

    def short(*a, **k):
        asked.append(a)
        return replace(real(*a, **k), T=30)

    monkeypatch.setattr(audio, "audio_recipe", short)
    argv = ["--digit", "3", "--model", "wave", "--profile", "quick", "--nfe", "31"]
    out = ["--out", str(tmp_path / "clips"), "--no-progress"]
    assert main(["sample", "audio", *argv, *out]) == 2
    err = capsys.readouterr().err
    assert "more than the recipe's T = 30" in err and err.count("\n") == 1, err
    assert asked == [("wave", "quick")]


def test_clip_html_embeds_the_wav_itself():
    import base64
    import re

    from difflab.notes.audio import clip_html

    k = torch.arange(-500, 500) * 30
    x = k.float() / 32768
    text = clip_html(x, 4000, "a ramp")
    uri = re.search(r'<audio controls[^>]* src="data:audio/wav;base64,([^"]+)"', text)
    y, rate = read_wav(base64.b64decode(uri[1]))
    assert rate == 4000 and torch.equal(y, x)  # the page plays exactly these samples
    assert 'data-expected-duration="0.250000"' in text  # 1000 / 4000 s
    assert "http" not in text  # nothing loads from elsewhere
