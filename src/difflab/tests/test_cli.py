"""The command line: subcommands with their own flags, one-line errors, the cache."""

from dataclasses import replace

import numpy as np
import pytest

from difflab.cli import main
from difflab.train import recipes


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """A recipe ``tiny``: the quick ddpm recipe cut to 20 steps, in a fresh cache."""
    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DIFFLAB_DATASET", raising=False)

    def make(profile):
        r = recipes.get_recipe("ddpm", "quick")
        cut = replace(r.train, steps=20, log_every=10, checkpoint_every=10)
        return replace(r, name="tiny", train=cut, T=100)

    monkeypatch.setitem(recipes.RECIPES, "tiny", make)
    return tmp_path


def test_help_lists_the_subcommands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("train", "sample", "evaluate", "bench", "cache"):
        assert f"    {command} " in out


@pytest.mark.parametrize(
    "argv, says",
    [
        (["train", "nope"], "Unknown recipe 'nope'; known recipes: ddpm"),
        (["sample", "ddpm", "--n", "0"], "'0' is not a positive int"),
        (["evaluate", "ddpm", "--steps", "x"], "'x' is not a positive int"),
        (["train", "ddpm", "--png-dir", "d"], "unrecognized arguments: --png-dir"),
        (["bench", "speed"], "invalid choice: 'speed'"),
        (["cache", "clear"], "invalid choice: 'clear'"),
        (["bench", "quality", "--budget", "-1"], "'-1' is not a positive float"),
        ([], "required: COMMAND"),
    ],
)
def test_bad_arguments_give_one_line_and_status_2(capsys, argv, says):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1, err


def test_train_then_sample_and_the_cache(tiny, capsys):
    assert main(["train", "tiny", "--no-progress"]) == 0
    assert "tiny (quick, digits): trained; 20 steps" in capsys.readouterr().out
    assert main(["train", "tiny", "--no-progress"]) == 0
    assert "found in the cache" in capsys.readouterr().out

    out, npz, pngs = tiny / "s.png", tiny / "s.npz", tiny / "pngs"
    argv = ["sample", "tiny", "--n", "6", "--steps", "4", "--no-progress"]
    argv += ["--out", str(out), "--npz", str(npz), "--png-dir", str(pngs)]
    assert main(argv) == 0
    assert "6 samples (DDIM 4 steps, eta 0.0" in capsys.readouterr().out
    assert out.is_file() and len(list(pngs.glob("*.png"))) == 6
    images = np.load(npz)["images"]
    assert images.shape == (6, 8, 8, 1) and images.dtype == np.uint8

    assert main(["cache", "list"]) == 0
    listed = capsys.readouterr().out
    assert "ddpm" in listed and "reachable" in listed and "1 entries" in listed
    assert "finished" in listed and "unfinished" not in listed
    assert main(["cache", "prune", "--dry-run"]) == 0
    assert "would remove 0 stale entries" in capsys.readouterr().out
    assert main(["cache", "prune", "--all"]) == 0
    assert "removed 1 entries" in capsys.readouterr().out
    assert main(["cache", "list"]) == 0 and "0 entries" in capsys.readouterr().out


def test_missing_dataset_is_one_clear_line(tiny, capsys, monkeypatch):
    monkeypatch.setenv("DIFFLAB_DATASET", "cifar10")
    monkeypatch.setenv("DIFFLAB_DATA", str(tiny / "nowhere"))
    assert main(["train", "tiny", "--no-progress"]) == 1
    assert capsys.readouterr().err.startswith("error: ")
