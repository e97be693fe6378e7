"""Run a backend's graph in a child process that dispatches as on an older CPU class.

oneDNN (OpenVINO's CPU plugin) reads ``ONEDNN_MAX_CPU_ISA`` once, when it generates its first kernel, so
a build that must check an artifact "as on an AVX2 CPU" on a newer machine runs those checks in a child
process with that cap set (``machine.emulation_env``). The child imports numpy and the backend only.

    python -m rvc_compile.backends.emulated ARTIFACT_DIR BACKEND.json THREADS INPUTS.npz OUTPUT.npy
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BuildError


class EmulatedRunner:
    """``run(feed) -> audio`` like a backend runner, each call in a fresh child process under ``env``."""

    def __init__(self, artifact_dir: Path, backend: dict[str, Any], threads: int, env: dict[str, str]):
        self.artifact_dir, self.backend, self.threads, self.env = Path(artifact_dir), backend, int(threads), dict(env)

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        with tempfile.TemporaryDirectory(prefix="rvc-compile-emulated-") as scratch:
            section, feed, output = Path(scratch, "backend.json"), Path(scratch, "inputs.npz"), Path(scratch, "output.npy")
            section.write_text(json.dumps(self.backend))
            np.savez(feed, **inputs)
            process = subprocess.run(
                [sys.executable, "-m", __name__, str(self.artifact_dir), str(section), str(self.threads), str(feed), str(output)],
                capture_output=True, text=True, env={**os.environ, **self.env},
            )
            if process.returncode != 0 or not output.exists():
                detail = (process.stderr.strip().splitlines() or ["no output"])[-1]
                caps = " ".join(f"{k}={v}" for k, v in self.env.items())
                raise BuildError(f"running the graph under {caps} failed: {detail[:300]}")
            return np.load(output, allow_pickle=False)


def main(argv: list[str] | None = None) -> None:
    from . import get_backend

    artifact_dir, section_path, threads, feed_path, output_path = (argv or sys.argv[1:])[:5]
    section = json.loads(Path(section_path).read_text())
    runner = get_backend(section["name"], for_build=False).load(Path(artifact_dir), section, threads=int(threads))
    with np.load(feed_path, allow_pickle=False) as feed:
        inputs = {name: feed[name] for name in feed.files}
    np.save(output_path, np.asarray(runner.run(inputs)))


if __name__ == "__main__":
    main()
