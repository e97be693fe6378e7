"""Faults during a build: the process killed at many points, the disk full, a file size limit.

After every fault: no artifact version folder exists unless it is complete (``check_integrity`` finds
nothing), every cache entry verifies (``Store.get`` returns it, nothing discarded), whatever a killed
build left in the cache's ``tmp/`` is removed by ``prune``, and the next build succeeds. A fault that
stops a build is reported in one stderr line with exit code 2.

The builds are real ``rvc-compile build`` processes of the tiny recipe (int8, so calibration data goes
through the cache too), killed with SIGKILL on their whole process group (the build and its
evaluation subprocess) when a marker appears on disk (polled every 2 ms) or after a delay.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rvc_compile.artifact.manifest import check_integrity
from rvc_compile.cache.store import Store

from conftest import write_tiny_recipe

NAME, VERSION = "faulty", "1.0.0"
INT8 = [
    "target.precision=int8", "passes=[{name: host_source}]", "calibration.source=generated", "calibration.count=2",
    "calibration.seconds=0.2", "calibration.f0_source=synthetic", "calibration.features=recipe",
    "accuracy.min_snr_db=null", "accuracy.max_log_mel_db=null", "accuracy.max_mrstft=null", "accuracy.max_f0_cents=null",
]


class Build:
    """One ``rvc-compile build`` of the tiny recipe with its own output, cache and TMPDIR folders."""

    def __init__(self, root: Path, recipe: Path, *, out: Path | None = None, cache: Path | None = None, scratch: Path | None = None,
                 overrides: list[str] = INT8):
        self.root, self.recipe, self.overrides = root, recipe, overrides
        self.out = out or root / "out"
        self.cache = cache or root / "cache"
        self.scratch = scratch or root / "scratch"
        self.scratch.mkdir(parents=True, exist_ok=True)

    def command(self, force: bool = False) -> list[str]:
        command = [sys.executable, "-m", "rvc_compile.cli", "build", str(self.recipe), "--out", str(self.out), "--cache-dir", str(self.cache)]
        for override in self.overrides:
            command += ["--set", override]
        return command + (["--force"] if force else [])

    def env(self) -> dict[str, str]:
        return {**os.environ, "TMPDIR": str(self.scratch)}

    def start(self, *, force: bool = False, preexec=None) -> subprocess.Popen:
        log = open(self.root / f"build-{time.monotonic_ns()}.log", "w")
        return subprocess.Popen(self.command(force), stdout=log, stderr=subprocess.STDOUT, env=self.env(), start_new_session=True, preexec_fn=preexec)

    def run(self, *, force: bool = False, preexec=None, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(force), capture_output=True, text=True, env=self.env(), timeout=timeout, preexec_fn=preexec)

    @property
    def final(self) -> Path:
        return self.out / NAME / VERSION

    def temporary_folders(self) -> list[Path]:
        parent = self.out / NAME
        return sorted(parent.glob(".tmp-*")) if parent.is_dir() else []


def _files(folder: Path, pattern: str, *, hidden: bool = True) -> list[Path]:
    try:
        found = sorted(folder.glob(pattern)) if folder.is_dir() else []
    except OSError:  # a folder renamed away while we looked
        return []
    return found if hidden else [path for path in found if not path.name.startswith(".")]


MARKERS = {
    "artifact temp folder created": lambda b: bool(b.temporary_folders()),
    # Every cached thing (stages, the calibration set) is staged in tmp/ and committed under stages/.
    "a cache entry being written (staging folder)": lambda b: bool(_files(b.cache / "tmp", "*")),
    "first cache entry committed": lambda b: bool(_files(b.cache / "stages", "*/*")),
    "backend file written in the temp folder": lambda b: any((d / "model.onnx").exists() for d in b.temporary_folders()),
    "golden case written in the temp folder": lambda b: any(_files(d / "golden", "*.npz") for d in b.temporary_folders()),
    "report written in the temp folder (the commit is next)": lambda b: any((d / "report.md").exists() for d in b.temporary_folders()),
}


def kill_at(build: Build, marker=None, delay: float | None = None, timeout: float = 120) -> str:
    """Start a build and SIGKILL its process group when ``marker(build)`` holds or after ``delay`` s."""
    process = build.start(force=True)
    deadline = time.monotonic() + (delay if delay is not None else timeout)
    reached = False
    while time.monotonic() < deadline and process.poll() is None:
        if marker is not None and marker(build):
            reached = True
            break
        time.sleep(0.002)
    if process.poll() is not None:
        return "finished before the kill point"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return "killed at the marker" if reached or delay is not None else "killed at the timeout"


def check_state(build: Build, checkpoint: Path) -> list[str]:
    """The invariants after a fault; returns notes on what harmless debris was left."""
    notes = []
    if build.final.exists():
        assert check_integrity(build.final) == [], "a half-written artifact version is visible"
        notes.append("version complete (killed after the commit)")
    visible = [p.name for p in (build.out / NAME).iterdir() if not p.name.startswith((".tmp-", ".old-"))] if (build.out / NAME).is_dir() else []
    assert set(visible) <= {VERSION}, visible
    if build.temporary_folders():
        notes.append(f"{len(build.temporary_folders())} hidden .tmp- folder(s) (removed by a build after 24 h)")
    store = Store(build.cache)
    keys = [p.name for p in _files(build.cache / "stages", "*/*")]
    for key in keys:
        entry = store.get(key)
        assert entry is not None, f"cache entry {key[:12]} is partial or corrupt: {store.discarded}"
        entry.release()
    assert store.discarded == []
    assert not (build.cache / "calibration").exists(), "calibration sets are store entries (stages/), not files beside them"
    leftovers = _files(build.cache / "tmp", "*")
    if leftovers:
        notes.append(f"{len(leftovers)} staging item(s) in the cache's tmp/")
        copy = build.root / "cache-copy"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(build.cache, copy)
        Store(copy).prune()
        assert _files(copy / "tmp", "*") == [], "prune left staging folders of a killed build"
        shutil.rmtree(copy)
    scratch = _files(build.scratch, "rvc-compile-*")
    if scratch:
        notes.append(f"{len(scratch)} build scratch folder(s) left in TMPDIR")
    return notes


def next_build_succeeds(build: Build) -> None:
    process = build.run(force=build.final.exists())
    assert process.returncode == 0, process.stderr[-3000:]
    assert check_integrity(build.final) == []
    assert Path(process.stdout.strip().splitlines()[-1]) == build.final
    check_state(build, Path(build.recipe.read_text().split("checkpoint: ")[1].split("\n")[0]))


@pytest.fixture()
def recipe(tmp_path, checkpoint_factory) -> Path:
    return write_tiny_recipe(tmp_path, checkpoint_factory(), name=NAME)


# -- killed builds ------------------------------------------------------------------------------------

DEFAULT_MARKERS = ["artifact temp folder created", "a cache entry being written (staging folder)", "backend file written in the temp folder",
                   "report written in the temp folder (the commit is next)"]


def test_builds_killed_at_marked_points_leave_nothing_half_written(tmp_path, recipe, checkpoint_factory, hostile):
    """One output and cache folder shared by a sequence of killed builds, as on a machine where builds
    keep dying; the debris of every earlier kill is still there for the next one, then a build succeeds."""
    build = Build(tmp_path, recipe)
    for name in DEFAULT_MARKERS:
        row = hostile.case("Faults during a build: killed", f"SIGKILL at: {name}", expect="no half-written version; cache entries verify; tmp/ prunable")
        row.observe(kill_at(build, MARKERS[name]))
        for note in check_state(build, checkpoint_factory()):
            row.note(note)
    row = hostile.case("Faults during a build: killed", f"the next build after {len(DEFAULT_MARKERS)} killed builds in the same folders",
                       expect="succeeds; artifact intact; cache intact")
    next_build_succeeds(build)


@pytest.mark.slow
def test_builds_killed_at_every_point_then_rebuild_each_time(tmp_path, recipe, checkpoint_factory, hostile):
    """Every marker, then five delays spread over a measured cold build, each in fresh folders, each
    followed by a build that must succeed."""
    baseline = Build(tmp_path / "baseline", recipe)
    started = time.monotonic()
    process = baseline.run()
    duration = time.monotonic() - started
    assert process.returncode == 0, process.stderr[-2000:]
    points = [(f"SIGKILL at: {name}", MARKERS[name], None) for name in MARKERS]
    points += [(f"SIGKILL after {fraction:.0%} of a cold build ({fraction * duration:.1f} s)", None, fraction * duration)
               for fraction in (0.1, 0.3, 0.5, 0.7, 0.9)]
    for index, (label, marker, delay) in enumerate(points):
        build = Build(tmp_path / f"point-{index}", recipe)
        row = hostile.case("Faults during a build: killed", f"{label}, fresh folders, then the next build",
                           expect="no half-written version; cache entries verify; tmp/ prunable; the next build succeeds")
        row.observe(kill_at(build, marker, delay))
        for note in check_state(build, checkpoint_factory()):
            row.note(note)
        next_build_succeeds(build)


# -- full disks and size limits ---------------------------------------------------------------------

def _can_mount() -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    probe = Path(f"/tmp/rvc-compile-mount-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True).returncode == 0
        if ok:
            subprocess.run(["umount", str(probe)], check=True)
        return ok
    finally:
        probe.rmdir()


CAN_MOUNT = _can_mount()
needs_mount = pytest.mark.skipif(not CAN_MOUNT, reason="mounting a small tmpfs needs root (CAP_SYS_ADMIN); the RLIMIT_FSIZE tests cover the unprivileged case")


@contextlib.contextmanager
def small_disk(path: Path, size: int):
    """A tmpfs of ``size`` bytes mounted at ``path`` (root only); resizable with ``resize``."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield lambda new_size: subprocess.run(["mount", "-o", f"remount,size={new_size}", str(path)], check=True)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def assert_clear_error(process: subprocess.CompletedProcess, *fragments: str) -> str:
    lines = process.stderr.strip().splitlines()
    assert process.returncode == 2, (process.returncode, process.stderr[-3000:])
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in process.stderr, process.stderr[-3000:]
    assert any(fragment in lines[-1] for fragment in fragments), lines[-1]
    return lines[-1]


@pytest.fixture(scope="module")
def artifact_bytes(tiny_artifact) -> int:
    return sum(p.stat().st_size for p in tiny_artifact.rglob("*") if p.is_file())


@needs_mount
@pytest.mark.parametrize("fraction", [0.03, pytest.param(0.6, marks=pytest.mark.slow), pytest.param(0.95, marks=pytest.mark.slow)])
def test_output_folder_on_a_full_disk(tmp_path, recipe, checkpoint_factory, artifact_bytes, fraction, hostile):
    """``--out`` on a tmpfs holding ``fraction`` of the artifact: the write fails part way, the error is
    one line naming the file, the disk is left empty; grown back, the same folder builds."""
    size = max(16384, int(artifact_bytes * fraction) // 4096 * 4096)
    row = hostile.case("Faults during a build: disk full", f"--out on a {size // 1024} KiB tmpfs ({fraction:.0%} of the fp32 artifact)",
                       expect="exit 2, one line 'No space left on device' naming the file; nothing left on the disk; then a build succeeds")
    disk = tmp_path / "disk"
    with small_disk(disk, size) as resize:
        build = Build(tmp_path, recipe, out=disk / "out", overrides=[])
        line = assert_clear_error(build.run(), "No space left on device")
        row.note(f"'{line[7:][-90:]}'")
        assert [p for p in disk.rglob("*") if p.is_file()] == [], "files left on the full disk"
        check_state(build, checkpoint_factory())
        resize(64 << 20)
        next_build_succeeds(build)


@needs_mount
def test_cache_folder_on_a_full_disk(tmp_path, recipe, checkpoint_factory, hostile):
    """``--cache-dir`` on a 64 KiB tmpfs: the calibration set (and any cached stage) cannot be stored."""
    row = hostile.case("Faults during a build: disk full", "--cache-dir on a 64 KiB tmpfs (int8 build: calibration set and stage outputs go there)",
                       expect="succeeds, or exit 2 in one line naming the cache; no partial entry; tmp/ prunable; then a build succeeds")
    disk = tmp_path / "disk"
    with small_disk(disk, 65536) as resize:
        build = Build(tmp_path, recipe, cache=disk / "cache")
        process = build.run()
        if process.returncode == 0:
            row.observe("build succeeded (nothing it caches was stored)")
        else:
            line = assert_clear_error(process, "No space left on device", "cannot write", "cannot store", "cache")
            row.observe("exit 2")
            row.note(f"'{line[7:][-100:]}'")
            assert not build.final.exists()
        for note in check_state(build, checkpoint_factory()):
            row.note(note)
        resize(256 << 20)
        next_build_succeeds(build)


@needs_mount
def test_build_needs_no_space_in_tmpdir(tmp_path, recipe, checkpoint_factory, hostile):
    """A build keeps its scratch files in the cache (see the cache test above for a full one), so a full
    ``TMPDIR`` (a 64 KiB tmpfs) neither fails it nor receives anything."""
    row = hostile.case("Faults during a build: disk full", "TMPDIR on a 64 KiB tmpfs (scratch files live in the cache's tmp/)",
                       expect="the build succeeds; under 4 KiB written to TMPDIR (by libraries); no scratch folder left")
    disk = tmp_path / "disk"
    with small_disk(disk, 65536):
        build = Build(tmp_path, recipe, scratch=disk, overrides=[])
        process = build.run()
        assert process.returncode == 0, process.stderr[-3000:]
        row.observe("built")
        # Libraries leave a few bytes (torch an empty torchinductor_<user>/, a 51-byte session file).
        ours = _files(disk, "rvc-compile-*") + _files(disk, "build-*")
        assert ours == [], f"the build left {ours} in TMPDIR"
        used = sum(p.stat().st_size for p in disk.rglob("*") if p.is_file())
        assert used < 4096, f"{used} bytes written to TMPDIR"
        assert _files(build.cache / "tmp", "build-*") == []
        check_state(build, checkpoint_factory())


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit then fail with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize("limit_kib", [256, pytest.param(1200, marks=pytest.mark.slow)])
def test_file_size_limit(tmp_path, recipe, checkpoint_factory, limit_kib, hostile):
    """RLIMIT_FSIZE in the build process (no privileges needed): any file written past the limit fails
    with EFBIG, wherever it is (scratch, cache, artifact)."""
    row = hostile.case("Faults during a build: disk full", f"RLIMIT_FSIZE of {limit_kib} KiB on the build process (writes fail with EFBIG)",
                       expect="exit 2, one line 'File too large'; no artifact, no partial cache entry; then a build without the limit succeeds")
    build = Build(tmp_path, recipe)
    line = assert_clear_error(build.run(preexec=_file_size_limit(limit_kib << 10)), "File too large")
    row.note(f"'{line[7:][-100:]}'")
    assert not build.final.exists() and not build.temporary_folders()
    for note in check_state(build, checkpoint_factory()):
        row.note(note)
    next_build_succeeds(build)


@pytest.mark.slow
def test_a_killed_build_leaves_no_scratch_folder_behind(tmp_path, recipe, hostile):
    row = hostile.case("Faults during a build: killed", "scratch folder of a killed build (in the cache's tmp/), after the next build",
                       expect="left by the kill, removed by the next build; nothing in TMPDIR")
    build = Build(tmp_path, recipe, overrides=[])
    row.note(kill_at(build, MARKERS["backend file written in the temp folder"]))
    left = _files(build.cache / "tmp", "build-*")
    assert left, "the killed build left no scratch folder: the kill came too late to test the sweep"
    next_build_succeeds(build)
    assert _files(build.cache / "tmp", "build-*") == [], "the next build did not sweep the dead build's scratch folder"
    assert _files(build.scratch, "rvc-compile-*") == []


@needs_mount
def test_infer_output_on_a_full_disk(tmp_path, tiny_artifact, hostile):
    """Not a build: the command line maps any full-disk write to the same one-line error."""
    import numpy as np

    from conftest import assert_user_error, run_cli

    hostile.case("Faults during a build: disk full", "`rvc-compile infer -o` writing its WAV to a 8 KiB tmpfs",
                 expect="exit 2, one line 'No space left on device' naming the output file")
    np.save(tmp_path / "features.npy", np.zeros((30, 768), np.float32))
    np.save(tmp_path / "f0.npy", np.full(30, 150.0, np.float32))
    disk = tmp_path / "disk"
    with small_disk(disk, 8192):
        process = run_cli("infer", tiny_artifact, "--features", tmp_path / "features.npy", "--f0", tmp_path / "f0.npy", "-o", disk / "out.wav")
        assert_user_error(process, "out.wav", "No space left on device")


def test_a_file_size_limit_inside_a_build_stage_gets_the_cache_advice(tmp_path, recipe, monkeypatch, hostile):
    """EFBIG (a file past ``ulimit -f``) raised by a stage's producer while it writes into the cache is
    reported like a full cache disk: one line naming the cache folder and ``rvc-compile cache prune``,
    not an artifact error; the error carries the errno and the file as fields; nothing partial is left."""
    import errno

    from click.testing import CliRunner

    from rvc_compile.cli import cli
    from rvc_compile.errors import CacheError

    row = hostile.case("Faults during a build: disk full", "EFBIG raised by the first cache stage's producer (in process)",
                       expect="exit 2, one line naming the cache folder and `rvc-compile cache prune`; no artifact; no partial cache entry")
    raised: list[OSError] = []
    produce = Store.get_or_create

    def too_large(self, key, producer, **options):
        def failing(folder: Path):
            (folder / "model.onnx").write_bytes(b"partial")
            raised.append(OSError(errno.EFBIG, "File too large", str(folder / "model.onnx")))
            raise raised[-1]
        return produce(self, key, failing if not raised else producer, **options)

    monkeypatch.setattr(Store, "get_or_create", too_large)
    cache, out = tmp_path / "cache", tmp_path / "out"
    result = CliRunner().invoke(cli, ["build", str(recipe), "--out", str(out), "--cache-dir", str(cache)])
    assert result.exit_code == 2 and raised, (result.exit_code, result.output[-2000:], result.exception)
    line = result.stderr.strip().splitlines()[-1]
    row.note(f"'{line[7:][-100:]}'")
    assert line.startswith(f"error: cache {cache}: cannot write the output of stage ") and "File too large" in line, line
    assert "rvc-compile cache prune" in line and "Traceback" not in result.stderr
    assert not (out / NAME / VERSION).exists()
    assert _files(cache / "tmp", "*") == [] and _files(cache / "stages", "*/*") == []

    from rvc_compile.build.pipeline import build
    from rvc_compile.recipe.schema import load_recipe

    raised.clear()
    with pytest.raises(CacheError) as caught:
        build(load_recipe(recipe), out_dir=out, cache_dir=cache, log=lambda message: None)
    assert caught.value.errno == errno.EFBIG and caught.value.root == cache and caught.value.no_space
    assert caught.value.path == Path(raised[0].filename)
