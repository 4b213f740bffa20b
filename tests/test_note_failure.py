"""A note that raises fails the build and the error names the page; the cache
key of a note follows the package source."""

from __future__ import annotations

import importlib.util
import shutil
import time
from pathlib import Path

import pytest
from conftest import REPO, mkdocs_env, run_mkdocs, site_copy

BROKEN = """# %% [markdown]
# # A deliberately broken note

# %%
x = 1

# %%
raise ValueError("deliberately broken note " + str(x))
"""


@pytest.mark.timeout(900)
def test_a_raising_note_fails_the_strict_build_naming_the_page(tmp_path):
    root = site_copy(tmp_path)
    note = root / "docs" / "diffusion" / "broken-note.py"
    note.parent.mkdir(exist_ok=True)
    note.write_text(BROKEN)
    env = mkdocs_env(
        DIFFLAB_NOTES_CACHE=str(tmp_path / "cache"), DIFFLAB_NOTES_JOBS="2"
    )
    res = run_mkdocs(
        ["build", "--strict", "-d", str(tmp_path / "site")], root, env, 600
    )
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    assert "docs/diffusion/broken-note.py" in out, out[-3000:]
    assert "deliberately broken note 1" in out, out[-3000:]
    assert not list((tmp_path / "cache").glob("*.ipynb")), "a failed note was cached"


GOOD = """# %% [markdown]
# # A note that runs

# %%
print("ran", 6 * 7)
"""


@pytest.mark.timeout(900)
def test_keep_going_runs_every_note_and_names_each_that_raised(tmp_path):
    root = site_copy(tmp_path)
    folder = root / "docs" / "diffusion"
    folder.mkdir(exist_ok=True)
    (folder / "broken-a.py").write_text(BROKEN)
    (folder / "broken-b.py").write_text(BROKEN.replace("x = 1", "x = 2"))
    (folder / "zz-good.py").write_text(GOOD)  # after both, in the build's order
    env = mkdocs_env(  # two workers: a parallel build still names each
        DIFFLAB_NOTES_CACHE=str(tmp_path / "cache"),
        DIFFLAB_NOTES_KEEP_GOING="1",
        DIFFLAB_NOTES_JOBS="2",
    )
    res = run_mkdocs(
        ["build", "--strict", "-d", str(tmp_path / "site")], root, env, 600
    )
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    assert "2 note(s) raised" in out, out[-3000:]
    for name, x in (("broken-a", 1), ("broken-b", 2)):
        assert f"docs/diffusion/{name}.py" in out, out[-3000:]
        assert f"deliberately broken note {x}" in out, out[-3000:]
    cached = list((tmp_path / "cache").glob("*.ipynb"))
    assert len(cached) == 1, cached  # the good note ran and was kept
    assert "ran 42" in cached[0].read_text()


def _notes_hook():
    spec = importlib.util.spec_from_file_location(
        "notes_hook", REPO / "hooks" / "notes.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module._state["kernel"] = "python3"
    return module


class _FakeJob:
    """A queued note for the runner's tests: it records its start, then holds its
    worker until ``gate`` is set."""

    run = True

    def __init__(self, rel, models, started, gate):
        self.rel, self.digest, self.models = rel, rel, frozenset(models)
        self.started, self.gate = started, gate

    def execute(self, threads, waiting_dir=None):
        self.started.append(self.rel)
        self.gate.wait(10)
        return 0.0


def test_cache_key_follows_the_package_rules_for_profile_and_data(
    tmp_path, monkeypatch
):
    """The build-wide part of the key: the profile and the datasets present."""
    hook = _notes_hook()
    monkeypatch.setenv("DIFFLAB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("DIFFLAB_PROFILE", "quick")
    profile, key = hook._fingerprint()
    assert profile == "quick" and key == hook._fingerprint()[1]
    monkeypatch.setenv("DIFFLAB_PROFILE", "full")
    assert hook._fingerprint()[1] != key, "profile ignored"
    monkeypatch.setenv("DIFFLAB_PROFILE", "quick")
    (tmp_path / "data" / "MNIST").mkdir(parents=True)
    assert hook._fingerprint()[1] != key, "data folder ignored"


def _module_keys(hook, root: Path) -> dict[str, str]:
    notes = sorted(
        p for p in (REPO / "docs").rglob("*.py") if "javascripts" not in p.parts
    )
    return {
        p.relative_to(REPO).as_posix(): hook.note_modules_hash(p.read_text(), root)
        for p in notes
    }


def _edit(path: Path) -> None:
    path.write_text(path.read_text() + "\n# edited\n")


def test_a_note_is_keyed_by_the_modules_it_reaches(tmp_path):
    """Editing a module re-executes exactly the notes that import it, directly or
    through other modules: the audio page alone for the audio metric, every page
    that reaches the noise interface for ``difflab.diffusion.noise``."""
    import difflab.runtime.cache as cache

    hook = _notes_hook()
    tree = tmp_path / "difflab"
    shutil.copytree(cache.PACKAGE_DIR, tree, ignore=shutil.ignore_patterns("tests"))
    before = _module_keys(hook, tree)

    _edit(tree / "eval" / "audio_metrics.py")
    after = _module_keys(hook, tree)
    changed = {n for n in before if before[n] != after[n]}
    assert changed == {"docs/applications/audio.py"}, changed

    _edit(tree / "diffusion" / "noise.py")
    again = _module_keys(hook, tree)
    changed = {n for n in after if after[n] != again[n]}
    reach = {
        n
        for n in before
        if "difflab.diffusion.noise"
        in cache.module_closure(
            cache.imported_modules((REPO / n).read_text(), tree), tree
        )
    }
    assert changed == reach, changed ^ reach
    # The pages of the diffusion chapters reach it; the first foundations do not.
    assert {"docs/diffusion/ddpm.py", "docs/deeper/ddim.py"} <= changed
    assert "docs/foundations/markov-chains.py" not in changed
    assert len(changed) >= 10, changed


def test_notes_jobs_and_threads(monkeypatch):
    hook = _notes_hook()
    monkeypatch.setenv("DIFFLAB_NOTES_JOBS", "2")
    monkeypatch.setenv("DIFFLAB_NOTES_THREADS", "")
    jobs, threads = hook.notes_jobs()
    assert jobs == 2 and threads >= 1
    monkeypatch.setenv("DIFFLAB_NOTES_THREADS", "3")
    assert hook.notes_jobs() == (2, 3)
    monkeypatch.setenv("DIFFLAB_NOTES_JOBS", "zero")
    with pytest.raises(Exception, match="DIFFLAB_NOTES_JOBS"):
        hook.notes_jobs()


def test_import_only_cells_are_plumbing():
    hook = _notes_hook()
    assert hook._import_only("import math\n\nimport torch\nfrom a import (\n b,\n)\n")
    assert hook._import_only(
        "import torch\nfrom difflab.notes import page\nrun = page.start()"
    )
    assert not hook._import_only("import torch\nx = torch.zeros(3)")
    assert not hook._import_only("%matplotlib inline")
    assert not hook._import_only("# only a comment")


def test_a_worker_starts_other_work_rather_than_wait_for_a_model_being_trained():
    """Two workers, longest first: the second does not start the next-longest note
    if it asks for a model the first is training (it would wait on the model's
    lock); it takes the longest one that asks for none. With nothing else left it
    takes the conflicting one."""
    import threading

    hook = _notes_hook()
    assert hook.note_models(
        'a = load_or_train("ddpm", progress=False)\nb = cached_net(\n  "digits-fm", x)\n'
        "c = train_stable_diffusion(recipe)\nfrom x import load_or_train_audio\n"
    ) == {"ddpm", "digits-fm", "train_stable_diffusion"}

    started: list[str] = []
    release = threading.Event()

    def Job(rel, models):  # noqa: N802 (a job class with the test's bookkeeping)
        return _FakeJob(rel, models, started, release)

    jobs = [
        Job("fast-sampling", {"ddpm"}),
        Job("ddim", {"ddpm"}),
        Job("better-networks", set()),
        Job("flow", {"ddpm", "digits-fm"}),
    ]
    done = threading.Semaphore(0)
    runner = hook._Runner(2, 1, on_done=lambda job, err: done.release())
    with runner.lock:  # queue all before a worker looks
        for i, job in enumerate(jobs):
            runner.queued[job.digest] = job
            runner.pending.append((float(i), i, job))
        runner.ready.notify_all()
    deadline = time.monotonic() + 10
    while len(started) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert started[:2] == ["fast-sampling", "better-networks"], started
    release.set()
    for _ in jobs:
        assert done.acquire(timeout=10)
    assert sorted(started) == sorted(j.rel for j in jobs)
    runner.stop()


def test_a_model_that_a_finished_note_asked_for_holds_nothing_back():
    """Once a note that asks for ``ddpm`` has ended, ``ddpm`` is trained: a queued
    note that asks for it starts ahead of a later one even while another ``ddpm``
    note runs (with the rule for untrained models alone, it would wait)."""
    import threading

    hook = _notes_hook()
    started: list[str] = []
    gates = {name: threading.Event() for name in "ABCDX"}
    gates["A"].set()

    def Job(rel, models):  # noqa: N802
        return _FakeJob(rel, models, started, gates[rel])

    done = threading.Semaphore(0)
    runner = hook._Runner(2, 1, on_done=lambda job, err: done.release())

    def queue(*jobs):
        with runner.lock:
            for job in jobs:
                runner._seq += 1
                runner.queued[job.digest] = job
                runner.pending.append((0.0, runner._seq, job))
            runner.ready.notify_all()

    def wait_for(n):
        deadline = time.monotonic() + 10
        while len(started) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(started) >= n, started

    queue(Job("A", {"ddpm"}), Job("X", set()))
    assert done.acquire(timeout=10)  # A ended: ddpm is trained; X still runs
    wait_for(2)
    queue(Job("B", {"ddpm"}))
    wait_for(3)
    queue(Job("C", {"ddpm"}), Job("D", set()))
    gates["X"].set()  # a worker is free while B (ddpm) runs: C, not D
    wait_for(4)
    assert started == ["A", "X", "B", "C"], started
    for name in "BCD":
        gates[name].set()
    for _ in range(4):
        assert done.acquire(timeout=10)
    runner.stop()


def test_a_note_estimates_its_cold_cost_by_the_data_present(tmp_path):
    """The header's ``cold_seconds`` counts on the stand-ins, its
    ``cold_seconds_with_<D>`` when dataset folder ``D`` is not empty; the timings
    are kept apart for the two, so one kind of build never orders the other."""
    hook = _notes_hook()
    header = (
        "# ---\n# jupyter:\n#   difflab:\n#     cold_seconds: 102\n"
        "#     cold_seconds_with_CIFAR10: 1300\n#     cold_seconds_with_MNIST: 40\n"
    )
    data = tmp_path / "data"
    assert hook.cold_hint(header, data) == (102.0, "")
    (data / "CIFAR10").mkdir(parents=True)  # an empty folder is no dataset
    assert hook.cold_hint(header, data) == (102.0, "")
    (data / "MNIST").mkdir()
    (data / "MNIST" / "raw").mkdir()
    assert hook.cold_hint(header, data) == (40.0, " with MNIST")
    (data / "CIFAR10" / "train").mkdir()
    assert hook.cold_hint(header, data) == (1300.0, " with CIFAR10, MNIST")
    assert hook.cold_hint("# ---\n", data) == (None, "")

    class Job:
        hint, timing_key = 1300.0, "docs/p.py with CIFAR10"

    assert hook._cost(Job, {"docs/p.py": 90.0}) == 1300.0  # a stand-in build's time
    assert hook._cost(Job, {"docs/p.py with CIFAR10": 1250.0}) == 1250.0
