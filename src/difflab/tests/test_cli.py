"""The command line: subcommands with their own flags, one-line errors, the cache."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from difflab.cli import main
from difflab.diffusion import solvers
from difflab.diffusion.noise import DiscreteNoise
from difflab.notes import project
from difflab.notes.plotting import to_uint8
from difflab.pipelines import recipes


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


@pytest.fixture
def tiny_latent(monkeypatch, tiny, small_latent):
    """A recipe ``tiny-latent``: the MNIST page's quick recipe (conditional, latent,
    v on cosine) cut small (conftest's ``small_latent``), in the fresh cache."""
    named = replace(small_latent, name="tiny-latent")
    monkeypatch.setitem(recipes.RECIPES, "tiny-latent", lambda profile: named)
    return tiny


def _exported(folder, argv, capsys):
    """Run ``sample`` with the project pages' export flags; what it wrote."""
    folder.mkdir()
    assert main([*argv, *project.export_flags(folder)]) == 0
    capsys.readouterr()
    exported, pngs = project.read_back(folder)
    assert len(pngs) == len(exported)  # and each PNG holds its sample's pixels
    assert np.array_equal(
        np.stack([np.asarray(Image.open(p)) for p in pngs]), exported[..., 0]
    )
    return exported


@pytest.mark.parametrize("train_steps", [None, 10])
def test_the_command_line_exports_what_the_api_draws(tiny, capsys, train_steps):
    """The project pages' promise, at a tiny budget: ``train`` finds the model the
    Python API trained (with the CIFAR-10 page's reduced budget, ``--steps``), and
    ``sample`` writes, in the archive and the PNG files, bit for bit the images
    ``Trained.sample`` draws from the same seed; another seed draws others."""
    trained = recipes.load_or_train("tiny", progress=False, steps=train_steps)
    budget = [] if train_steps is None else ["--steps", str(train_steps)]
    assert main(["train", "tiny", "--no-progress", *budget]) == 0
    assert "found in the cache" in capsys.readouterr().out
    model = [] if train_steps is None else ["--train-steps", str(train_steps)]
    argv = ["sample", "tiny", *model, "--n", "6", "--steps", "4", "--seed", "0"]
    exported = _exported(tiny / "export", argv, capsys)
    device = next(trained.net.parameters()).device

    def api(seed):
        g = torch.Generator(device).manual_seed(seed)
        return to_uint8(trained.sample(6, steps=4, generator=g, progress=False))

    assert exported.shape == (6, 8, 8, 1) and exported.dtype == np.uint8
    assert np.array_equal(exported, api(0))
    assert not np.array_equal(exported, api(1))


def test_guided_latent_samples_export_what_the_api_draws(tiny_latent, capsys):
    """The MNIST page's case: a conditional latent recipe, the digits 0-9 in turn
    with guidance weight 2, decoded; equal to the API's to the bit."""
    trained = recipes.load_or_train("tiny-latent", progress=False)
    argv = ["sample", "tiny-latent", "--guidance", "2", "--n", "12", "--steps", "3"]
    exported = _exported(tiny_latent / "export", argv, capsys)
    device = next(trained.net.parameters()).device
    labels = torch.arange(12, device=device) % 10
    assert np.array_equal(
        np.load(tiny_latent / "export" / "samples.npz")["labels"], labels.cpu()
    )

    def api(seed):
        g = torch.Generator(device).manual_seed(seed)
        x = trained.sample(
            12,
            steps=3,
            cond={"y": labels},
            guidance=2.0,
            generator=g,
            progress=False,
        )
        return to_uint8(x)

    assert np.array_equal(exported, api(0))
    assert not np.array_equal(exported, api(1))


@pytest.mark.parametrize(
    "name, solver, nfe",
    [
        ("ddim", "ddim", 4),
        ("ddpm", "ddpm", None),
        ("euler", "euler", 4),
        ("dpm_solver_1", "dpm_solver_1", 4),
        ("dpm++2m", "dpm_solver_pp_2m", 4),
        ("dpm_solver_pp_2m", "dpm_solver_pp_2m", 5),
        ("heun", "heun", 5),
    ],
)
def test_every_solver_on_the_command_line_draws_what_the_api_draws(
    tiny, capsys, name, solver, nfe
):
    """``sample --solver NAME --nfe N`` writes, bit for bit, what
    ``Trained.sample(solver=..., nfe=...)`` draws from the same seed."""
    trained = recipes.load_or_train("tiny", progress=False)
    budget = [] if nfe is None else ["--nfe", str(nfe)]
    argv = ["sample", "tiny", "--solver", name, *budget, "--n", "5", "--seed", "3"]
    exported = _exported(tiny / "export", argv, capsys)
    device = next(trained.net.parameters()).device
    kw = {} if nfe is None else {"nfe": nfe}
    g = torch.Generator(device).manual_seed(3)
    x = trained.sample(5, solver=solver, generator=g, progress=False, **kw)
    assert np.array_equal(exported, to_uint8(x))


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--solver", "nope"], "invalid choice: 'nope'"),
        (["--solver", "heun", "--nfe", "2"], "heun needs at least 3 model evaluations"),
        (["--solver", "dpm++2m", "--nfe", "1"], "needs at least 2 model evaluations"),
        (["--solver", "euler", "--nfe", "0"], "'0' is not a positive int"),
        (["--solver", "euler", "--nfe", "101"], "more than the recipe's T = 100"),
        (["--solver", "ddpm", "--nfe", "10"], "ddpm sampling walks all T steps"),
    ],
)
def test_bad_solver_names_and_budgets_exit_2(tiny, capsys, flags, says):
    assert main(["sample", "tiny", *flags, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1, err


def test_the_api_spends_the_budget_and_dpm_solver_1_is_ddim(tiny):
    """``Trained.sample`` calls the network exactly ``solver_nfe`` times on the
    solver's default grid (one call a batch), and DPM-Solver-1 on its default grid
    is DDIM with clipping: the same samples up to float32 rounding."""
    trained = recipes.load_or_train("tiny", progress=False)
    noise = DiscreteNoise(trained.schedule)
    calls = []
    forward = trained.net.forward
    trained.net.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
    for name in solvers.SOLVERS:
        calls.clear()
        trained.sample(3, solver=name, nfe=7, progress=False)
        grid = solvers.default_grid(name, noise, 7)
        assert len(calls) == solvers.solver_nfe(name, grid, noise), name
    del trained.net.forward

    def draw(solver):
        g = torch.Generator().manual_seed(0)
        return trained.sample(16, solver=solver, nfe=6, generator=g, progress=False)

    ddim, dpm1 = draw("ddim"), draw("dpm_solver_1")
    assert (ddim - dpm1).abs().max() < 1e-4
    assert (ddim - draw("euler")).abs().max() > 1e-2  # the check can tell solvers apart
