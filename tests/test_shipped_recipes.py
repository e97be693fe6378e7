"""Every recipe in recipes/ builds and verifies (on a small model of the same format, for speed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import assert_user_error, run_cli

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


def test_every_target_has_a_recipe():
    names = {path.stem for path in RECIPES}
    for backend, precisions in {"onnxruntime": ("fp32", "fp16", "int8"), "openvino": ("fp32", "bf16", "int8")}.items():
        for precision in precisions:
            assert f"cpu-{precision}-{backend}" in names


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES, ids=[path.stem for path in RECIPES])
def test_shipped_recipe_builds_and_verifies(recipe, checkpoint_factory, tmp_path):
    from rvc_compile.machine import machine_isa

    checkpoint = checkpoint_factory("v2", "40k", True)
    # int8 recipes as on any AVX2 CPU (the other voices: tests/test_isa.py); one latency length is enough here.
    portable = ["--set", "target.cpu=portable"] if "int8" in recipe.stem else []
    built = run_cli(
        "build", recipe, "--set", f"source.checkpoint={checkpoint}", "--out", tmp_path,
        "--set", "latency.repeat=1", "--set", "latency.warmup=0", "--set", "latency.seconds=[0.5]", "--set", "latency.goals=[]", *portable,
    )
    if "bf16" in recipe.stem and not machine_isa().native_bf16:
        # Refused up front on a CPU that would only emulate bf16, with nothing written.
        assert_user_error(built, "target.precision", "native bf16")
        assert not any(tmp_path.iterdir())
        return
    assert built.returncode == 0, built.stderr
    artifact = Path(built.stdout.strip().splitlines()[-1])
    verified = run_cli("verify", artifact, "--json", "--skip-latency")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    result = json.loads(verified.stdout)
    assert result["integrity"]["passed"] and result["accuracy"]["passed"]
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["target"]["precision"] == manifest["precision"]["precision"]
