"""Golden cases stored in an artifact: user-level inputs and the fp32 reference output, one .npz each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def save_case(path: Path, arrays: dict[str, Any]) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, **{k: np.asarray(v) for k, v in arrays.items()})


def load_case(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
