"""Shared fixtures: small official-format checkpoints (random weights) and a CLI runner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from rvc_compile.components.synthesizer.synthetic import make_checkpoint


@pytest.fixture(autouse=True, scope="session")
def isolated_build_cache(tmp_path_factory):
    """Builds in tests (and the CLI subprocesses they start) use a session-private build cache, never
    the user's: tests must not depend on, or leave entries in, ~/.cache/rvc-compile."""
    import os

    previous = os.environ.get("RVC_COMPILE_CACHE")
    os.environ["RVC_COMPILE_CACHE"] = str(tmp_path_factory.mktemp("build-cache"))
    yield Path(os.environ["RVC_COMPILE_CACHE"])
    if previous is None:
        os.environ.pop("RVC_COMPILE_CACHE", None)
    else:
        os.environ["RVC_COMPILE_CACHE"] = previous


@pytest.fixture(scope="session")
def checkpoint_factory(tmp_path_factory) -> Callable[..., Path]:
    """``factory(version="v2", sample_rate="40k", f0=True, **options)`` -> a cached small checkpoint."""
    cache: dict[tuple, Path] = {}
    root = tmp_path_factory.mktemp("checkpoints")

    def factory(version: str = "v2", sample_rate: str = "40k", f0: bool = True, **options) -> Path:
        options.setdefault("size", "small")
        key = (version, sample_rate, f0, tuple(sorted(options.items())))
        if key not in cache:
            name = "_".join([version, sample_rate, "f0" if f0 else "nof0"] + [f"{k}-{v}" for k, v in sorted(options.items())])
            cache[key] = make_checkpoint(root / f"{name}.pth", version=version, sample_rate=sample_rate, f0=f0, **options)
        return cache[key]

    return factory


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``rvc-compile ARGS`` in a fresh interpreter, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "rvc_compile.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def assert_user_error(process: subprocess.CompletedProcess, *fragments: str, exit_code: int = 2) -> None:
    """The documented failure: the exit code, one line on stderr naming the problem, no traceback."""
    assert process.returncode == exit_code, (process.returncode, process.stdout, process.stderr)
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1, process.stderr
    assert "Traceback" not in process.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


TINY_RECIPE = """
name: {name}
version: 1.0.0
source:
  checkpoint: {checkpoint}
target:
  backend: onnxruntime
  device: cpu
  precision: fp32
  threads: 1
shapes:
  mode: dynamic
  min_frames: 8
  opt_frames: 16
  max_frames: 32
capture:
  exporter: torchscript
passes: []
latency:
  seconds: [0.1]
  repeat: 1
  warmup: 0
golden:
  seconds: [0.1]
  noise: seed:3
output_dir: {output}
"""


def write_tiny_recipe(directory: Path, checkpoint: Path, name: str = "tiny") -> Path:
    """The quickest real build: a small checkpoint, short lengths, no passes (about 10 s on 2 cores)."""
    path = directory / f"{name}.yaml"
    path.write_text(TINY_RECIPE.format(name=name, checkpoint=checkpoint, output=directory / "artifacts"))
    return path


def assert_build_error(process: subprocess.CompletedProcess, *fragments: str, exit_code: int = 2) -> None:
    """A build that fails after some stages: progress lines, then the one-line error last, no traceback."""
    assert process.returncode == exit_code, (process.returncode, process.stdout, process.stderr)
    assert "Traceback" not in process.stderr
    last = process.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), last
    for fragment in fragments:
        assert fragment in last, (fragment, last)
# -- hostile inputs and faults (docs/RELIABILITY.md) ------------------------------------------------

pytest_plugins = ["reliability_report"]  # the ``hostile`` fixture and --reliability-report


def build_tiny(directory: Path, checkpoint: Path, *, name: str = "tiny", backend: str = "onnxruntime") -> Path:
    """A real artifact of the tiny recipe, built in this process (about 10 s). OpenVINO gets the
    host_source pass, as the shipped OpenVINO recipes do."""
    from rvc_compile.build.pipeline import build
    from rvc_compile.recipe.schema import load_recipe

    recipe_path = write_tiny_recipe(directory, checkpoint, name=name)
    overrides = [f"target.backend={backend}"] + (["passes=[{name: host_source}]"] if backend == "openvino" else [])
    return build(load_recipe(recipe_path, overrides), cache_dir=directory / "cache", log=lambda message: None).path


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory, checkpoint_factory) -> Path:
    """A real onnxruntime artifact (small model, 8..32 frames); treat it as read-only (copy to change it)."""
    return build_tiny(tmp_path_factory.mktemp("tiny-ort"), checkpoint_factory(), name="tiny-ort")


@pytest.fixture(scope="session")
def tiny_openvino_artifact(tmp_path_factory, checkpoint_factory) -> Path:
    """The same model as an OpenVINO fp32 artifact; read-only."""
    return build_tiny(tmp_path_factory.mktemp("tiny-ov"), checkpoint_factory(), name="tiny-ov", backend="openvino")
