"""pack / unpack: reproducible archives of intact artifacts, and archives that try to escape or lie are refused."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from rvc_compile.artifact.manifest import MANIFEST, ArtifactWriter, check_integrity
from rvc_compile.artifact.pack import pack, unpack
from rvc_compile.errors import ArtifactError

from conftest import assert_user_error, run_cli, write_tiny_recipe

FILES = {"model.onnx": b"onnx-graph" * 200, "golden/golden-0.5s.npz": b"golden" * 50, "report.md": b"# report\n"}


def make_artifact(root: Path, name: str = "voice", version: str = "1.0.0") -> Path:
    """A structurally complete artifact (what read_manifest requires) with small stand-in files."""
    with ArtifactWriter(root, name, version) as writer:
        for relative, data in FILES.items():
            (writer.dir / relative).parent.mkdir(parents=True, exist_ok=True)
            (writer.dir / relative).write_bytes(data)
        return writer.commit({
            "created": "2026-01-02T03:04:05Z",
            "backend": {"name": "onnxruntime", "files": {"model": "model.onnx"}},
            "model": {}, "signature": {}, "target": {}, "latency": {}, "accuracy_budget": {},
            "golden": [{"name": "golden-0.5s", "file": "golden/golden-0.5s.npz"}],
        })


@pytest.fixture()
def artifact(tmp_path) -> Path:
    return make_artifact(tmp_path / "artifacts")


def members_of(archive: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(archive, "r:gz") as tar:
        return tar.getmembers()


def write_archive(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def archive_of(artifact: Path, tmp_path: Path, *, extra: list[tuple[tarfile.TarInfo, bytes | None]] = (), change: dict[str, bytes] | None = None, prefix: str = "voice/1.0.0") -> Path:
    """An archive of ``artifact`` as pack would write it, with members added or their bytes changed."""
    members = []
    for path in sorted(artifact.rglob("*")):
        if path.is_file():
            relative = path.relative_to(artifact).as_posix()
            data = (change or {}).get(relative, path.read_bytes())
            members.append((tarfile.TarInfo(f"{prefix}/{relative}"), data))
    return write_archive(tmp_path / "crafted.tar.gz", members + list(extra))


def assert_nothing_extracted(out_dir: Path, tmp_path: Path) -> None:
    assert not out_dir.exists() or not any(out_dir.iterdir()), sorted(out_dir.rglob("*"))
    assert not list(tmp_path.rglob("evil*")), "a member was written outside the target"


# -- pack -----------------------------------------------------------------------------------------

def test_pack_is_reproducible_and_holds_exactly_the_artifact(artifact, tmp_path):
    first = pack(artifact, tmp_path / "a" / "voice.tar.gz")
    second = pack(artifact, tmp_path / "b" / "voice.tar.gz")
    assert first.path.read_bytes() == second.path.read_bytes() and first.sha256 == second.sha256
    members = members_of(first.path)
    names = [member.name for member in members]
    assert names[:2] == ["voice/1.0.0/manifest.json", "voice/1.0.0/manifest.sha256"]
    assert names[2:] == sorted(f"voice/1.0.0/{name}" for name in FILES)
    assert all(member.isreg() and member.uid == 0 and member.gid == 0 and member.uname == "" and member.mode == 0o644 for member in members)
    assert len({member.mtime for member in members}) == 1
    assert (first.name, first.version, first.files) == ("voice", "1.0.0", 5)
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]


def test_pack_refuses_a_tampered_artifact_and_writes_nothing(artifact, tmp_path):
    (artifact / "model.onnx").write_bytes(b"swapped graph")
    with pytest.raises(ArtifactError, match="refusing to pack a tampered artifact: model.onnx"):
        pack(artifact, tmp_path / "out" / "voice.tar.gz")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    (artifact / "model.onnx").write_bytes(FILES["model.onnx"])
    shutil.copyfile(artifact / "report.md", artifact / "extra.txt")
    with pytest.raises(ArtifactError, match="extra.txt: not listed"):
        pack(artifact, tmp_path / "voice.tar.gz")


def test_pack_refuses_to_write_into_the_artifact(artifact):
    with pytest.raises(ArtifactError, match="inside the artifact"):
        pack(artifact, artifact / "self.tar.gz")
    assert check_integrity(artifact) == []


# -- unpack ---------------------------------------------------------------------------------------

def test_round_trip_restores_every_file(artifact, tmp_path):
    packed = pack(artifact, tmp_path / "voice.tar.gz")
    restored = unpack(packed.path, tmp_path / "restored")
    assert restored == tmp_path / "restored" / "voice" / "1.0.0"
    assert check_integrity(restored) == []
    for path in artifact.rglob("*"):
        if path.is_file():
            assert (restored / path.relative_to(artifact)).read_bytes() == path.read_bytes()
    assert sorted(p.name for p in (tmp_path / "restored").iterdir()) == ["voice"]


def test_unpack_refuses_an_existing_version_unless_forced(artifact, tmp_path):
    packed = pack(artifact, tmp_path / "voice.tar.gz")
    restored = unpack(packed.path, tmp_path / "out")
    (restored / "report.md").write_bytes(b"local edit")
    with pytest.raises(ArtifactError, match="already exists"):
        unpack(packed.path, tmp_path / "out")
    assert (restored / "report.md").read_bytes() == b"local edit"
    assert unpack(packed.path, tmp_path / "out", force=True) == restored
    assert check_integrity(restored) == [] and (restored / "report.md").read_bytes() == FILES["report.md"]
    assert sorted(p.name for p in (tmp_path / "out" / "voice").iterdir()) == ["1.0.0"]


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


@pytest.mark.parametrize("member, data, message", [
    (_member("voice/1.0.0/../../evil.txt"), b"x", "contains '..'"),
    (_member("../evil.txt"), b"x", "contains '..'"),
    (_member("/tmp/evil-absolute.txt"), b"x", "absolute path"),
    (_member("voice/1.0.0/evil-link", tarfile.SYMTYPE, "/etc/passwd"), None, "symbolic link"),
    (_member("voice/1.0.0/evil-hard", tarfile.LNKTYPE, "voice/1.0.0/model.onnx"), None, "hard link"),
    (_member("voice/1.0.0/evil-dev", tarfile.CHRTYPE), None, "device file"),
    (_member("voice/1.0.0/evil-fifo", tarfile.FIFOTYPE), None, "FIFO"),
    (_member("voice/1.0.0/model.onnx"), b"second copy", "appears twice"),
    (_member("voice/1.0.0/MODEL.onnx"), b"case clash", "appears twice"),
    (_member("other/2.0.0/evil.txt"), b"x", "one archive holds one artifact version"),
    (_member("voice/1.0.0/evil-extra.txt"), b"x", "not listed in the manifest"),
])
def test_unpack_refuses_archives_that_escape_or_lie_and_extracts_nothing(artifact, tmp_path, member, data, message):
    archive = archive_of(artifact, tmp_path, extra=[(member, data)])
    out_dir = tmp_path / "out"
    with pytest.raises(ArtifactError) as caught:
        unpack(archive, out_dir)
    text = str(caught.value)
    assert message in text and str(archive) in text and "\n" not in text
    assert member.name.split("/")[-1] in text or message == "one archive holds one artifact version"
    assert_nothing_extracted(out_dir, tmp_path)


def test_unpack_refuses_a_member_whose_hash_differs_from_the_manifest(artifact, tmp_path):
    archive = archive_of(artifact, tmp_path, change={"model.onnx": b"onnx-graph" * 199 + b"evil-graph"})
    out_dir = tmp_path / "out"
    with pytest.raises(ArtifactError, match=r"member voice/1.0.0/model.onnx: sha256 differs from the manifest; nothing was extracted"):
        unpack(archive, out_dir)
    assert_nothing_extracted(out_dir, tmp_path)
    # A changed manifest (which would then "agree" with changed files) is caught by its digest.
    manifest = json.loads((artifact / MANIFEST).read_text())
    manifest["files"]["model.onnx"]["size"] += 1
    archive = archive_of(artifact, tmp_path, change={MANIFEST: json.dumps(manifest).encode()})
    with pytest.raises(ArtifactError, match="manifest.json"):
        unpack(archive, out_dir)
    assert_nothing_extracted(out_dir, tmp_path)


def test_unpack_refuses_archives_that_expand_too_far(artifact, tmp_path):
    packed = pack(artifact, tmp_path / "voice.tar.gz")
    with pytest.raises(ArtifactError, match="expands beyond 1000 bytes"):
        unpack(packed.path, tmp_path / "out", max_bytes=1000)
    with pytest.raises(ArtifactError, match="more than 3 members"):
        unpack(packed.path, tmp_path / "out", max_members=3)
    assert_nothing_extracted(tmp_path / "out", tmp_path)
    # A gzip bomb: a small file declaring a huge member is refused before any byte is written.
    bomb = tmp_path / "bomb.tar.gz"
    with gzip.open(bomb, "wb") as handle, tarfile.open(fileobj=handle, mode="w") as tar:
        info = tarfile.TarInfo("voice/1.0.0/model.onnx")
        info.size = 64 << 20
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(ArtifactError, match="expands beyond"):
        unpack(bomb, tmp_path / "out", max_bytes=1 << 20)
    assert_nothing_extracted(tmp_path / "out", tmp_path)


def test_unpack_refuses_garbage_truncated_and_empty_files(artifact, tmp_path):
    packed = pack(artifact, tmp_path / "voice.tar.gz")
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(packed.path.read_bytes()[: packed.size // 2])
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"this is not an archive" * 40)
    empty = write_archive(tmp_path / "empty.tar.gz", [])
    for bad, message in ((truncated, "not a readable"), (garbage, "not a readable"), (empty, "holds no artifact")):
        with pytest.raises(ArtifactError, match=message):
            unpack(bad, tmp_path / "out")
        assert_nothing_extracted(tmp_path / "out", tmp_path)


def test_pack_and_unpack_cli(artifact, tmp_path):
    archive = tmp_path / "voice-1.0.0.tar.gz"
    packed = run_cli("pack", artifact, "-o", archive)
    assert packed.returncode == 0, packed.stderr
    assert packed.stdout.strip().splitlines()[-1] == str(archive) and "sha256" in packed.stderr
    unpacked = run_cli("unpack", archive, "-o", tmp_path / "out")
    assert unpacked.returncode == 0, unpacked.stderr
    assert Path(unpacked.stdout.strip().splitlines()[-1]) == tmp_path / "out" / "voice" / "1.0.0"
    assert_user_error(run_cli("unpack", archive, "-o", tmp_path / "out"), "already exists")
    evil = write_archive(tmp_path / "evil.tar.gz", [(_member("../evil.txt"), b"x")])
    assert_user_error(run_cli("unpack", evil, "-o", tmp_path / "out2"), "evil.tar.gz", "'../evil.txt'")
    (artifact / "report.md").write_bytes(b"tampered")
    assert_user_error(run_cli("pack", artifact, "-o", tmp_path / "t.tar.gz"), "tampered", "report.md")


# -- a real built artifact ------------------------------------------------------------------------

def test_round_trip_of_a_real_built_artifact_runs_and_verifies(tmp_path, checkpoint_factory):
    import numpy as np

    from rvc_compile import runtime
    from rvc_compile.build.pipeline import build
    from rvc_compile.recipe.schema import load_recipe

    built = build(load_recipe(write_tiny_recipe(tmp_path, checkpoint_factory())), log=lambda message: None).path
    packed = pack(built, tmp_path / "dist" / "tiny-1.0.0.tar.gz")
    restored = unpack(packed.path, tmp_path / "elsewhere")
    assert check_integrity(restored) == []
    features, f0 = np.zeros((20, 768), np.float32), np.full(20, 150.0, np.float32)
    assert np.array_equal(runtime.load(restored).infer(features, f0), runtime.load(built).infer(features, f0))
    verified = run_cli("verify", restored, "--skip-latency")
    assert verified.returncode == 0, verified.stdout + verified.stderr
