"""The README's main command: build the bundled example recipe, verify the artifact, run it; then build
the demo's conversion bundle around the same voice, verify it and convert real speech with it.

A v2 40k checkpoint with random weights stands in for a user's voice (no real RVC weights can be had
here); the features and pitch come from the real data bundled in ``calibration/data``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "out" / "demo"


def demo_inputs() -> tuple[np.ndarray, np.ndarray]:
    """Real v2 content features (RVC's silence features, upsampled 2x) and a speech-like pitch contour."""
    features = np.load(ROOT / "rvc_compile" / "data" / "mute_feature768.npy").astype(np.float32)
    features = np.repeat(features, 2, axis=0)  # 50 -> 100 frames/s, as RVC's pipeline does
    frames = features.shape[0]
    t = np.arange(frames) / 100.0
    f0 = (180.0 + 30.0 * np.sin(2 * np.pi * 0.7 * t) + 4.0 * np.sin(2 * np.pi * 5.5 * t)).astype(np.float32)
    f0[(t > 1.2) & (t < 1.45)] = 0.0  # an unvoiced gap
    return features, f0


def run(*args: str) -> None:
    print("$ rvc-compile " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "rvc_compile.cli", *args], check=True)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    checkpoint = OUT / "demo_voice_v2_40k.pth"
    if not checkpoint.exists():
        run("make-checkpoint", str(checkpoint), "--version", "v2", "--sample-rate", "40k", "--seed", "7")
    features, f0 = demo_inputs()
    np.save(OUT / "features.npy", features)
    np.save(OUT / "f0.npy", f0)
    run("inspect", str(checkpoint))
    recipe = ROOT / "recipes" / "demo.yaml"
    print(f"$ rvc-compile build {recipe} --force", flush=True)
    built = subprocess.run([sys.executable, "-m", "rvc_compile.cli", "build", str(recipe), "--force"], check=True, stdout=subprocess.PIPE, text=True)
    artifact = built.stdout.strip().splitlines()[-1]
    print(artifact, flush=True)
    run("verify", artifact)
    run("infer", artifact, "--features", str(OUT / "features.npy"), "--f0", str(OUT / "f0.npy"), "-o", str(OUT / "converted.wav"))

    # The whole conversion: content encoder and RMVPE (random weights in the official formats) around the
    # same voice, one bundle, real speech in (docs/CONVERT.md).
    if not (OUT / "contentvec" / "config.json").exists():
        run("make-encoder", str(OUT / "contentvec"), "--size", "base")
    if not (OUT / "rmvpe.pt").exists():
        run("make-rmvpe", str(OUT / "rmvpe.pt"))
    pipeline_recipe = ROOT / "recipes" / "pipeline" / "demo-pipeline.yaml"
    print(f"$ rvc-compile build {pipeline_recipe} --force", flush=True)
    built = subprocess.run([sys.executable, "-m", "rvc_compile.cli", "build", str(pipeline_recipe), "--force"], check=True, stdout=subprocess.PIPE, text=True)
    bundle = built.stdout.strip().splitlines()[-1]
    print(bundle, flush=True)
    run("verify", bundle, "--skip-latency")
    speech = ROOT / "calibration" / "data" / "arctic_a0001.wav"
    run("convert", bundle, str(speech), "-o", str(OUT / "converted-speech.wav"), "--pitch", "2")
    print(f"\nartifact: {artifact}\nreport:   {artifact}/report.md\naudio:    {OUT / 'converted.wav'}"
          f"\nbundle:   {bundle}\nspeech:   {speech} -> {OUT / 'converted-speech.wav'}")


if __name__ == "__main__":
    main()
