"""bf16 on the CPU: only where asked and done in hardware, recorded in the cache key,
engaged when on, and still a reproducible run that learns."""

from dataclasses import replace

import pytest
import torch
from torch.testing import assert_close

from difflab.data.images import load_images
from difflab.diffusion.schedules import make_schedule
from difflab.eval import metrics
from difflab.nets.unet import UNet, UNetConfig
from difflab.pipelines import autoencoder as ae_mod
from difflab.pipelines import recipes
from difflab.runtime import device as dev
from difflab.train.loop import TrainConfig, train

CPU = torch.device("cpu")
NATIVE = dev.native_cpu_bf16()
needs_native = pytest.mark.skipif(
    not NATIVE, reason="this CPU does not do bf16 in hardware (AMX or AVX512-BF16)"
)
TINY = UNetConfig(
    in_channels=1, image_size=8, channels=16, channel_mult=(1, 2), num_res_blocks=1
)


def _hardware(monkeypatch, native: bool) -> None:
    for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: native, raising=False)


def test_bf16_on_the_cpu_only_when_asked_and_done_in_hardware(monkeypatch):
    monkeypatch.delenv("DIFFLAB_CPU_BF16", raising=False)
    _hardware(monkeypatch, True)
    assert dev.autocast_dtype(CPU) is None  # not asked: fp32, as every recipe was
    assert dev.autocast_dtype(CPU, cpu=True) is torch.bfloat16
    monkeypatch.setenv("DIFFLAB_CPU_BF16", "0")
    assert dev.autocast_dtype(CPU, cpu=True) is None
    monkeypatch.delenv("DIFFLAB_CPU_BF16")
    _hardware(monkeypatch, False)  # emulated bf16 is slower: stays off
    assert dev.autocast_dtype(CPU, cpu=True) is None
    assert not dev.bf16_here(CPU)


def test_the_cache_key_records_whether_bf16_ran(monkeypatch, small_latent):
    """The same recipe on a CPU with and without bf16 hardware: two entries, and
    the recipe each hashes says what ran (the UNet's and the autoencoder's)."""
    assert small_latent.train.cpu_amp and small_latent.autoencoder.amp
    seen = {}
    for native in (True, False):
        _hardware(monkeypatch, native)
        r, _, path = recipes.plan(small_latent, device=CPU)
        seen[native] = path
        assert r.train.cpu_amp is native and r.autoencoder.amp is native
        assert ae_mod.autoencoder_here(small_latent.autoencoder, CPU).amp is native
    assert seen[True] != seen[False]


def test_one_rule_turns_every_bf16_switch_off_where_it_would_not_run(monkeypatch):
    """The UNet's ``cpu_amp``, the autoencoder's and the classifier's ``amp`` go
    through one helper; each stays on exactly where bf16 runs."""
    monkeypatch.delenv("DIFFLAB_CPU_BF16", raising=False)
    configs = {
        "cpu_amp": TrainConfig(cpu_amp=True),
        "amp": replace(metrics.classifier_recipe("digits"), amp=True),
    }
    assert configs["amp"].amp
    for native in (True, False):
        _hardware(monkeypatch, native)
        for flag, config in configs.items():
            assert getattr(dev.bf16_as_run(config, flag, CPU), flag) is native
    off = dev.bf16_as_run(TrainConfig(), "cpu_amp", CPU)  # never asked: stays off
    assert off.cpu_amp is False and off == TrainConfig()
    monkeypatch.setattr(dev, "bf16_here", lambda device: True)  # say a bf16 GPU
    gpu = torch.device("cuda")
    assert dev.bf16_as_run(configs["amp"], "amp", gpu).amp
    assert not dev.bf16_as_run(
        configs["cpu_amp"], "cpu_amp", gpu, cpu_only=True
    ).cpu_amp


def _first_layer_dtype(cfg: TrainConfig) -> torch.dtype:
    """The dtype of the network's first convolution's output in one training step."""
    net = UNet(TINY)
    seen = []
    first = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    first.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    digits = load_images("digits").images
    train(net, digits, make_schedule("linear", 1000), cfg, progress=False)
    return seen[0]


@needs_native
def test_cpu_amp_runs_the_convolutions_in_bf16_and_only_then():
    cfg = TrainConfig(steps=1, batch_size=8, warmup=1, log_every=1)
    assert _first_layer_dtype(cfg) is torch.float32
    assert _first_layer_dtype(TrainConfig(**{**vars(cfg), "cpu_amp": True})) is (
        torch.bfloat16
    )


@needs_native
def test_a_bf16_run_is_reproducible_and_learns():
    """Bit-identical weights from two runs (the cache's promise), and the loss falls
    as the fp32 test of the loop asks (to below 0.6 of its start)."""
    digits = load_images("digits").images
    cfg = TrainConfig(
        steps=120, batch_size=64, lr=3e-3, warmup=5, log_every=10, cpu_amp=True
    )
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        runs.append(
            train(
                UNet(TINY), digits, make_schedule("linear", 1000), cfg, progress=False
            )
        )
    for a, b in zip(
        runs[0].net.state_dict().values(),
        runs[1].net.state_dict().values(),
        strict=True,
    ):
        assert_close(a, b, rtol=0, atol=0)
    losses = runs[0].losses
    first, last = sum(losses[:2]) / 2, sum(losses[-3:]) / 3
    assert last < 0.6 * first, losses


def test_training_batches_are_contiguous_whatever_the_data_strides():
    """CIFAR-10's HWC files seen through a permute, and the latents an encoder
    makes of them (channels-last), are strided; a batch of them must not stay
    strided (bf16 convolutions on those strides ran 1.8x slower than on NCHW)."""
    from types import SimpleNamespace

    from difflab.train.loop import get_batch

    hwc = torch.randn(50, 4, 4, 3).permute(0, 3, 1, 2)
    latents = torch.randn(50, 4, 4, 4).contiguous(memory_format=torch.channels_last)
    state = SimpleNamespace(gen=torch.Generator().manual_seed(0))
    for images in (hwc, latents):
        assert not images.is_contiguous()
        x0, _ = get_batch(images, None, state, TrainConfig(), 16)
        assert x0.is_contiguous() and x0.shape == (16, *images.shape[1:])


@needs_native
def test_a_bf16_recipe_samples_with_its_network_in_bf16_and_float32_out(small_latent):
    """``Trained.eps_model`` of a recipe that trained in bf16 here: float32 out,
    not the float32 network's values (bf16 is on) but within the rounding of a
    bf16 network: unit roundoff u = 2^-8 per layer, added over at most 16
    layers in a row (the relative RMS error stays under 16 u)."""
    from difflab.diffusion.parameterization import as_eps_model
    from difflab.diffusion.schedules import make_schedule as schedule_of

    r = small_latent
    net = recipes.init_net(r).eval()
    with torch.no_grad():  # the last layer starts at zero: give every layer weights
        for p in net.parameters():
            p.add_(
                0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1))
            )
    schedule = schedule_of(r.schedule, r.T)
    trained = recipes.Trained(r, net, schedule, [], 0.0, False)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(
        64, r.unet.in_channels, r.unet.image_size, r.unet.image_size, generator=g
    )
    t = torch.rand(64, generator=g).clamp(min=0.01)
    cond = {"y": torch.arange(64) % 10}
    with torch.no_grad():
        ours = trained.eps_model()(x, t, cond)
        fp32 = as_eps_model(net, schedule, r.train.prediction)(x, t, cond)
    assert ours.dtype is torch.float32
    rel = ((ours - fp32).pow(2).mean() / fp32.pow(2).mean()).sqrt().item()
    assert 0 < rel < 16 * 2**-8, rel
