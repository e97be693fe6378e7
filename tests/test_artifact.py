"""Artifact folders: atomic commit, no overwrite without force, cleanup on failure, tamper detection."""

from __future__ import annotations

import json

import pytest

from rvc_compile.artifact.manifest import FORMAT_VERSION, MANIFEST, MANIFEST_DIGEST, ArtifactWriter, check_integrity, read_manifest, verify_or_raise
from rvc_compile.errors import ArtifactError

MINIMAL = {
    "backend": {"name": "onnxruntime", "files": {"model": "model.onnx"}},
    "model": {}, "signature": {}, "target": {}, "latency": {}, "accuracy_budget": {},
    "golden": [{"file": "golden/case.npz"}],
}


def make_artifact(root, version="1.0.0", force=False, payload=b"graph"):
    with ArtifactWriter(root, "voice", version, force=force) as writer:
        (writer.dir / "model.onnx").write_bytes(payload)
        (writer.dir / "golden").mkdir()
        (writer.dir / "golden" / "case.npz").write_bytes(b"golden")
        return writer.commit(dict(MINIMAL))


def test_commit_writes_hashed_manifest_and_leaves_no_temporary_folder(tmp_path):
    path = make_artifact(tmp_path)
    assert path == tmp_path / "voice" / "1.0.0"
    manifest = read_manifest(path)
    assert manifest["format_version"] == FORMAT_VERSION and manifest["name"] == "voice" and manifest["version"] == "1.0.0"
    assert set(manifest["files"]) == {"model.onnx", "golden/case.npz"}
    assert manifest["files"]["model.onnx"]["size"] == 5
    assert (path / MANIFEST_DIGEST).exists()
    assert check_integrity(path) == []
    assert [p.name for p in (tmp_path / "voice").iterdir()] == ["1.0.0"]


def test_an_exception_before_commit_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with ArtifactWriter(tmp_path, "voice", "1.0.0") as writer:
            (writer.dir / "model.onnx").write_bytes(b"half")
            raise RuntimeError("killed")
    assert not (tmp_path / "voice").exists()


def test_existing_version_needs_force_and_force_swaps_atomically(tmp_path):
    make_artifact(tmp_path, payload=b"one")
    with pytest.raises(ArtifactError, match="already exists"):
        make_artifact(tmp_path, payload=b"two")
    assert (tmp_path / "voice" / "1.0.0" / "model.onnx").read_bytes() == b"one"
    make_artifact(tmp_path, payload=b"two", force=True)
    assert (tmp_path / "voice" / "1.0.0" / "model.onnx").read_bytes() == b"two"
    assert [p.name for p in (tmp_path / "voice").iterdir()] == ["1.0.0"]


@pytest.mark.parametrize("version", ["1.0", "v1.0.0", "01.2.3", "1.0.0/../x"])
def test_versions_must_be_semver(tmp_path, version):
    with pytest.raises(ArtifactError, match="semantic version"):
        ArtifactWriter(tmp_path, "voice", version)


def test_every_kind_of_tampering_is_named(tmp_path, hostile):
    hostile.case("Tampering", "stand-in artifact: a file resized, a file rewritten, a file added, a file removed", count=4,
                 expect="check_integrity names each; verify_or_raise refuses unless allow_tampered=True")
    path = make_artifact(tmp_path)
    (path / "golden" / "case.npz").write_bytes(b"golden!")
    (path / "model.onnx").write_bytes(b"GRAPH")
    (path / "extra.bin").write_bytes(b"x")
    problems = check_integrity(path)
    assert any(p.startswith("golden/case.npz: size") for p in problems)
    assert any(p.startswith("model.onnx: sha256") for p in problems)
    assert any(p.startswith("extra.bin: not listed") for p in problems)
    (path / "golden" / "case.npz").unlink()
    assert any(p.startswith("golden/case.npz: missing") for p in check_integrity(path))
    with pytest.raises(ArtifactError, match="integrity check failed"):
        verify_or_raise(path)
    assert verify_or_raise(path, allow_tampered=True)["name"] == "voice"


def test_an_edited_manifest_is_detected(tmp_path):
    path = make_artifact(tmp_path)
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["accuracy_budget"] = {"min_snr_db": 0}
    (path / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    assert any(p.startswith("manifest.json: contents changed") for p in check_integrity(path))


@pytest.mark.parametrize("files", [{"../../etc/passwd": {"sha256": "0", "size": 1}}, {"/abs": {"sha256": "0", "size": 1}}])
def test_manifest_paths_that_escape_the_folder_are_refused(tmp_path, files, hostile):
    hostile.case("Tampering", f"manifest listing a file outside the artifact: {next(iter(files))}", expect="ArtifactError 'escapes'")
    path = make_artifact(tmp_path)
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["files"].update(files)
    (path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="escapes"):
        read_manifest(path)


@pytest.mark.parametrize("text,pattern", [("{", "not valid JSON"), ("[]", "JSON object"), ('{"format_version": 1}', "missing keys"),
                                          ("", "not valid JSON")])
def test_unusable_manifests_are_artifact_errors(tmp_path, text, pattern):
    (tmp_path / MANIFEST).write_text(text)
    with pytest.raises(ArtifactError, match=pattern):
        read_manifest(tmp_path)
    with pytest.raises(ArtifactError, match="no such artifact"):
        read_manifest(tmp_path / "absent")


# -- tampering with a real artifact (docs/RELIABILITY.md) -----------------------------------------

def _artifact_copy(source, destination):
    import shutil

    shutil.copytree(source, destination, symlinks=True)
    return destination


def _files(directory):
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


def _refused(directory, culprit: str) -> str:
    """verify names ``culprit`` (exit 1 via integrity problems, or 2 via an unusable manifest) and the
    runtime refuses to load; returns which exit code verify would give."""
    from rvc_compile import runtime
    from rvc_compile.verify.gates import verify_artifact

    names = {culprit, MANIFEST} if culprit == MANIFEST_DIGEST else {culprit}
    try:
        result = verify_artifact(directory, skip_latency=True)
    except ArtifactError as exc:
        assert any(name in str(exc) for name in names) and "\n" not in str(exc), (culprit, str(exc))
        code = "exit 2"
    else:
        assert not result["passed"] and not result["integrity"]["passed"], culprit
        assert any(problem.startswith(tuple(names)) for problem in result["integrity"]["problems"]), (culprit, result["integrity"]["problems"])
        code = "exit 1"
    with pytest.raises(ArtifactError) as info:
        runtime.load(directory)
    assert any(name in str(info.value) for name in names), (culprit, str(info.value))
    return code


def _opt_out(directory, row) -> None:
    """``allow_tampered=True`` loads past the hashes; what happens next depends on what was changed."""
    import numpy as np

    from rvc_compile import runtime
    from rvc_compile.errors import RvcCompileError

    try:
        voice = runtime.load(directory, allow_tampered=True)
        voice.infer(np.zeros((12, 768), np.float32), np.full(12, 150.0, np.float32))
        row.observe("opt-out: loads and runs")
    except RvcCompileError as exc:
        assert "integrity check failed" not in str(exc) and "\n" not in str(exc), str(exc)
        row.observe(f"opt-out: {type(exc).__name__}")


def _positions(size: int, rng, count: int) -> list[int]:
    if size <= 2 * count:
        return list(range(size))
    return sorted({0, size - 1, size // 2, *rng.integers(0, size, count).tolist()})


@pytest.mark.parametrize("exhaustive", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["sampled", "every-byte"])
def test_any_changed_byte_of_any_file_is_named_by_verify_and_refused_by_the_runtime(tmp_path, tiny_artifact, hostile, exhaustive):
    """Every file of a real artifact, the manifest and its digest included: a byte changed at the first,
    last, middle and 16 random positions (sampled), or at every position of the files under 8 KB
    (every-byte, slow); each change is undone before the next."""
    import numpy as np

    directory = _artifact_copy(tiny_artifact, tmp_path / "artifact")
    rng = np.random.default_rng(8)
    for name in _files(directory):
        path = directory / name
        original = path.read_bytes()
        if exhaustive and len(original) > 8192:
            continue
        positions = list(range(len(original))) if exhaustive else _positions(len(original), rng, 16)
        row = hostile.case("Tampering", f"one byte changed in {name} ({len(original)} bytes){'; every position' if exhaustive else ''}", count=0,
                           expect="verify names the file (exit 1, or 2 when the manifest no longer parses); runtime.load refuses")
        for position in positions:
            changed = bytearray(original)
            changed[position] ^= int(rng.integers(1, 256))
            path.write_bytes(bytes(changed))
            row.observe(_refused(directory, name))
            if not exhaustive and position in positions[:3]:
                _opt_out(directory, row)
            row.count += 1
        path.write_bytes(original)
    assert check_integrity(directory) == []


def test_added_removed_and_replaced_files_are_named(tmp_path, tiny_artifact, hostile):
    import os
    import shutil

    source_files = _files(tiny_artifact)
    for name in source_files:
        row = hostile.case("Tampering", f"file removed: {name}", expect="verify names it (exit 1; 2 for manifest.json); runtime.load refuses")
        directory = _artifact_copy(tiny_artifact, tmp_path / f"removed-{name.replace('/', '_')}")
        (directory / name).unlink()
        row.observe(_refused(directory, name))
        if name not in (MANIFEST,):
            _opt_out(directory, row)
        shutil.rmtree(directory)

    def add_root(d):
        (d / "extra.bin").write_bytes(b"x")
        return "extra.bin"

    def add_golden(d):
        (d / "golden" / "golden-9s.npz").write_bytes(b"x")
        return "golden/golden-9s.npz"

    def add_hidden(d):
        (d / ".DS_Store").write_bytes(b"\0")
        return ".DS_Store"

    def add_folder(d):
        (d / "plugins").mkdir()
        (d / "plugins" / "hook.py").write_text("import os\n")
        return "plugins/hook.py"

    def add_symlink_out(d):
        (d / "passwd").symlink_to("/etc/passwd")
        return "passwd"

    def replace_by_symlink(d):
        target = d.parent / f"{d.name}-outside.onnx"
        shutil.copyfile(d / "model.onnx", target)
        (d / "model.onnx").unlink()
        (d / "model.onnx").symlink_to(target)
        return "model.onnx"

    def replace_by_fifo(d):
        (d / "report.md").unlink()
        os.mkfifo(d / "report.md")
        return "report.md"

    def add_fifo(d):
        os.mkfifo(d / "pipe")
        return "pipe"

    def rename(d):
        (d / "report.md").rename(d / "REPORT.md")
        return "report.md"

    def truncate(d):
        (d / "model.onnx").write_bytes(b"")
        return "model.onnx"

    def append(d):
        with open(d / "golden" / "golden-0.1s.npz", "ab") as handle:
            handle.write(b"\0")
        return "golden/golden-0.1s.npz"

    def swap(d):
        model, report = (d / "model.onnx").read_bytes(), (d / "report.md").read_bytes()
        (d / "model.onnx").write_bytes(report)
        (d / "report.md").write_bytes(model)
        return "model.onnx"

    changes = {
        "file added at the root": add_root, "file added in golden/": add_golden, "hidden file added (.DS_Store)": add_hidden,
        "folder with a .py file added": add_folder, "symlink to /etc/passwd added": add_symlink_out,
        "model.onnx replaced by a symlink to an identical copy outside": replace_by_symlink, "report.md replaced by a named pipe": replace_by_fifo,
        "named pipe added": add_fifo, "report.md renamed": rename, "model.onnx truncated to 0 bytes": truncate, "a byte appended to the golden case": append,
        "model.onnx and report.md contents swapped": swap,
    }
    for description, change in changes.items():
        row = hostile.case("Tampering", description, expect="verify names the file (exit 1); runtime.load refuses; never blocks on a pipe")
        directory = _artifact_copy(tiny_artifact, tmp_path / description.replace(" ", "_").replace("/", "_"))
        culprit = change(directory)
        row.observe(_refused(directory, culprit))


def test_verify_command_exit_codes_on_tampered_artifacts(tmp_path, tiny_artifact, hostile):
    """The command line on a few of the cases above: exit 1 (or 2), the culprit named, no traceback."""
    from conftest import run_cli

    cases = {"model.onnx": "changed", "golden/golden-0.1s.npz": "removed", MANIFEST_DIGEST: "changed", MANIFEST: "changed"}
    hostile.case("Tampering", "`rvc-compile verify` process on: " + ", ".join(f"{name} {how}" for name, how in cases.items()), count=len(cases),
                 expect="exit 1 naming the file (exit 2 with one stderr line when manifest.json no longer parses); no traceback")
    for name, how in cases.items():
        directory = _artifact_copy(tiny_artifact, tmp_path / name.replace("/", "_"))
        path = directory / name
        if how == "removed":
            path.unlink()
        else:
            data = bytearray(path.read_bytes())
            data[len(data) // 3] ^= 0x20
            path.write_bytes(bytes(data))
        process = run_cli("verify", directory, "--skip-latency")
        assert process.returncode in (1, 2) and "Traceback" not in process.stderr, (name, process.returncode, process.stderr)
        assert name in process.stdout + process.stderr or (name == MANIFEST_DIGEST and MANIFEST in process.stdout), (name, process.stdout)
        if process.returncode == 2:
            assert len(process.stderr.strip().splitlines()) == 1
