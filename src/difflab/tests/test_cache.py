"""The cache-or-train helper: keys follow the dependencies' source, not the package's."""

import errno
import os
import shutil
import tempfile

import pytest
import torch

from difflab.runtime import cache
from difflab.runtime.checkpoint import CheckpointError

LOOP_DEPS = ("difflab.train.loop", "difflab.nets.unet")


@pytest.fixture
def tree(tmp_path):
    """A copy of the package source to edit."""
    root = tmp_path / "difflab"
    shutil.copytree(cache.PACKAGE_DIR, root, ignore=shutil.ignore_patterns("tests"))
    return root


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path / "store"))
    return tmp_path / "store"


def _touch(path):
    path.write_text(path.read_text() + "\n# edited\n")


def test_closure_follows_imports_transitively_and_nothing_else():
    mods = cache.module_closure(LOOP_DEPS)
    # loop -> diffusion.losses -> diffusion.forward: a transitive dependency
    assert {"difflab.diffusion.losses", "difflab.diffusion.forward"} <= set(mods)
    assert "difflab.nets.layers" in mods  # imported by the UNet
    assert "difflab.diffusion" in mods and "difflab" in mods  # packages run on import
    for name in mods:  # neither the page helpers nor the evaluation
        assert not name.startswith(("difflab.notes", "difflab.eval", "difflab.cli"))


def test_key_ignores_modules_outside_the_closure(tree):
    key = cache.cache_key("ddpm", (1, 2), LOOP_DEPS, tree)
    _touch(tree / "notes" / "plotting.py")
    _touch(tree / "eval" / "metrics.py")
    assert cache.cache_key("ddpm", (1, 2), LOOP_DEPS, tree) == key


@pytest.mark.parametrize(
    "edited",
    ["nets/unet.py", "train/loop.py", "diffusion/losses.py", "diffusion/forward.py"],
)
def test_key_changes_with_a_direct_or_transitive_dependency(tree, edited):
    key = cache.cache_key("ddpm", (1, 2), LOOP_DEPS, tree)
    _touch(tree / edited)
    assert cache.cache_key("ddpm", (1, 2), LOOP_DEPS, tree) != key


def test_key_changes_with_kind_and_config():
    k = cache.cache_key("ddpm", (1, 2), LOOP_DEPS)
    assert cache.cache_key("ddpm", (1, 3), LOOP_DEPS) != k
    assert cache.cache_key("vae", (1, 2), LOOP_DEPS) != k


def test_unknown_dependency_is_refused():
    with pytest.raises(ValueError, match="not a module"):
        cache.module_closure(["difflab.no_such_module"])


def _cached(builds, config=("cfg", 1)):
    def build(path):
        builds.append(path)
        return {"w": torch.arange(3.0)}

    return cache.cached(
        "toy",
        config,
        deps=("difflab.core.cond",),
        build=build,
        load=lambda state: state["w"] * 2,
    )


def test_second_call_loads_instead_of_building(store):
    builds = []
    first, hit1 = _cached(builds)
    second, hit2 = _cached(builds)
    assert len(builds) == 1 and (hit1, hit2) == (False, True)
    torch.testing.assert_close(first, second)
    _cached(builds, config=("cfg", 2))  # another config: another build
    assert len(builds) == 2


def test_partial_entry_is_handed_to_build_to_resume(store):
    e = cache.entry("toy", ("cfg", 1), deps=("difflab.core.cond",))
    from difflab.runtime.checkpoint import save_checkpoint

    save_checkpoint({"w": torch.zeros(3), "done": False}, e.path)  # interrupted run
    builds = []
    _, hit = _cached(builds)
    assert not hit and builds == [e.path]  # build sees the partial checkpoint
    assert _cached(builds)[1]


def test_corrupt_entry_raises_a_clear_error(store):
    builds = []
    _cached(builds)
    e = cache.entry("toy", ("cfg", 1), deps=("difflab.core.cond",))
    e.path.write_bytes(e.path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match=r"cached toy .* cannot be read") as info:
        _cached(builds)
    assert str(info.value).count(f"delete {e.path} and run again") == 1


def test_list_and_prune(store):
    _cached([])
    (store / "toy" / "0123456789abcdef.pt").write_bytes(b"old")  # no sidecar
    (store / "notes").mkdir()
    (store / "notes" / "page.json").write_text("{}")  # not an entry: left alone
    listed = {e.key: e for e in cache.list_entries()}
    assert len(listed) == 2
    assert not listed["0123456789abcdef"].reachable
    (live,) = [e for e in listed.values() if e.reachable]
    assert live.kind == "toy" and live.size > 0
    assert [e.key for e in cache.prune(dry_run=True)] == ["0123456789abcdef"]
    assert (store / "toy" / "0123456789abcdef.pt").exists()
    cache.prune()
    assert [e.key for e in cache.list_entries()] == [live.key]
    assert (store / "notes" / "page.json").exists()


def test_entry_whose_record_no_longer_gives_its_key_is_unreachable(store):
    _cached([])
    (sidecar,) = (store / "toy").glob("*.json")
    sidecar.write_text(sidecar.read_text().replace("'cfg', 1", "'cfg', 9"))
    assert [e.reachable for e in cache.list_entries()] == [False]


def test_the_cache_module_itself_is_no_dependency(tree):
    deps = ("difflab.eval.metrics",)  # imports runtime.cache to store its classifier
    key = cache.cache_key("classifier", 1, deps, tree)
    _touch(tree / "runtime" / "cache.py")
    assert cache.cache_key("classifier", 1, deps, tree) == key
    _touch(tree / "nets" / "classifier.py")
    assert cache.cache_key("classifier", 1, deps, tree) != key


def test_prune_everything_removes_reachable_entries_too(store):
    _cached([])
    assert [e.reachable for e in cache.prune(everything=True)] == [True]
    assert cache.list_entries() == [] and not list((store / "toy").iterdir())


# --- the cache folder's faults: found before anything is built ------------------


def _oserror(code):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return fail


def test_missing_cache_folder_is_created(tmp_path, monkeypatch):
    deep = tmp_path / "a" / "b" / "cache"
    monkeypatch.setenv("DIFFLAB_CACHE", str(deep))
    builds = []
    _cached(builds)
    assert len(builds) == 1 and (deep / "toy").is_dir()
    assert not list(deep.rglob("*.tmp"))  # the probe file is gone


@pytest.mark.parametrize(
    "where, fault, says",
    [
        (tempfile, "mkstemp", errno.EROFS),  # read-only: no file can be made
        (tempfile, "mkstemp", errno.EACCES),  # no permission
        (os, "fsync", errno.ENOSPC),  # full: the data block is refused at sync
    ],
)
def test_unwritable_cache_is_refused_before_build(
    store, monkeypatch, where, fault, says
):
    monkeypatch.setattr(where, fault, _oserror(says))
    builds = []
    with pytest.raises(cache.CacheNotWritable) as info:
        _cached(builds)
    message = str(info.value)
    assert builds == [] and "DIFFLAB_CACHE=" in message and str(store) in message
    assert os.strerror(says) in message and "\n" not in message
    assert not [p for p in store.rglob("*") if p.is_file()]  # no sidecar, no probe


def test_cache_folder_under_a_file_is_refused(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("")
    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path / "f" / "cache"))
    with pytest.raises(cache.CacheNotWritable, match="lies under the file"):
        _cached([])
    with pytest.raises(cache.CacheNotWritable, match="DIFFLAB_CACHE"):
        cache.check_cache_dir()


def test_a_read_only_cache_still_serves_finished_entries(store, monkeypatch):
    builds = []
    _cached(builds)
    monkeypatch.setattr(tempfile, "mkstemp", _oserror(errno.EROFS))
    assert _cached(builds)[1] and len(builds) == 1  # a hit writes nothing


def test_write_atomic_leaves_the_old_file_on_failure(tmp_path):
    path = tmp_path / "out.npz"
    path.write_bytes(b"old")

    def half(f):
        f.write(b"half of the new")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError):
        cache.write_atomic(path, half)
    assert path.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [path]
    cache.write_atomic(path, lambda f: f.write(b"new"))
    assert path.read_bytes() == b"new" and sorted(tmp_path.iterdir()) == [path]


# --- what a script imports, and the lock on an entry ----------------------------


def test_imported_modules_of_a_note_and_its_closure(tree):
    text = (
        "import torch\n"
        "from difflab.notes import page\n"
        "from difflab.eval.audio_metrics import audio_classifier\n"
        "import difflab.diffusion.noise as noise\n"
        "def later():\n    from difflab.pipelines import recipes\n"
    )
    mods = cache.imported_modules(text, tree)
    assert mods == {
        "difflab.notes.page",
        "difflab.eval.audio_metrics",
        "difflab.diffusion.noise",
        "difflab.pipelines.recipes",
        "difflab.notes",
        "difflab.pipelines",
    }  # packages named by ``from``; module_closure adds every package above
    # Editing a module reached only through an import changes the hash; editing one
    # that nothing here reaches does not.
    before = cache.deps_hash(mods, tree)
    _touch(tree / "foundations" / "markov.py")
    assert "difflab.foundations.markov" not in cache.module_closure(mods, tree)
    assert cache.deps_hash(mods, tree) == before
    _touch(tree / "diffusion" / "schedules.py")  # imported by noise, not named here
    assert cache.deps_hash(mods, tree) != before


_LOCK_WORKER = """
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
from difflab.runtime import cache

def build(path):
    with open(os.environ["COUNT"], "a") as f:
        f.write("built\\n")
    time.sleep(2)  # the other process waits by now, and says so in the folder
    waiting = sorted(os.listdir(os.environ[cache.WAITING_DIR_ENV]))
    with open(os.environ["SEEN"], "w") as f:
        f.write(" ".join(waiting))
    time.sleep(1)
    return {"value": 42}

obj, hit = cache.cached("lockdemo", ("cfg", 1), deps=("difflab.runtime.checkpoint",),
                        build=build, load=lambda s: s["value"])
print(json.dumps({"value": obj, "hit": hit}))
"""


def test_two_processes_build_one_entry_once(store, tmp_path):
    """The second process waits on the entry's lock and loads the first one's result;
    while it waits, a file named by its pid is in ``$DIFFLAB_LOCK_WAITING_DIR``."""
    import json
    import subprocess
    import sys

    script = tmp_path / "worker.py"
    script.write_text(_LOCK_WORKER)
    count = tmp_path / "count.txt"
    waiting, seen = tmp_path / "waiting", tmp_path / "seen.txt"
    waiting.mkdir()
    env = {
        **os.environ,
        "DIFFLAB_CACHE": str(store),
        "COUNT": str(count),
        "SEEN": str(seen),
        cache.WAITING_DIR_ENV: str(waiting),
    }
    src = str(cache.PACKAGE_DIR.parent)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), src],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    results = [json.loads(o[0]) for o in outs]
    assert [r["value"] for r in results] == [42, 42]
    assert sorted(r["hit"] for r in results) == [False, True]
    assert count.read_text() == "built\n", "the entry was built twice"
    assert any("waiting for another process" in o[1] for o in outs), outs
    waiter = next(p for p, r in zip(procs, results, strict=True) if r["hit"])
    assert seen.read_text() == str(waiter.pid)  # the waiter, while it waited
    assert not list(waiting.iterdir())  # and no more once it had the lock


def test_the_lock_is_released_when_build_fails(store):
    def broken(path):
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        cache.cached("lockfail", ("c",), deps=LOOP_DEPS, build=broken, load=dict)
    obj, hit = cache.cached(
        "lockfail", ("c",), deps=LOOP_DEPS, build=lambda p: {"a": 1}, load=dict
    )
    assert (obj, hit) == ({"a": 1}, False)


@pytest.mark.parametrize(
    "umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)]
)
def test_kept_files_follow_the_umask(tmp_path, umask, mode):
    """Checkpoints and atomically written outputs get the mode ``open()`` would
    give, not the 0o600 of the temporary file they were written as."""
    from difflab.runtime.checkpoint import save_checkpoint

    old = os.umask(umask)
    try:
        png = cache.write_atomic(tmp_path / "grid.png", lambda f: f.write(b"x"))
        save_checkpoint({"w": torch.zeros(1)}, tmp_path / "c.pt")
    finally:
        os.umask(old)
    assert png.stat().st_mode & 0o777 == mode
    assert (tmp_path / "c.pt").stat().st_mode & 0o777 == mode


def test_the_metric_classifier_does_not_depend_on_the_callers_random_state(store):
    """Pages build in parallel, in no fixed order: whichever trains the shared
    classifier first (with whatever it drew before) must get the same weights."""
    from dataclasses import replace

    from difflab.eval.metrics import classifier_recipe, train_classifier

    recipe = replace(classifier_recipe("digits"), steps=2)
    weights = []
    for seed in (1, 2):
        torch.manual_seed(seed)  # the caller's state differs between the two calls
        net = train_classifier(recipe)
        weights.append({k: v.clone() for k, v in net.state_dict().items()})
        prune(store)
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    torch.manual_seed(3)
    after = torch.rand(1)
    torch.manual_seed(3)
    train_classifier(replace(recipe, seed=5))
    assert torch.equal(torch.rand(1), after), "the caller's random state was moved"


def test_the_metric_classifier_trains_on_windows_and_scores_whole_images(
    store, monkeypatch
):
    """``crop``: each step sees one random crop x crop window of every image of
    the batch (no padding), and the network then takes the whole image."""
    from dataclasses import replace

    from difflab.data.images import load_images
    from difflab.eval import metrics
    from difflab.eval.metrics import (
        classifier_recipe,
        features_and_probs,
        train_classifier,
    )
    from difflab.nets.classifier import Classifier

    images = load_images("digits", split="train").images
    recipe = replace(classifier_recipe("digits"), steps=3, crop=5)
    seen = []
    forward = Classifier.forward

    def spy(self, x):
        seen.append(x.clone())
        return forward(self, x)

    def no_padding(*args, **kwargs):
        raise AssertionError("a window needs no padding")

    with monkeypatch.context() as m:
        m.setattr(Classifier, "forward", spy)
        m.setattr(metrics.F, "pad", no_padding)
        net = train_classifier(recipe)
    assert [tuple(x.shape) for x in seen] == [(recipe.batch_size, 1, 5, 5)] * 3
    windows = images.unfold(2, 5, 1).unfold(3, 5, 1)[:, 0]  # (N, 4, 4, 5, 5)
    for x in seen:  # one window position for the whole batch, cut from the data
        at = torch.ones(4, 4, dtype=torch.bool)
        for image in x[:, 0]:
            at &= (windows == image).flatten(-2).all(-1).any(0)
        assert at.any()
    feats, probs = features_and_probs(net, images[:10])
    assert feats.shape == (10, 4 * recipe.config.width) and probs.shape == (10, 10)
    with pytest.raises(ValueError, match="crop 9 must be in 1..8"):
        train_classifier(replace(recipe, crop=9))


def prune(store):
    cache.prune(store, everything=True)
