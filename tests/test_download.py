"""Integration tests of download-datasets.sh against the shared offline copies.

Each test copies the script into a temporary folder and runs it there, either
from a mirror folder (DATASETS_MIRROR) or over HTTP from an in-process loopback
server (DATASETS_BASE_URL) that supports byte ranges, so resuming is tested too.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "download-datasets.sh"
SHARED = REPO.parent / "shared" / "data"
MNIST_MD5 = {  # uncompressed files
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
CLASSES = "airplane automobile bird cat deer dog frog horse ship truck".split()

pytestmark = pytest.mark.skipif(
    not (SHARED / "MNIST" / "raw").is_dir(),
    reason=f"offline dataset copies not found at {SHARED} (../shared/data)",
)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def run(work: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DATASETS_")}
    full_env.pop("DIFFLAB_DATA", None)
    full_env.update(env)
    return subprocess.run(
        ["bash", str(work / "download-datasets.sh"), *args],
        cwd=work,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def leftovers(data: Path) -> list[Path]:
    """Temporary files or folders the script must never leave behind on success."""
    return [
        p for p in data.rglob("*") if p.name.endswith(".part") or ".unpack" in p.name
    ]


@pytest.fixture
def work(tmp_path: Path) -> Path:
    shutil.copy(SCRIPT, tmp_path / "download-datasets.sh")
    return tmp_path


@pytest.fixture
def served(tmp_path: Path) -> Path:
    """A copy of the MNIST part of the mirror layout, to be served over HTTP."""
    root = tmp_path / "served"
    shutil.copytree(SHARED / "MNIST", root / "MNIST")
    return root


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single byte-range support (enough for wget -c / curl -C -)."""

    requests: list[tuple[str, str | None]]  # set per server: (path, Range header)

    def log_message(self, format, *args):  # keep pytest output clean
        pass

    def send_head(self):
        self.requests.append((self.path, self.headers.get("Range")))
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        path = Path(self.translate_path(self.path))
        if m is None or not path.is_file():
            return super().send_head()
        size, start = path.stat().st_size, int(m[1])
        if start >= size:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        f = open(path, "rb")  # noqa: SIM115 (closed by the base class)
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.send_header("Content-Length", str(size - start))
        self.end_headers()
        return f


@pytest.fixture
def server(served: Path):
    """Yield (base_url, requests) for a threaded loopback server on a free port."""
    requests: list[tuple[str, str | None]] = []
    handler = type("H", (RangeHandler,), {"requests": requests})

    def make(*a, **k):
        return handler(*a, directory=str(served), **k)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", requests
    httpd.shutdown()
    httpd.server_close()


def assert_mnist_good(data: Path) -> None:
    for name, want in MNIST_MD5.items():
        assert md5(data / "MNIST" / "raw" / name) == want, name


def test_mirror_fills_data_then_second_run_is_a_no_op(work: Path):
    first = run(work, DATASETS_MIRROR=str(SHARED))
    assert first.returncode == 0, first.stderr
    data = work / "data"
    assert_mnist_good(data)
    for split, per_class in (("train", 500), ("test", 100)):
        for c in CLASSES:
            assert len(list((data / "CIFAR10" / split / c).glob("*.png"))) == per_class
    wavs = list((data / "free-spoken-digit-dataset" / "recordings").glob("*.wav"))
    assert len(wavs) == 3000
    assert wavs[0].read_bytes()[:4] == b"RIFF"
    assert leftovers(data) == [] and not (data / ".downloads").exists()

    stamps = {p: p.stat().st_mtime_ns for p in data.rglob("*") if p.is_file()}
    second = run(work, "all", DATASETS_MIRROR=str(SHARED))
    assert second.returncode == 0, second.stderr
    assert "Nothing to download" in second.stdout
    assert {p: p.stat().st_mtime_ns for p in data.rglob("*") if p.is_file()} == stamps


def make_data(work: Path, **env: str) -> subprocess.CompletedProcess:
    """The main job's data step: ``make data`` with the project's Makefile."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DATASETS_")}
    full_env.pop("DIFFLAB_DATA", None)
    full_env.update(env)
    shutil.copy(REPO / "Makefile", work / "Makefile")
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(work), "data"],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_main_jobs_data_step_fetches_once_and_goes_on_offline(work: Path):
    """``make serve``/``make build`` first run ``make data``: with the mirror it
    fills data/; later, offline and without the mirror, it fetches nothing,
    touches nothing (the CIFAR-10 PNG subset counts as present) and succeeds;
    with nothing present and no host reachable it still succeeds, saying the
    pages build on the stand-ins."""
    first = make_data(work, DATASETS_MIRROR=str(SHARED))
    assert first.returncode == 0, first.stderr
    data = work / "data"
    assert_mnist_good(data)
    stamps = {p: p.stat().st_mtime_ns for p in data.rglob("*") if p.is_file()}
    unreachable = "http://127.0.0.1:9/"  # the discard port: nothing listens
    again = make_data(work, DATASETS_BASE_URL=unreachable)
    assert again.returncode == 0, again.stderr
    assert "Nothing to download" in again.stdout, again.stdout
    assert {p: p.stat().st_mtime_ns for p in data.rglob("*") if p.is_file()} == stamps

    shutil.rmtree(data)
    offline = make_data(work, DATASETS_BASE_URL=unreachable)
    assert offline.returncode == 0, offline.stderr
    assert "could not be fetched" in offline.stdout
    assert "stand-ins" in offline.stdout
    assert not (data / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()
    skipped = make_data(work, FETCH="0", DATASETS_BASE_URL=unreachable)
    assert skipped.returncode == 0, skipped.stderr
    assert "datasets not fetched" in skipped.stdout
    assert "download" not in skipped.stdout.replace("datasets not fetched", "")


def test_unknown_dataset_and_missing_mirror_fail_clearly(work: Path):
    bad = run(work, "imagenet")
    assert bad.returncode == 2 and "unknown dataset 'imagenet'" in bad.stderr
    empty = work / "empty"
    empty.mkdir()
    res = run(work, "fsdd", DATASETS_MIRROR=str(empty))
    assert res.returncode == 1
    assert "free-spoken-digit-dataset.zip" in res.stderr
    assert "no such file in the mirror" in res.stderr
    assert not (work / "data" / "free-spoken-digit-dataset").exists()


def test_http_corrupt_file_is_refused_and_the_rest_kept(work, served, server):
    base_url, _ = server
    gz = served / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz"
    good = gz.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2 : len(bad) // 2 + 16] = bytes(b ^ 0xFF for b in bad[-16:])
    gz.write_bytes(bytes(bad))
    # Already there before the run: one good MNIST file and an unrelated file.
    raw = work / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    with gzip.open(served / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz") as f:
        (raw / "t10k-labels-idx1-ubyte").write_bytes(f.read())
    (work / "data" / "notes.txt").write_text("mine")

    res = run(work, "mnist", DATASETS_BASE_URL=base_url)
    assert res.returncode != 0
    assert "train-labels-idx1-ubyte.gz" in res.stderr and "md5" in res.stderr
    assert "re-run" in res.stderr
    assert not (raw / "train-labels-idx1-ubyte").exists()
    for name in MNIST_MD5.keys() - {"train-labels-idx1-ubyte"}:
        assert md5(raw / name) == MNIST_MD5[name]
    assert (work / "data" / "notes.txt").read_text() == "mine"
    assert leftovers(work / "data") == []  # the bad download was not kept

    gz.write_bytes(good)  # the mirror is fixed: only the missing file is fetched
    again = run(work, "mnist", DATASETS_BASE_URL=base_url)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("already present") == 3
    assert_mnist_good(work / "data")


@pytest.mark.parametrize("tool", ["wget", "curl"])
def test_partial_download_is_resumed(work, served, server, tool):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed")
    base_url, requests = server
    name = "t10k-images-idx3-ubyte.gz"
    full = (served / "MNIST" / "raw" / name).read_bytes()
    part = work / "data" / ".downloads" / f"{name}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(full[: len(full) // 2])

    res = run(work, "mnist", DATASETS_BASE_URL=base_url, DATASETS_DOWNLOADER=tool)
    assert res.returncode == 0, res.stderr
    assert_mnist_good(work / "data")
    ranges = [r for p, r in requests if p.endswith(name)]
    assert ranges == [f"bytes={len(full) // 2}-"]  # one request, for the rest only
    assert leftovers(work / "data") == []


@pytest.mark.parametrize("size", ["shorter", "longer"])
def test_garbage_part_file_is_never_taken_as_done(work, served, server, size):
    base_url, requests = server
    name = "t10k-labels-idx1-ubyte.gz"
    n = (served / "MNIST" / "raw" / name).stat().st_size
    part = work / "data" / ".downloads" / f"{name}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\x00" * (n // 2 if size == "shorter" else n + 10))

    res = run(work, "mnist", DATASETS_BASE_URL=base_url)
    assert res.returncode == 0, res.stderr
    assert_mnist_good(work / "data")
    # The resumed copy failed its check, so the file was fetched again whole.
    assert [r for p, r in requests if p.endswith(name)][-1] is None


# ------------------------------------------- repair, interruption and concurrency


def command_in(message: str) -> tuple[dict[str, str], list[str], Path]:
    """The command a loader's message names: (env assignments, argv, folder)."""
    words = shlex.split(re.search(r"`([^`]+)`", message)[1])
    env = {}
    while "=" in words[0]:
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    folder = re.search(r"in the project folder \((.+)\)", message)[1]
    return env, words, Path(folder)


@pytest.mark.parametrize("dataset", ["cifar10", "fsdd"])
def test_the_command_a_corrupt_file_message_names_repairs_it(work: Path, dataset):
    from difflab.data.audio import load_fsdd
    from difflab.data.common import DatasetCorruptError
    from difflab.data.images import load_cifar10

    data = work / "data"
    assert run(work, dataset, DATASETS_MIRROR=str(SHARED)).returncode == 0
    if dataset == "cifar10":
        bad = sorted((data / "CIFAR10" / "test" / "cat").glob("*.png"))[0]
        load = lambda: load_cifar10("test", data)  # noqa: E731
    else:
        bad = sorted((data / "free-spoken-digit-dataset/recordings").glob("*_0.wav"))[0]
        load = lambda: load_fsdd("test", data)  # noqa: E731
        # As if unpacked by an older script: the known list md5 still catches it.
        (bad.parent / ".manifest.md5").unlink()
    good = bad.read_bytes()
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(DatasetCorruptError) as err:
        load()
    assert str(bad) in str(err.value)
    env, argv, folder = command_in(str(err.value))
    assert argv == ["bash", "download-datasets.sh", dataset]
    assert env == {"DIFFLAB_DATA": str(data.resolve())}
    assert (folder / "download-datasets.sh").is_file()

    fixed = subprocess.run(  # exactly what the message says, from the mirror
        argv,
        cwd=folder,
        env={**os.environ, **env, "DATASETS_MIRROR": str(SHARED)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert fixed.returncode == 0, fixed.stderr
    assert "fetching" in fixed.stdout
    if dataset == "cifar10":  # the manifest written at unpack names the file
        assert (
            f"1 file(s) changed, missing or added since they were unpacked: test/cat/{bad.name}"
            in fixed.stdout
        )
    assert bad.read_bytes() == good
    load()  # reads every file of the split again
    assert leftovers(data) == []
    if dataset == "fsdd":  # the restored copy has a manifest; --force fetches anyway
        assert (bad.parent / ".manifest.md5").is_file()
        forced = run(work, "--force", "fsdd", DATASETS_MIRROR=str(SHARED))
        assert forced.returncode == 0 and "fetched from" in forced.stdout


@pytest.fixture
def slow_unzip(work: Path) -> dict[str, str]:
    """Environment that makes the script's unzip pause before extracting.

    Like Info-ZIP's unzip, the wrapper catches Ctrl-C and exits with status 80
    (so the script sees an ordinary failure, not a signal); it touches a marker
    file when the pause starts, so a test can signal the run mid-unpack.
    """
    real = shutil.which("unzip")
    if real is None:
        pytest.skip("unzip not installed")
    bin_dir = work / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "unzip"
    wrapper.write_text(
        "#!/usr/bin/env bash\n"
        'case " $* " in *" -d "*)\n'
        "    trap 'exit 80' INT\n"
        '    touch "$SLOW_UNZIP_MARK"\n'
        '    sleep "$SLOW_UNZIP_SECONDS"\n'
        "    ;;\n"
        "esac\n"
        f'exec {real} "$@"\n'
    )
    wrapper.chmod(0o755)
    return {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "SLOW_UNZIP_MARK": str(work / "unpacking"),
        "SLOW_UNZIP_SECONDS": "30",
    }


def start(work: Path, *args: str, **env: str) -> subprocess.Popen:
    """The script in its own process group (as a terminal's Ctrl-C would reach it)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DATASETS_")}
    full_env.pop("DIFFLAB_DATA", None)
    full_env.update(env)
    return subprocess.Popen(
        ["bash", str(work / "download-datasets.sh"), *args],
        cwd=work,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for(marker: Path, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never reached its unpacking"
        time.sleep(0.05)


@pytest.mark.parametrize("to", ["group", "script"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
def test_a_signal_during_unpacking_stops_the_whole_run(work, slow_unzip, sig, to):
    """Ctrl-C in a terminal reaches the whole process group; ``kill`` or a job
    scheduler the script alone. Either way the run stops at once (the unpacker's
    30 s pause is not waited for), dies of the signal (status 130 for SIGINT in a
    shell), removes the partial folder and blames no disk."""
    proc = start(work, "cifar10", "fsdd", DATASETS_MIRROR=str(SHARED), **slow_unzip)
    wait_for(Path(slow_unzip["SLOW_UNZIP_MARK"]), proc)
    if to == "group":
        os.killpg(proc.pid, sig)
    else:
        os.kill(proc.pid, sig)
    out, err = proc.communicate(timeout=20)  # well before the 30 s pause ends
    assert proc.returncode == -sig, (out, err)  # died of the signal, as it should
    assert "fsdd ->" not in out  # did not carry on with the next dataset
    assert f"stopped by {sig.name}" in err
    assert "disk full" not in err and "unpacking failed" not in err, err
    data = work / "data"
    archive = data / ".downloads" / "cifar-10-subset-png.zip.part"
    assert leftovers(data) == [archive]  # the verified archive only, kept
    assert not (data / "CIFAR10").exists()

    again = run(work, "cifar10", DATASETS_MIRROR=str(SHARED))
    assert again.returncode == 0, again.stderr
    assert "kept from an earlier run" in again.stdout
    assert leftovers(data) == [] and not (data / ".downloads").exists()
    assert len(list((data / "CIFAR10").rglob("*.png"))) == 6000


def test_two_runs_at_once_take_turns_and_agree(work, slow_unzip):
    env = {**slow_unzip, "SLOW_UNZIP_SECONDS": "2"}
    procs = [start(work, "fsdd", DATASETS_MIRROR=str(SHARED), **env) for _ in "ab"]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    text = "".join(out + err for out, err in outs)
    assert "waiting for another download-datasets.sh run" in text
    assert "error" not in text and "corrupt" not in text
    # One run fetched; the other waited, then found the files good.
    assert sorted("already present" in out for out, _ in outs) == [False, True]
    data = work / "data"
    assert (
        len(list((data / "free-spoken-digit-dataset/recordings").glob("*.wav"))) == 3000
    )
    assert leftovers(data) == []


def test_leftovers_of_a_killed_run_are_cleaned_by_the_next(work, slow_unzip):
    data = work / "data"
    proc = start(work, "fsdd", DATASETS_MIRROR=str(SHARED), **slow_unzip)
    wait_for(Path(slow_unzip["SLOW_UNZIP_MARK"]), proc)
    os.killpg(proc.pid, signal.SIGKILL)  # no trap runs: its temporary folder stays
    proc.wait(timeout=60)
    assert [p.name[:13] for p in data.glob(".unpack-*")] == [".unpack-fsdd."]

    again = run(work, "fsdd", DATASETS_MIRROR=str(SHARED))
    assert again.returncode == 0, again.stderr
    assert "cleaned up after an interrupted run: .unpack-fsdd." in again.stdout
    assert leftovers(data) == []

    # Killed between install_dir's two renames: the good copy was moved aside and
    # the new one is not in place; and a half-gunzipped MNIST file.
    final = data / "free-spoken-digit-dataset"
    final.rename(data / "free-spoken-digit-dataset.old.4242")
    half = data / "MNIST" / "raw" / "train-images-idx3-ubyte.part"
    half.parent.mkdir(parents=True)
    half.write_bytes(b"\0" * 1000)
    third = run(work, "fsdd", DATASETS_MIRROR=str(SHARED))
    assert third.returncode == 0, third.stderr
    assert "Nothing to download" in third.stdout  # the moved-aside copy is restored
    assert len(list((final / "recordings").glob("*.wav"))) == 3000
    assert leftovers(data) == [] and not list(data.glob("*.old.*"))


def _slow_tool(work: Path, tool: str) -> dict:
    """``tool`` on PATH behind a wrapper that marks its start and pauses 30 s first."""
    real = shutil.which(tool)
    if real is None:
        pytest.skip(f"{tool} not installed")
    bin_dir = work / "bin"
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / tool
    mark = work / f"{tool}-started"
    # Python, not bash: a bash wrapper that gets Ctrl-C while its `touch` runs goes
    # on to its `sleep` (bash waits out a child that exits normally), which then
    # holds the test's pipes open; Python stops at the signal wherever it is.
    wrapper.write_text(
        "#!/usr/bin/env python3\nimport os, pathlib, sys, time\n"
        f"pathlib.Path({str(mark)!r}).touch()\ntime.sleep(30)\n"
        f"os.execv({real!r}, [{real!r}, *sys.argv[1:]])\n"
    )
    wrapper.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "mark": str(mark)}


@pytest.mark.parametrize("to", ["group", "script"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
def test_a_signal_during_a_download_stops_the_whole_run(work, server, sig, to):
    base_url, _ = server
    slow = _slow_tool(work, "wget")
    proc = start(
        work, "mnist", "fsdd", DATASETS_BASE_URL=base_url, DATASETS_DOWNLOADER="wget",
        PATH=slow["PATH"],
    )  # fmt: skip
    wait_for(Path(slow["mark"]), proc)
    (os.killpg if to == "group" else os.kill)(proc.pid, sig)
    out, err = proc.communicate(timeout=20)  # the download's pause is not waited for
    assert proc.returncode == -sig, (out, err)
    assert f"stopped by {sig.name}" in err and "fsdd ->" not in out
    assert not list((work / "data").rglob("*-ubyte")), "a file was unpacked"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
def test_a_signal_during_a_check_stops_the_whole_run(work, sig):
    """The checks (md5 sums) are short; Ctrl-C (the group) stops one at once."""
    slow = _slow_tool(work, "md5sum")
    proc = start(work, "mnist", "fsdd", DATASETS_MIRROR=str(SHARED), PATH=slow["PATH"])
    wait_for(Path(slow["mark"]), proc)
    os.killpg(proc.pid, sig)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == -sig, (out, err)
    assert f"stopped by {sig.name}" in err and "fsdd ->" not in out
    assert "disk full" not in err
