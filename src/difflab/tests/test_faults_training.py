"""Faults injected into training: interruptions, bad settings, bad checkpoints, DDP.

What must hold (issue 10): the same recipe gives the same bits; Ctrl-C or SIGTERM
at any moment loses nothing and changes nothing (a resumed run ends with exactly
the weights of an uninterrupted one); a failed run never leaves a finished entry
in the cache; every unusable checkpoint gets one line naming the file and the fix;
a two-process run trains, and is cached apart from a one-process run.
"""

import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from difflab.data.images import load_images
from difflab.diffusion.schedules import make_schedule
from difflab.nets.unet import UNet, UNetConfig
from difflab.pipelines import recipes
from difflab.runtime.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from difflab.train import loop
from difflab.train.loop import TrainConfig, train

TINY = UNetConfig(
    in_channels=1,
    image_size=8,
    channels=8,
    channel_mult=(1, 2),
    num_res_blocks=1,
    dropout=0.1,  # so that the global random state (dropout masks) matters too
)
CFG = TrainConfig(
    steps=12,
    batch_size=8,
    lr=2e-3,
    warmup=3,
    checkpoint_every=4,
    log_every=5,
    ema_decay=0.9,
)


@pytest.fixture(scope="module")
def digits():
    return load_images("digits").images[:256]


@pytest.fixture
def cache(monkeypatch, tmp_path):
    """A fresh cache folder and a plain one-process environment."""
    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path / "cache"))
    for var in ("DIFFLAB_DATASET", "WORLD_SIZE", "RANK"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "cache"


def _net(seed=0):
    torch.manual_seed(seed)
    return UNet(TINY)


def _quick(steps=2, seed=0, batch_size=128):
    """The quick ddpm recipe cut to a few steps (and a smaller batch, if asked)."""
    r = recipes.get_recipe("ddpm", "quick")
    cut = replace(r.train, steps=steps, seed=seed, log_every=2, checkpoint_every=2)
    cut = replace(cut, batch_size=batch_size)
    return replace(r, dataset="digits", T=100, train=cut)


def _equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


# --- 1. the same recipe, the same bits ------------------------------------------


def test_two_clean_runs_of_a_recipe_give_the_same_bits(cache, monkeypatch, tmp_path):
    cpu = torch.device("cpu")
    runs = []
    for i, seed in enumerate([0, 0, 1]):
        monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path / f"cache{i}"))
        torch.manual_seed(100 + i)  # the global state differs from run to run
        before = torch.get_rng_state()
        runs.append(
            recipes.load_or_train(_quick(seed=seed), device=cpu, progress=False)
        )
        assert not runs[-1].from_cache
        assert torch.equal(torch.get_rng_state(), before)  # and is left untouched
    assert _equal(runs[0].net, runs[1].net)  # the EMA weights, bit for bit
    assert not _equal(runs[0].net, runs[2].net)  # another seed, other weights


# --- 2. interrupted at any moment, resumed to the same bits -------------------------


def _uninterrupted(digits):
    return train(_net(), digits, make_schedule("linear", 100), CFG, progress=False)


@pytest.mark.parametrize("how", ["raise", "SIGINT", "SIGTERM", "SIGTERM-in-update"])
def test_interrupt_at_any_step_then_resume_gives_the_same_bits(
    digits, tmp_path, monkeypatch, how
):
    """Stop three times (before the first log, right after one, between
    checkpoints), each time from inside a step, and resume in a "new process" (a
    fresh net and another global seed): every weight, EMA weight and logged loss
    equals the uninterrupted run's. An interrupt in the first half of a step
    (forward) saves the step before; one in the second half (the EMA update)
    lets the step finish and saves it.
    """
    ref = _uninterrupted(digits)
    ckpt, schedule = tmp_path / "run.pt", make_schedule("linear", 100)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    late = how == "SIGTERM-in-update"

    def stop():
        if how == "raise":
            raise KeyboardInterrupt
        os.kill(os.getpid(), getattr(signal, how.split("-")[0]))

    saved = []
    # the first run starts from the reference weights; later ones load a checkpoint
    for k, seed in [(3, 0), (4, 2), (2, 3)]:  # interrupted in its k-th step
        calls = []

        def hook(*_, k=k, calls=calls):
            calls.append(1)
            if len(calls) == k:
                stop()

        net = _net(seed)
        if late:
            update = loop.update_ema

            def patched(state, decay, hook=hook, update=update):
                update(state, decay)
                hook()

            monkeypatch.setattr(loop, "update_ema", patched)
        else:
            net.register_forward_hook(hook)
        with pytest.raises(KeyboardInterrupt):
            train(net, digits, schedule, CFG, checkpoint=ckpt, progress=False)
        monkeypatch.undo()
        state = load_checkpoint(ckpt)
        assert not state["done"]
        saved.append(state["step"])
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == (
            handlers
        )
    assert saved == _expected(late)
    res = train(_net(9), digits, schedule, CFG, checkpoint=ckpt, progress=False)
    assert res.step == CFG.steps and load_checkpoint(ckpt)["done"]
    assert _equal(ref.net, res.net) and _equal(ref.ema, res.ema)
    assert ref.losses == res.losses


def _expected(late):
    """The step saved by each interrupted run: a run stopped in its k-th step
    has completed k - 1 steps (k if the step was let finish)."""
    done, out = 0, []
    for k in (3, 4, 2):
        done += k if late else k - 1
        out.append(done)
    return out


# --- 3. nothing bad is cached --------------------------------------------------------


@pytest.mark.parametrize(
    "field, value, says",
    [
        ("steps", 0, "TrainConfig.steps must be a positive whole number, not 0"),
        ("steps", -5, "TrainConfig.steps must be a positive whole number, not -5"),
        ("steps", 2.5, "not 2.5"),
        ("batch_size", 0, "TrainConfig.batch_size must be a positive"),
        ("lr", float("nan"), "TrainConfig.lr must be a finite number > 0, not nan"),
        ("ema_decay", 1.5, "TrainConfig.ema_decay must be a number in [0, 1]"),
        ("prediction", "score", "TrainConfig.prediction must be 'eps', 'x0' or 'v'"),
    ],
)
def test_train_config_refuses_what_no_run_can_use(field, value, says):
    with pytest.raises(ValueError) as err:
        replace(CFG, **{field: value})
    assert says in str(err.value) and "\n" not in str(err.value)


def test_zero_steps_are_refused_before_anything_is_written(cache):
    for steps in (0, -1):
        with pytest.raises(ValueError, match="steps must be a positive whole"):
            recipes.load_or_train(_quick(), steps=steps, progress=False)
    assert not cache.exists() or not list(cache.rglob("*.pt"))


def test_a_shorter_budget_keeps_the_recipes_ema_residue(cache):
    """``steps`` below the recipe's budget scales the EMA decay so that the share of
    the initial weights left in the average, decay**steps, is the recipe's."""
    full = recipes.get_recipe("ddpm", "quick").train  # 1000 steps, decay 0.995
    short = recipes.with_steps(full, 200)
    assert short.steps == 200 and abs(short.ema_decay - 0.995**5) < 1e-15
    assert abs(short.ema_decay**200 - full.ema_decay**full.steps) < 1e-15
    assert full.ema_decay**200 > 50 * short.ema_decay**200  # unscaled: 0.37 vs 0.007
    assert recipes.with_steps(full, 2000) == replace(full, steps=2000)  # longer: as is
    no_ema = replace(full, ema_decay=0.0)
    assert recipes.with_steps(no_ema, 10).ema_decay == 0.0
    # load_or_train applies it (the trained model's recipe says so)
    base = _quick(steps=8)
    t = recipes.load_or_train(base, steps=4, device=torch.device("cpu"), progress=False)
    d = t.recipe.train.ema_decay
    assert t.recipe.train.steps == 4 and abs(d**4 - base.train.ema_decay**8) < 1e-15


def test_a_failed_run_never_caches_a_finished_entry(cache, monkeypatch):
    """Training that fails (an error in the network at step 4, after the
    checkpoint of step 2) leaves only an unfinished checkpoint, from which the
    next call resumes, ending with the weights of a run that never failed."""
    recipe, cpu = _quick(steps=6, batch_size=16), torch.device("cpu")
    init = recipes.init_net

    def failing(r, device="cpu"):
        net = init(r, device)
        calls = []

        def hook(*_):
            calls.append(1)
            if len(calls) == 4:
                raise RuntimeError("a fault in the network")

        net.register_forward_hook(hook)
        return net

    monkeypatch.setattr(recipes, "init_net", failing)
    with pytest.raises(RuntimeError, match="a fault in the network"):
        recipes.load_or_train(recipe, device=cpu, progress=False)
    (pt,) = cache.rglob("*.pt")
    state = load_checkpoint(pt)
    assert state["step"] == 2 and not state["done"]
    monkeypatch.setattr(recipes, "init_net", init)
    resumed = recipes.load_or_train(recipe, device=cpu, progress=False)
    assert not resumed.from_cache and load_checkpoint(pt)["done"]
    monkeypatch.setenv("DIFFLAB_CACHE", str(cache.parent / "clean"))
    clean = recipes.load_or_train(recipe, device=cpu, progress=False)
    assert _equal(resumed.net, clean.net)


# --- checkpoints that cannot be used: one line, the file, the fix --------------------


def _bad_checkpoint(kind, path, digits):
    if kind == "truncated":
        save_checkpoint({"net": {"w": torch.ones(1000)}}, path)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "folder":
        path.mkdir()
    elif kind == "foreign":
        torch.save({"weights": torch.ones(3)}, path)
    elif kind == "lacking keys":  # the right format, another content
        save_checkpoint(
            {"net": {"w": torch.ones(3)}, "train_config": asdict(CFG)}, path
        )
    elif kind == "another network":  # all the keys, of other shapes
        other = UNet(replace(TINY, channels=16))
        train(
            other,
            digits,
            make_schedule("linear", 100),
            replace(CFG, steps=1),
            checkpoint=path,
            progress=False,
        )
        state = load_checkpoint(path)
        save_checkpoint({**state, "train_config": asdict(CFG)}, path)


KINDS = ["truncated", "empty", "folder", "foreign", "lacking keys", "another network"]


def _one_clear_line(err, path):
    text = str(err.value)
    assert "\n" not in text and str(path) in text and "delete" in text, text


@pytest.mark.parametrize("kind", KINDS)
def test_an_unusable_checkpoint_is_named_with_its_fix(kind, digits, tmp_path):
    path = tmp_path / "bad.pt"
    _bad_checkpoint(kind, path, digits)
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(CheckpointError) as err:
        train(
            _net(),
            digits,
            make_schedule("linear", 100),
            CFG,
            checkpoint=path,
            progress=False,
        )
    _one_clear_line(err, path)
    assert (path.read_bytes() if path.is_file() else None) == before  # kept as is
    assert path.is_dir() == (kind == "folder")


@pytest.mark.parametrize("kind", ["empty", "folder", "lacking keys", "another network"])
def test_an_unusable_cache_entry_is_named_with_its_fix(kind, digits, cache):
    recipe = _quick(steps=1)
    path = recipes.entry(
        "ddpm",
        recipes.with_world_size(recipes.resolve_data(recipe)[0], 1),
        deps=recipes.DEPS,
    ).path
    path.parent.mkdir(parents=True)
    if kind == "another network":  # a finished entry of another shape
        save_checkpoint(
            {
                "ema": UNet(TINY).state_dict(),
                "losses": [1.0],
                "seconds": 1.0,
                "done": True,
            },
            path,
        )
    elif kind == "lacking keys":
        save_checkpoint({"ema": {}, "done": True}, path)
    else:
        _bad_checkpoint(kind, path, digits)
    with pytest.raises(CheckpointError) as err:
        recipes.load_or_train(recipe, device=torch.device("cpu"), progress=False)
    _one_clear_line(err, path)


# --- 9. two processes under torchrun ------------------------------------------------

SCRIPT = """
    import sys
    from dataclasses import replace

    import torch
    import torch.distributed as dist

    from difflab.pipelines import recipes

    r = recipes.get_recipe("ddpm", "quick")
    cut = replace(r.train, steps=4, batch_size=16, log_every=2, checkpoint_every=2)
    t = recipes.load_or_train(
        replace(r, dataset="digits", T=100, train=cut),
        device=torch.device("cpu"),
        progress=False,
    )
    print("RESULT", dist.get_rank(), t.from_cache, t.recipe.world_size,
          t.recipe.train.batch_size)
    dist.destroy_process_group()
"""


@pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with gloo is not available",
)
def test_torchrun_two_processes_train_a_recipe_cached_apart(cache, tmp_path):
    script = tmp_path / "two.py"
    script.write_text(textwrap.dedent(SCRIPT))
    src = str(Path(recipes.__file__).resolve().parents[2])
    env = {
        **os.environ,
        "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "OMP_NUM_THREADS": "1",
    }
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    argv += ["--nproc_per_node", "2", str(script)]
    run = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=240)
    if run.returncode and "Address family not supported" in run.stderr:
        pytest.skip("no local networking for the gloo rendezvous")
    assert run.returncode == 0, run.stderr[-3000:]
    lines = sorted(x for x in run.stdout.splitlines() if x.startswith("RESULT"))
    assert lines == ["RESULT 0 False 2 16", "RESULT 1 False 2 16"], run.stdout
    (pt,) = cache.rglob("*.pt")  # rank 0 alone wrote, and finished
    assert load_checkpoint(pt)["done"] and not list(cache.rglob("*.tmp"))
    record = pt.with_suffix(".json").read_text()
    assert "world_size=2" in record and "batch_size=16" in record

    recipe, cpu = _quick(steps=4), torch.device("cpu")
    recipe = replace(recipe, train=replace(recipe.train, batch_size=16))
    os.environ["WORLD_SIZE"] = "2"  # the same recipe seen from a 2-process run
    try:
        two = recipes.load_or_train(recipe, device=cpu, progress=False)
    finally:
        del os.environ["WORLD_SIZE"]
    assert two.from_cache and two.recipe.world_size == 2
    one = recipes.load_or_train(recipe, device=cpu, progress=False)
    assert not one.from_cache and one.recipe.world_size == 1
    assert len(list(cache.rglob("*.pt"))) == 2  # another key for one process
