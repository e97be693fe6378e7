"""Run a backend's graph in a child process that dispatches as on an older CPU class.

oneDNN (OpenVINO's CPU plugin) reads ``ONEDNN_MAX_CPU_ISA`` once, when it generates its first kernel, so
a build that must check an artifact "as on an AVX2 CPU" on a newer machine runs those checks in a child
process with that cap set (``machine.emulation_env``). The child is an ``rvc_compile.worker`` serving a
``GraphServer``: it imports numpy and the backend only, loads the graph once and runs every call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BuildError
from ..worker import Worker, WorkerError


class GraphServer:
    """The child's side: the backend's runner for the artifact's graph."""

    def __init__(self, artifact_dir: str, backend: dict[str, Any], threads: int):
        from . import get_backend

        self.runner = get_backend(backend["name"], for_build=False).load(Path(artifact_dir), backend, threads=int(threads))

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self.runner.run(inputs))


class EmulatedRunner:
    """``run(feed) -> audio`` like a backend runner, in a child process under ``env``.

    The child starts at the first call and serves every later one; ``close()`` (or leaving a ``with``
    block, or dropping the runner) ends it. A child that died is started afresh at the next call.
    """

    def __init__(self, artifact_dir: Path, backend: dict[str, Any], threads: int, env: dict[str, str]):
        self.artifact_dir, self.backend, self.threads, self.env = Path(artifact_dir), backend, int(threads), dict(env)
        self._worker: Worker | None = None

    def __enter__(self) -> "EmulatedRunner":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        try:
            if self._worker is None:
                self._worker = Worker(
                    f"{__name__}:GraphServer", str(self.artifact_dir), self.backend, self.threads, env=self.env,
                    name=f"graph under {self.caps}",
                )
            return self._worker.call("run", inputs=inputs)
        except WorkerError as exc:
            if self._worker is not None and (exc.died or not self._worker.started):  # the next call starts a fresh child
                self.close()
            raise BuildError(f"running the graph under {self.caps} failed: {exc.failure.last_line[:300]}") from None

    @property
    def caps(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.env.items())

    def close(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
