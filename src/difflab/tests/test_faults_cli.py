"""Fault injection for the command line: every class of bad input is one line.

Each case runs ``main(argv)`` in-process (a subprocess importing torch costs seconds)
and checks the promise of the README: exit status 2, one line on stderr naming the
input (flag or variable) and its value, no traceback, and nothing written: no
training, no sampling (the network's forward pass is booby-trapped), no file.
"""

import errno
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from difflab import cli
from difflab.cli import main
from difflab.nets.unet import UNet
from difflab.pipelines import recipes
from difflab.runtime import cache


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def _clean(tmp_path, monkeypatch) -> Path:
    """Work in ``tmp_path`` with its own cache, the quick profile, no other setting."""
    for name in ("DEVICE", "DATASET", "DATA"):
        monkeypatch.delenv(f"DIFFLAB_{name}", raising=False)
    monkeypatch.setenv("DIFFLAB_PROFILE", "quick")  # the digits, on any machine
    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A clean working folder with a file and a folder in it; any network call
    fails the test (bad input must be refused before training or sampling)."""
    _clean(tmp_path, monkeypatch)
    (tmp_path / "a-file").write_text("not a folder\n")
    (tmp_path / "a-folder.png").mkdir()

    def no_work(*args, **kwargs):
        raise AssertionError("bad input reached the network")

    monkeypatch.setattr(UNet, "forward", no_work)
    return tmp_path


def _refused(env, capsys, argv, says):
    before = _files(env)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for word in says:
        assert word in err, err
    assert _files(env) == before  # nothing written, nothing half-written
    return err


COUNTS = [
    (["sample", "ddpm", "--n", "0"], ["--n", "'0'", "1 to 100,000"]),
    (["sample", "ddpm", "--n", "-3"], ["--n", "'-3'"]),
    (["sample", "ddpm", "--n", "1000000"], ["--n", "too large", "1 to 100,000"]),
    (["sample", "ddpm", "--steps", "0"], ["--steps", "'0'", "allowed"]),
    (["evaluate", "ddpm", "--train-steps", "-5"], ["--train-steps", "'-5'"]),
    (["train", "ddpm", "--steps", "0"], ["--steps", "'0'", "allowed"]),
    (["train", "ddpm", "--steps", "1e3"], ["--steps", "'1e3'"]),
    (["bench", "quality", "--n", "0"], ["--n", "'0'"]),
    (["sample", "ddpm", "--seed", "-1"], ["--seed", "'-1'", "2**63"]),
]
NUMBERS = [
    (["sample", "ddpm", "--eta", "nan"], ["--eta", "'nan'", "[0, 1]"]),
    (["sample", "ddpm", "--eta", "1.5"], ["--eta", "'1.5'", "[0, 1]"]),
    (["evaluate", "ddpm", "--eta=-inf"], ["--eta", "'-inf'"]),
    (["sample", "ddpm-cond", "--guidance", "nan"], ["--guidance", "'nan'"]),
    (["bench", "quality", "--budget", "inf"], ["--budget", "'inf'"]),
    (["bench", "quality", "--budget", "nan"], ["--budget", "'nan'"]),
]
# Checked against the recipe, still before training: T = 1000, the quick ddpm
# is unconditional, and the digits' classifier has 64 features (65 samples).
WITH_RECIPE = [
    (["sample", "ddpm", "--steps", "2000"], ["--steps", "2000", "T = 1000"]),
    (["sample", "ddpm", "--guidance", "3"], ["--guidance", "ddpm-cond"]),
    (["evaluate", "ddpm", "--n", "10"], ["--n", "10", "Frechet", "65"]),
    (["bench", "quality", "--n", "64"], ["--n", "64", "65"]),
]
PATHS = [
    (["sample", "ddpm", "--out", "x.jpg"], ["--out", "'x.jpg'", ".png"]),
    (["sample", "ddpm", "--npz", "foo"], ["--npz", "'foo'", ".npz"]),
    (["sample", "ddpm", "--out", "a-file/x.png"], ["--out", "'a-file'", "a file"]),
    (["sample", "ddpm", "--out", "a-folder.png"], ["--out", "a folder"]),
    (["sample", "ddpm", "--png-dir", "a-file"], ["--png-dir", "'a-file'", "a file"]),
    (["sample", "ddpm", "--npz", "a-file/d/x.npz"], ["--npz", "'a-file'"]),
    (["bench", "train", "--out", "report.txt"], ["--out", "'report.txt'", ".json"]),
]


@pytest.mark.parametrize("argv, says", COUNTS + NUMBERS + WITH_RECIPE + PATHS)
def test_bad_flag_is_refused_before_any_work(env, capsys, argv, says):
    _refused(env, capsys, argv, says)


VARIABLES = [
    ("DIFFLAB_DEVICE", "banana", ["'banana'", "cpu, cuda"]),
    ("DIFFLAB_DEVICE", "cuda:99", ["'cuda:99'"]),
    ("DIFFLAB_PROFILE", "fast", ["'fast'", "quick, full"]),
    ("DIFFLAB_DATASET", "imagenet", ["'imagenet'", "digits"]),
    ("DIFFLAB_DATA", "{tmp}/a-file", ["a-file", "is a file"]),
    ("DIFFLAB_DATA", "{tmp}/nonexistent", ["nonexistent", "does not exist"]),
    ("DIFFLAB_DATA", "{tmp}/a-folder.png", ["a-folder.png", "holds none"]),
    ("DIFFLAB_CACHE", "{tmp}/a-file", ["a-file", "is a file"]),
    ("DIFFLAB_CACHE", "{tmp}/a-file/cache", ["a-file", "under the file"]),
]
if not torch.cuda.is_available():
    VARIABLES.append(("DIFFLAB_DEVICE", "cuda", ["'cuda'", "not available"]))
_mps = getattr(torch.backends, "mps", None)
if _mps is None or not _mps.is_available():
    VARIABLES.append(("DIFFLAB_DEVICE", "mps", ["'mps'", "not available"]))


@pytest.mark.parametrize("name, value, says", VARIABLES)
@pytest.mark.parametrize("command", ["train", "sample", "evaluate"])
def test_bad_environment_variable_is_named(
    env, capsys, monkeypatch, command, name, value, says
):
    monkeypatch.setenv(name, value.format(tmp=env))
    _refused(env, capsys, [command, "ddpm", "--no-progress"], [name, *says])


def test_cache_commands_check_only_the_cache_folder(env, capsys, monkeypatch):
    monkeypatch.setenv("DIFFLAB_DEVICE", "banana")  # not read by `cache`
    monkeypatch.setattr(cache, "probe_write", _read_only)  # a read-only cache
    assert main(["cache", "list"]) == 0  # reading needs no write access
    assert "0 entries" in capsys.readouterr().out
    _refused(env, capsys, ["cache", "list", "--all"], ["--all", "prune"])
    monkeypatch.setenv("DIFFLAB_CACHE", str(env / "a-file"))
    _refused(env, capsys, ["cache", "list"], ["DIFFLAB_CACHE", "a-file"])


def _read_only(*args, **kwargs):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS))


def _full(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_unwritable_output_folder_is_refused(env, capsys, monkeypatch):
    monkeypatch.setattr(cache, "probe_write", _read_only)
    _refused(env, capsys, ["sample", "ddpm", "--out", "x.png"], ["--out", "Read-only"])


@pytest.mark.parametrize(
    "fault, says",
    [
        ((cache, "probe_write", _read_only), "Read-only file system"),
        ((os, "fsync", _full), "No space left on device"),  # what a full disk says
    ],
)
def test_unwritable_cache_is_refused_before_training(
    env, capsys, monkeypatch, fault, says
):
    """The probe runs in ``cached``, after the recipe and before the first step."""
    monkeypatch.setattr(*fault)
    err = _refused(env, capsys, ["train", "ddpm", "--no-progress"], [says])
    assert "DIFFLAB_CACHE=" in err and str(env / "cache") in err
    assert not list((env / "cache").rglob("*.tmp"))  # the probe file is gone


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    """One cache for the tests below: the first trains ``tiny``, the next finds it."""
    return tmp_path_factory.mktemp("tiny-cache")


@pytest.fixture
def tiny(tmp_path, monkeypatch, tiny_cache):
    """The quick ddpm recipe cut to 10 steps, in a clean folder."""
    _clean(tmp_path, monkeypatch)
    monkeypatch.setenv("DIFFLAB_CACHE", str(tiny_cache))

    def make(profile):
        r = recipes.get_recipe("ddpm", "quick")
        cut = replace(r.train, steps=10, log_every=5, checkpoint_every=5)
        return replace(r, name="tiny", train=cut, T=50)

    monkeypatch.setitem(recipes.RECIPES, "tiny", make)
    return tmp_path


def test_a_failed_write_leaves_no_half_file(tiny, capsys, monkeypatch):
    """A disk filling up while the arrays are written: the grid is whole, the
    .npz absent, no temporary file left; one line and status 1 (not bad input)."""

    def fill_up(f, **arrays):
        f.write(b"PK\x03\x04 half an archive")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "savez_compressed", fill_up)
    argv = ["sample", "tiny", "--n", "4", "--steps", "3", "--no-progress"]
    assert main([*argv, "--out", "s.png", "--npz", "s.npz"]) == 1
    err = _without_training_line(capsys.readouterr().err)
    assert err.startswith("error: ") and "No space left" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert (tiny / "s.png").stat().st_size > 0 and not (tiny / "s.npz").exists()
    assert not [p for p in _files(tiny) if p.name.endswith(".tmp")]


def test_npz_is_written_where_it_says(tiny, capsys):
    argv = ["sample", "tiny", "--n", "3", "--steps", "2", "--no-progress"]
    assert main([*argv, "--out", "g.png", "--npz", "sub/arrays.NPZ"]) == 0
    out = capsys.readouterr().out
    assert "-> sub/arrays.NPZ" in out and (tiny / "sub" / "arrays.NPZ").is_file()
    assert np.load(tiny / "sub" / "arrays.NPZ")["images"].shape == (3, 8, 8, 1)


def test_the_real_entry_point_prints_no_traceback(tmp_path):
    """Once through ``python -m difflab`` itself (3 s: the import of torch)."""
    src = Path(cli.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(src), "DIFFLAB_CACHE": str(tmp_path)}
    env["DIFFLAB_DEVICE"] = "banana"
    run = subprocess.run(
        [sys.executable, "-m", "difflab", "sample", "ddpm", "--eta", "0.5"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines() == [
        "python -m difflab sample ddpm: error: DIFFLAB_DEVICE='banana' is not a device "
        "name; use cpu, cuda, cuda:N or mps, or unset it to choose automatically."
    ]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", ["CPU", " Cpu ", "cpu"])
def test_device_name_ignores_case_like_the_profile(monkeypatch, value):
    from difflab.runtime.device import default_device

    monkeypatch.setenv("DIFFLAB_DEVICE", value)
    assert default_device() == torch.device("cpu")


@pytest.mark.parametrize("value", ["QUICK", " Quick ", "quick"])
def test_profile_name_ignores_case(monkeypatch, value):
    from difflab.runtime.profiles import current_profile

    monkeypatch.setenv("DIFFLAB_PROFILE", value)
    assert current_profile() == "quick"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_sample_audio_training_on_first_use_stops_with_one_line(tmp_path, sig):
    """Ctrl-C or SIGTERM while ``sample audio`` trains its model on first use: exit
    status 130 and the same one line as ``train``, no traceback."""
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "DIFFLAB_CACHE": str(tmp_path / "cache"), "TQDM_DISABLE": "1"}
    env.pop("DIFFLAB_DATA", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "difflab",
            "sample",
            "audio",
            "--digit",
            "3",
            "--n",
            "2",
            "--out",
            str(tmp_path / "clips"),
        ],  # fmt: skip
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60  # until it has started training (a checkpoint
    while time.monotonic() < deadline and proc.poll() is None:  # folder appears)
        if list((tmp_path / "cache").glob("*/*.json")):
            break
        time.sleep(0.2)
    time.sleep(2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(getattr(signal, sig))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted: the last checkpoint is kept" in err
    assert "Traceback" not in err, err[-2000:]
    assert not (tmp_path / "clips").exists() or not list((tmp_path / "clips").iterdir())


@pytest.mark.parametrize("fail_at", [1, 2])  # the first checkpoint, or the second
def test_a_disk_that_fills_during_training(tmp_path, capsys, monkeypatch, fail_at):
    """One line naming the folder and the fix, status 74; the last good checkpoint
    intact and loadable, no temporary file, no record without a checkpoint."""
    from difflab.runtime import checkpoint

    _clean(tmp_path, monkeypatch)
    store = tmp_path / "cache"
    monkeypatch.setenv("DIFFLAB_CACHE", str(store))

    def make(profile):
        r = recipes.get_recipe("ddpm", "quick")
        cut = replace(r.train, steps=10, log_every=5, checkpoint_every=5)
        return replace(r, name="fills", train=cut, T=50)

    monkeypatch.setitem(recipes.RECIPES, "fills", make)
    real, calls = torch.save, []

    def save(obj, f, *a, **k):  # what PyTorch's zip writer says on a full disk
        calls.append(1)
        if len(calls) == fail_at:
            f.write(b"PK half")
            raise RuntimeError(
                "[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0; "
                "PytorchStreamWriter failed writing file data/0: file write failed"
            )
        return real(obj, f, *a, **k)

    monkeypatch.setattr(checkpoint.torch, "save", save)
    assert main(["train", "fills", "--no-progress"]) == 74
    err = _without_training_line(capsys.readouterr().err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "No space left" in err and str(store / "ddpm") in err
    assert "free some space" in err and "inline_container" not in err
    assert not list(store.rglob("*.tmp"))
    ckpts, records = list(store.rglob("*.pt")), list(store.rglob("*.json"))
    if fail_at == 1:
        assert "no checkpoint was kept" in err
        assert ckpts == [] and records == []  # `cache list` shows no 0 MB entry
    else:
        assert "is kept" in err and len(ckpts) == 1 and len(records) == 1
        state = checkpoint.load_checkpoint(ckpts[0])
        assert state.get("step") == 5 and not state.get("done")
        assert main(["cache", "list"]) == 0  # shown as what it is
        assert "unfinished at step 5" in capsys.readouterr().out


def _without_training_line(err: str) -> str:
    """stderr without the line that announces a training (what, steps, how long)."""
    return "".join(ln for ln in err.splitlines(True) if not ln.startswith("training "))


@pytest.fixture
def slow_full(tmp_path, monkeypatch):
    """A recipe of the full profile (made small) in an empty cache, on the CPU."""
    _clean(tmp_path, monkeypatch)
    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DIFFLAB_DEVICE", "cpu")
    # "" is "not allowed"; setenv (not delenv) so that the value --yes leaves in
    # os.environ is undone after the test
    monkeypatch.setenv("DIFFLAB_ALLOW_SLOW", "")

    def make(profile):
        r = recipes.get_recipe("ddpm", "quick")
        cut = replace(r.train, steps=6, log_every=3, checkpoint_every=3)
        return replace(r, name="slow", profile="full", train=cut, T=50)

    monkeypatch.setitem(recipes.RECIPES, "slow", make)
    return tmp_path


def test_full_profile_on_a_cpu_is_refused_with_its_estimate(slow_full, capsys):
    """Not a word-less multi-hour job: what, how many steps, how long; exit 2."""
    assert main(["train", "slow", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "training slow (full, digits): 6 steps at about" in err
    assert "s a step on cpu" in err and "--yes" in err and "DIFFLAB_ALLOW_SLOW=1" in err
    assert not list((slow_full / "cache").rglob("*.pt"))  # nothing was trained


@pytest.mark.parametrize("how", ["--yes", "DIFFLAB_ALLOW_SLOW"])
def test_full_profile_on_a_cpu_trains_when_asked_and_says_so(
    slow_full, capsys, monkeypatch, how
):
    argv = ["train", "slow", "--no-progress"]
    if how == "--yes":
        argv.append("--yes")
    else:
        monkeypatch.setenv("DIFFLAB_ALLOW_SLOW", "1")
    assert main(argv) == 0
    err = capsys.readouterr().err  # said on stderr, a terminal or not (here: not)
    assert err.startswith("training slow (full, digits): 6 steps"), err
    assert main(argv) == 0  # in the cache now: nothing to announce
    assert "training slow" not in capsys.readouterr().err


@pytest.mark.parametrize("rank, writes", [("0", True), ("1", False)])
def test_under_torchrun_rank_0_alone_writes_and_reports(
    tiny, capsys, monkeypatch, rank, writes
):
    """Each process samples (or trains); the files and lines come from rank 0 once."""
    x = torch.zeros(4, 1, 8, 8)
    monkeypatch.setattr(cli, "_draw", lambda args: (None, x, None, "stub"))
    monkeypatch.setenv("RANK", rank)
    argv = ["sample", "tiny", "--n", "4", "--no-progress", "--out", "g.png"]
    assert main([*argv, "--npz", "a.npz"]) == 0
    out = capsys.readouterr().out
    assert (tiny / "g.png").exists() == writes and (tiny / "a.npz").exists() == writes
    assert ("-> g.png" in out) == writes
