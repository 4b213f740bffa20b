"""The training loop: it learns, resumes exactly, guards against NaN, and fails clearly."""

from dataclasses import replace

import pytest
import torch
from torch.testing import assert_close

from difflab.cli import main as cli_main
from difflab.core.cond import NullCond
from difflab.data.images import load_images
from difflab.diffusion.schedules import make_schedule
from difflab.nets.unet import UNet, UNetConfig
from difflab.runtime.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from difflab.train.loop import TrainConfig, TrainingDiverged, train

TINY = UNetConfig(
    in_channels=1,
    image_size=8,
    channels=16,
    channel_mult=(1, 2),
    num_res_blocks=1,
    dropout=0.1,
)
CFG = TrainConfig(
    steps=40,
    batch_size=32,
    lr=2e-3,
    warmup=5,
    checkpoint_every=10,
    log_every=5,
    ema_decay=0.9,
)


@pytest.fixture(scope="module")
def digits():
    return load_images("digits").images


def _net():
    return UNet(TINY)  # deterministic given the caller's seed


def test_tiny_model_lowers_its_loss(digits):
    torch.manual_seed(0)
    res = train(
        _net(),
        digits,
        make_schedule("linear", 1000),
        TrainConfig(steps=120, batch_size=64, lr=3e-3, warmup=5, log_every=10),
        progress=False,
    )
    first, last = sum(res.losses[:2]) / 2, sum(res.losses[-3:]) / 3
    assert res.step == 120 and len(res.losses) == 12
    assert last < 0.6 * first, res.losses


def test_interrupted_and_resumed_run_ends_with_the_same_weights(digits, tmp_path):
    s = make_schedule("linear", 1000)
    torch.manual_seed(1)
    ref = train(_net(), digits, s, CFG, checkpoint=tmp_path / "a.pt", progress=False)

    def interrupt(step, loss):
        if step == 25:
            raise KeyboardInterrupt

    torch.manual_seed(1)
    with pytest.raises(KeyboardInterrupt):
        train(
            _net(),
            digits,
            s,
            CFG,
            checkpoint=tmp_path / "b.pt",
            progress=False,
            callback=interrupt,
        )
    state = load_checkpoint(tmp_path / "b.pt")
    assert state["step"] == 25 and not state["done"]
    torch.manual_seed(123)  # a fresh process: different global RNG and initial weights
    resumed = train(
        _net(), digits, s, CFG, checkpoint=tmp_path / "b.pt", progress=False
    )
    assert resumed.step == 40
    for a, b in zip(
        ref.net.state_dict().values(), resumed.net.state_dict().values(), strict=True
    ):
        assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(
        ref.ema.state_dict().values(), resumed.ema.state_dict().values(), strict=True
    ):
        assert_close(a, b, rtol=0, atol=0)
    assert ref.losses == pytest.approx(resumed.losses, rel=1e-6)
    assert load_checkpoint(tmp_path / "b.pt")["done"]


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(digits, tmp_path):
    bad = digits.clone()
    cfg = TrainConfig(
        steps=40, batch_size=16, checkpoint_every=10, log_every=5, warmup=1
    )
    calls = []

    def poison(step, loss):
        calls.append(step)
        if step == 20:
            bad.fill_(float("nan"))  # the data turns to NaN mid-run

    torch.manual_seed(0)
    net = _net()
    # train() copies images to the device; on the CPU it is the same tensor.
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        train(
            net,
            bad,
            make_schedule("linear", 100),
            cfg,
            checkpoint=tmp_path / "c.pt",
            progress=False,
            callback=poison,
        )
    state = load_checkpoint(tmp_path / "c.pt")
    assert state["step"] == 20
    assert all(torch.isfinite(v).all() for v in state["net"].values())


def test_truncated_and_foreign_checkpoints_fail_clearly(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint({"net": {"w": torch.ones(1000)}, "done": True}, good)
    data = good.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint.*delete"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"weights": torch.ones(3)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a difflab checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")

    class Evil:  # a pickle that would run code is refused by weights_only
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": "difflab-checkpoint-v1", "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="not a readable checkpoint") as info:
        load_checkpoint(tmp_path / "evil.pt")
    said = str(info.value)  # one short line, the fix once, none of torch's advice
    assert "Python objects besides tensors" in said and "Weights only" not in said
    assert said.count("delete ") == 1 and "\n" not in said and len(said) < 300
    with pytest.raises(CheckpointError, match="No checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_of_another_config_is_refused(digits, tmp_path):
    s = make_schedule("linear", 100)
    cfg = TrainConfig(steps=5, batch_size=8, checkpoint_every=5, log_every=5)
    train(_net(), digits, s, cfg, checkpoint=tmp_path / "d.pt", progress=False)
    with pytest.raises(CheckpointError, match="another configuration"):
        train(
            _net(),
            digits,
            s,
            TrainConfig(steps=6, batch_size=8),
            checkpoint=tmp_path / "d.pt",
            progress=False,
        )


def test_condition_dropout_replaces_every_label_when_p_is_one(digits):
    """With cond_drop = 1 every row gets the null label, so the labels cannot matter.

    Both runs draw the same batches, coin flips, t and eps from the same seed, so
    the weights agree bit for bit; with cond_drop = 0 the labels do reach the net.
    """
    cfg = TrainConfig(
        steps=6,
        batch_size=16,
        log_every=3,
        warmup=1,
        cond_drop=1.0,
        null_cond=NullCond((("y", 10),)),
    )
    s = make_schedule("linear", 100)
    n = len(digits)
    labels = torch.arange(n) % 10
    runs = {}
    for name, c, y in [("a", cfg, labels), ("b", cfg, (labels + 3) % 10)]:
        torch.manual_seed(0)
        runs[name] = train(_cond_net(), digits, s, c, cond={"y": y}, progress=False)
    for a, b in zip(
        runs["a"].net.parameters(), runs["b"].net.parameters(), strict=True
    ):
        assert_close(a, b, rtol=0, atol=0)
    cfg0 = replace(cfg, cond_drop=0.0)
    torch.manual_seed(0)
    kept = train(_cond_net(), digits, s, cfg0, cond={"y": labels}, progress=False)
    torch.manual_seed(0)
    other = train(
        _cond_net(), digits, s, cfg0, cond={"y": (labels + 3) % 10}, progress=False
    )
    emb = kept.net.class_emb.weight, other.net.class_emb.weight
    assert not torch.equal(*emb)
    with pytest.raises(ValueError, match="null_cond"):
        train(_cond_net(), digits, s, replace(cfg, null_cond=None), progress=False)


def _cond_net():
    return UNet(replace(TINY, num_classes=10))


def test_cli_unknown_recipe_lists_the_known_ones(capsys):
    assert cli_main(["train", "no-such-recipe"]) == 2
    err = capsys.readouterr().err
    assert "Unknown recipe 'no-such-recipe'" in err and "ddpm" in err


def _ddp_worker(rank, world, port, out):
    import os

    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    torch.manual_seed(0)  # the same initial weights on both ranks, as DDP expects
    cfg = TrainConfig(steps=4, batch_size=16, log_every=2, checkpoint_every=2)
    images = load_images("digits").images[:64]
    res = train(
        _net(),
        images,
        make_schedule("linear", 100),
        cfg,
        checkpoint=out / "ddp.pt",
        progress=False,
    )
    torch.save(res.net.state_dict(), out / f"rank{rank}.pt")

    def stop(step, loss):  # at step 4: the step-2 checkpoint is kept
        if step == 4:
            raise KeyboardInterrupt

    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        train(
            _net(),
            images,
            make_schedule("linear", 100),
            cfg,
            checkpoint=out / "cut.pt",
            progress=False,
            callback=stop,
        )
    torch.distributed.barrier()
    step = load_checkpoint(out / "cut.pt")["step"]
    torch.manual_seed(7 + rank)  # another start: the weights come from the file
    again = train(
        _net(),
        images,
        make_schedule("linear", 100),
        cfg,
        checkpoint=out / "cut.pt",
        progress=False,
    )
    same = all(
        torch.equal(a, b)
        for m, n in [(res.net, again.net), (res.ema, again.ema)]
        for a, b in zip(m.state_dict().values(), n.state_dict().values(), strict=True)
    )
    torch.save({"step": step, "same": same}, out / f"resumed{rank}.pt")
    torch.distributed.destroy_process_group()


def test_ddp_ranks_stay_in_step(tmp_path):
    """Under DDP (gloo, 2 CPU processes) the averaged gradients keep both ranks'
    weights identical, though each rank draws its own batches; rank 0 checkpoints.

    The checkpoint keeps both processes' random states, so a run interrupted at
    step 4 resumes from its step-2 checkpoint and ends, on every process, with
    the uninterrupted run's weights (rank 1 does not take rank 0's batches).
    """
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, tmp_path), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for k in a:
        assert_close(a[k], b[k], rtol=0, atol=0)
    state = load_checkpoint(tmp_path / "ddp.pt")
    assert state["step"] == 4
    assert state["world"] == 2 and not torch.equal(*(r["gen"] for r in state["rngs"]))
    for r in (0, 1):
        assert torch.load(tmp_path / f"resumed{r}.pt") == {"step": 2, "same": True}


@pytest.mark.parametrize("steps, says", [(8, True), (3, False)])
def test_the_loop_says_what_it_trains_and_how_long(digits, capsys, steps, says):
    """After its first three steps a run longer than that says on stderr (terminal
    or not) what it trains, its steps, the rate measured and the time left."""
    s = make_schedule("linear", 100)
    cfg = TrainConfig(
        steps=steps, batch_size=8, log_every=steps, checkpoint_every=steps
    )
    meta = {"recipe": "Recipe(name='tiny-demo', profile='quick')"}
    train(_net(), digits, s, cfg, meta=meta, progress=False)
    err = capsys.readouterr().err
    line = f"training tiny-demo (Recipe): {steps:,} steps at about"
    assert (line in err) == says, err
    if says:
        assert "s a step here" in err and "to go" in err and err.count("\n") == 1


def test_a_time_budgeted_run_announces_its_budget_not_its_step_cap(digits, capsys):
    """Under time_budget (bench laptop trains with a cap of 10**9 steps) the line
    names the budget and the steps it buys at the measured rate, not the cap's hours;
    and the run stops at the first log after the budget is spent."""
    s = make_schedule("linear", 100)
    cfg = TrainConfig(steps=10**9, batch_size=8, log_every=4, checkpoint_every=10**9)
    meta = {"recipe": "Recipe(name='tiny-demo', profile='quick')"}
    res = train(_net(), digits, s, cfg, meta=meta, progress=False, time_budget=0.5)
    err = capsys.readouterr().err
    assert "training tiny-demo (Recipe) for 0.5 s (a time budget): about" in err, err
    assert "1,000,000,000" not in err and "to go" not in err
    assert res.seconds >= 0.5 and res.step % 4 == 0 and res.step < 10**9


def test_the_full_profile_on_a_cpu_stops_after_its_warm_up_unless_allowed(
    digits, capsys, monkeypatch, tmp_path
):
    """Whatever trains it (a note, sample audio, sample sd): the full profile on a
    CPU is refused with the measured estimate, unless DIFFLAB_ALLOW_SLOW=1."""
    from difflab.runtime.settings import SettingError

    s = make_schedule("linear", 100)
    cfg = TrainConfig(steps=8, batch_size=8, log_every=8, checkpoint_every=8)
    meta = {"recipe": "AudioRecipe(name='spec', profile='full')"}
    monkeypatch.delenv("DIFFLAB_ALLOW_SLOW", raising=False)
    ckpt = tmp_path / "run.pt"
    with pytest.raises(SettingError, match="DIFFLAB_ALLOW_SLOW=1") as info:
        train(_net(), digits, s, cfg, meta=meta, checkpoint=ckpt, progress=False)
    assert "training spec (AudioRecipe): 8 steps at about" in str(info.value)
    assert not ckpt.exists()  # nothing of the refused run is kept
    monkeypatch.setenv("DIFFLAB_ALLOW_SLOW", "1")
    res = train(_net(), digits, s, cfg, meta=meta, progress=False)
    assert res.step == 8
    quick = {"recipe": "AudioRecipe(name='spec', profile='quick')"}
    monkeypatch.delenv("DIFFLAB_ALLOW_SLOW")
    assert train(_net(), digits, s, cfg, meta=quick, progress=False).step == 8
