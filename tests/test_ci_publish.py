"""docs/ci.md's pipeline, run for real: build -> verify -> pack -> unpack check -> publish, and nothing
published when a step fails."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rvc_compile.artifact.manifest import check_integrity
from rvc_compile.artifact.pack import unpack

from conftest import write_tiny_recipe

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "ci_publish.sh"


def run_script(recipe: Path, publish: Path, work: Path, *, command: str | None = None, **env: str) -> subprocess.CompletedProcess:
    environment = {
        **os.environ,
        "RVC_COMPILE": command or f"{sys.executable} -m rvc_compile.cli",
        "RVC_COMPILE_CACHE": str(work / "cache"),
        "DIST_DIR": str(work / "dist"),
        "VERIFY_ARGS": "--skip-latency",
        **env,
    }
    return subprocess.run(["bash", str(SCRIPT), str(recipe), str(publish)], capture_output=True, text=True, cwd=work, env=environment)


@pytest.fixture(scope="module")
def published(tmp_path_factory, checkpoint_factory):
    work = tmp_path_factory.mktemp("ci")
    recipe = write_tiny_recipe(work, checkpoint_factory(), name="ci-voice")
    process = run_script(recipe, work / "release", work)
    return work, process


@pytest.mark.slow  # one real build, verify, pack and unpack: about 20 s on 2 cores
def test_the_pipeline_publishes_a_verified_tarball(published):
    work, process = published
    assert process.returncode == 0, process.stderr
    tarball = work / "release" / "ci-voice-1.0.0.tar.gz"
    assert process.stdout.strip().splitlines()[-1] == str(tarball)
    assert "PASS" in process.stdout  # verify ran and passed before anything was published
    checksum = (work / "release" / "ci-voice-1.0.0.tar.gz.sha256").read_text().split()
    assert checksum == [hashlib.sha256(tarball.read_bytes()).hexdigest(), "ci-voice-1.0.0.tar.gz"]
    assert sorted(p.name for p in (work / "release").iterdir()) == ["ci-voice-1.0.0.tar.gz", "ci-voice-1.0.0.tar.gz.sha256"]
    restored = unpack(tarball, work / "consumer")
    assert check_integrity(restored) == []


@pytest.mark.slow  # shares the build above
def test_nothing_is_published_when_verify_fails(published, tmp_path):
    """A real verify on a tampered copy of the built artifact; only 'build' is stubbed to return that copy."""
    work, process = published
    assert process.returncode == 0, process.stderr
    tampered = tmp_path / "artifacts" / "ci-voice" / "1.0.0"
    shutil.copytree(work / "artifacts" / "ci-voice" / "1.0.0", tampered)
    (tampered / "report.md").write_text("edited after the build\n")
    wrapper = tmp_path / "rvc_compile_wrapper.py"
    wrapper.write_text(
        "import subprocess, sys\n"
        f"if sys.argv[1] == 'build':\n    print({str(tampered)!r})\n    sys.exit(0)\n"
        "sys.exit(subprocess.call([sys.executable, '-m', 'rvc_compile.cli', *sys.argv[1:]]))\n"
    )
    failed = run_script(work / "ci-voice.yaml", tmp_path / "release", tmp_path, command=f"{sys.executable} {wrapper}")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "report.md" in failed.stdout
    assert not (tmp_path / "release").exists() and not (tmp_path / "dist").exists()


def test_nothing_is_published_when_the_build_fails(tmp_path, checkpoint_factory):
    recipe = write_tiny_recipe(tmp_path, checkpoint_factory(), name="broken")
    recipe.write_text(recipe.read_text().replace("threads: 1", "threads: 1\n  thread: 2"))
    failed = run_script(recipe, tmp_path / "release", tmp_path)
    assert failed.returncode == 2 and "target.thread" in failed.stderr
    assert not (tmp_path / "release").exists() and not (tmp_path / "dist").exists()


def test_the_documented_workflow_runs_the_script_with_a_cache_and_publishes_after_it():
    text = (ROOT / "docs" / "ci.md").read_text()
    workflow = yaml.safe_load(re.search(r"```yaml\n(.*?)```", text, re.S).group(1))
    steps = next(iter(workflow["jobs"].values()))["steps"]
    names = [step.get("name", step.get("uses", "")) for step in steps]
    cache = next(index for index, step in enumerate(steps) if step.get("uses", "").startswith("actions/cache"))
    script = next(index for index, step in enumerate(steps) if "scripts/ci_publish.sh" in step.get("run", ""))
    upload = next(index for index, step in enumerate(steps) if step.get("uses", "").startswith("actions/upload-artifact"))
    assert cache < script < upload, names
    assert steps[cache]["with"]["path"] in next(iter(workflow["jobs"].values()))["env"]["RVC_COMPILE_CACHE"]
    assert "if" not in steps[script] and "if" not in steps[upload]  # publishing runs only on success
