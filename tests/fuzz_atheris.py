"""Coverage-guided fuzzing of the readers of untrusted files with atheris (libFuzzer for Python).

    python tests/fuzz_atheris.py checkpoint|recipe|manifest ARTIFACT CORPUS_DIR [libFuzzer flags...]

ARTIFACT is a real artifact folder (the manifest target fuzzes a copy of it); CORPUS_DIR holds seeds
and receives the inputs that reach new code. Any exception other than the documented one-line
``RvcCompileError`` is a crash: libFuzzer stops, saves the input and exits non-zero.
``tests/test_fuzz.py::test_atheris_finds_no_crash`` runs each target for a minute (slow tests).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["rvc_compile"]):
    from rvc_compile.artifact.manifest import MANIFEST, check_integrity, check_sections, read_manifest
    from rvc_compile.components.synthesizer.checkpoint import load_checkpoint
    from rvc_compile.errors import RvcCompileError
    from rvc_compile.recipe.schema import load_recipe

WORK = Path(tempfile.mkdtemp(prefix="rvc-compile-atheris-"))


def expect_documented(call, *args) -> None:
    try:
        call(*args)
    except RvcCompileError as exc:
        message = str(exc)
        if not message or "\n" in message:
            raise AssertionError(f"not a one-line message: {message!r}") from exc


def fuzz_checkpoint(data: bytes) -> None:
    path = WORK / "input.pth"
    path.write_bytes(data)
    expect_documented(load_checkpoint, path)


def fuzz_recipe(data: bytes) -> None:
    path = WORK / "input.yaml"
    path.write_bytes(data)
    expect_documented(load_recipe, path)


def fuzz_manifest(data: bytes) -> None:
    directory = WORK / "artifact"
    (directory / MANIFEST).write_bytes(data)

    def read() -> None:
        manifest = read_manifest(directory)
        check_sections(manifest, directory)
        check_integrity(directory)

    expect_documented(read)


TARGETS = {"checkpoint": fuzz_checkpoint, "recipe": fuzz_recipe, "manifest": fuzz_manifest}


def main() -> None:
    target, artifact = sys.argv[1], Path(sys.argv[2])
    shutil.copytree(artifact, WORK / "artifact")
    try:
        atheris.Setup([sys.argv[0], *sys.argv[3:]], TARGETS[target])
        atheris.Fuzz()
    finally:
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
