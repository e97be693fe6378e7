"""Artifact folders: atomic commit, no overwrite without force, cleanup on failure, tamper detection."""

from __future__ import annotations

import json

import pytest

from rvc_compile.artifact import FORMAT_VERSION, MANIFEST, MANIFEST_DIGEST, ArtifactWriter, check_integrity, read_manifest, verify_or_raise
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


def test_every_kind_of_tampering_is_named(tmp_path):
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
def test_manifest_paths_that_escape_the_folder_are_refused(tmp_path, files):
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
