"""A voice's retrieval index (RVC's ``.index``): content features blended with their nearest neighbours
among the training set's features, exactly as RVC's ``Pipeline.vc`` does. faiss is imported on use
(``pip install rvc-compile[index]``, or faiss-cpu).

RVC trains an IVF-Flat index (``IVF<n>,Flat``, L2, ``nprobe`` 1, saved with it) on the training set's
features and reads all of them back with ``reconstruct_n``. For each frame it takes the k = 8 nearest
vectors (squared L2 distances ``score``), weights them by ``1 / score**2`` normalised to sum 1, and mixes
their weighted mean with the frame: ``mean * index_rate + frame * (1 - index_rate)``, in float32.

Two cases where RVC's arithmetic gives NaN are defined here instead:
- a distance of 0 (the frame is one of the index's vectors: ``1 / 0`` is inf, and inf / inf NaN), or one
  so small that its weight overflows float32: the exact matches share the weight equally and the others
  get none, which is the limit of RVC's weights as the distance goes to 0;
- a frame with no neighbour at all (an IVF index whose probed lists are empty returns label -1 for all
  k), or whose neighbours are all so far that every weight underflows to 0: the frame is kept as it is. Missing neighbours among found ones (fewer than 8 vectors probed)
  come with faiss's largest float distance, so their weight is 0, as in RVC.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, first_line

NEIGHBOURS = 8  # RVC's k
FEATURE_VERSIONS = {256: "v1", 768: "v2"}


def _import_faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise InputError("a retrieval index needs faiss, which is not installed: pip install rvc-compile[index] (or faiss-cpu)") from None
    return faiss


def _dim_name(dim: int) -> str:
    version = FEATURE_VERSIONS.get(int(dim))
    return f"{dim}-dim ({version})" if version else f"{dim}-dim"


@dataclass
class RetrievalIndex:
    """A loaded faiss index and its vectors (``vectors``: RVC's ``big_npy``, float32 [size, feature_dim])."""

    index: Any
    vectors: np.ndarray
    feature_dim: int
    path: Path | None = None

    @property
    def size(self) -> int:
        return int(self.vectors.shape[0])

    @classmethod
    def load(cls, path: str | Path, feature_dim: int) -> "RetrievalIndex":
        """Read RVC's ``.index`` for a voice that takes ``feature_dim``-dim features (v1 256, v2 768).

        One-line ``InputError`` naming the file: faiss missing, no such file, not a faiss index, another
        dimension, no vectors (RVC's ``trained_*.index`` holds none: its ``added_*.index`` does)."""
        faiss = _import_faiss()
        path = Path(path)
        if not path.exists():
            raise InputError.about(path, "no such index file")
        if path.is_dir():
            raise InputError.about(path, "is a folder, not a faiss .index file")
        try:
            index = faiss.read_index(str(path))
        except (RuntimeError, MemoryError, OSError) as exc:
            raise InputError.about(path, f"not a faiss index file ({_faiss_reason(exc)})") from None
        if int(index.d) != int(feature_dim):
            raise InputError.about(path, f"a {_dim_name(index.d)} index, but the voice takes {_dim_name(feature_dim)} features")
        if int(index.ntotal) == 0:
            raise InputError.about(path, "the index holds no vectors (RVC's trained_*.index is empty; use its added_*.index)")
        try:
            vectors = np.ascontiguousarray(index.reconstruct_n(0, index.ntotal), dtype=np.float32)
        except RuntimeError as exc:
            raise InputError.about(path, f"the index cannot give back its vectors ({_faiss_reason(exc)})") from None
        return cls(index=index, vectors=vectors, feature_dim=int(feature_dim), path=path)

    @classmethod
    def from_index(cls, index: Any, feature_dim: int | None = None) -> "RetrievalIndex":
        """An index already in memory (a faiss index with vectors)."""
        dim = int(index.d) if feature_dim is None else int(feature_dim)
        if int(index.d) != dim:
            raise InputError(f"retrieval index: a {_dim_name(index.d)} index, but the voice takes {_dim_name(dim)} features")
        if int(index.ntotal) == 0:
            raise InputError("retrieval index: the index holds no vectors")
        return cls(index=index, vectors=np.ascontiguousarray(index.reconstruct_n(0, index.ntotal), dtype=np.float32), feature_dim=dim)

    def neighbours(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """faiss's ``search(features, k=8)``: squared L2 distances float32 [T, 8] and labels int64 [T, 8]."""
        score, ix = self.index.search(self._features(features), NEIGHBOURS)
        return np.asarray(score, dtype=np.float32), np.asarray(ix, dtype=np.int64)

    def blend(self, features: np.ndarray, index_rate: float) -> np.ndarray:
        """RVC's retrieval step on features float32 [T, C] -> float32 [T, C] (module docstring)."""
        features = self._features(features)
        if features.shape[0] == 0:
            return features.copy()
        score, ix = self.neighbours(features)
        found = ix >= 0
        with np.errstate(divide="ignore", over="ignore"):
            weight = np.square(np.float32(1) / score)  # float32, as RVC (faiss's scores are float32)
        exact = np.isinf(weight) & found
        has_exact = exact.any(axis=1)
        weight[~found] = 0  # label -1: faiss's padding; its huge distance already gives (nearly) 0
        weight[has_exact] = exact[has_exact].astype(np.float32)
        total = weight.sum(axis=1, keepdims=True)
        alone = total[:, 0] == 0  # no neighbour: keep the frame
        weight[alone] = 0
        weight /= np.where(total == 0, np.float32(1), total)
        neighbours = self.vectors[np.where(found, ix, 0)]  # [T, 8, C]
        mean = np.sum(neighbours * weight[..., None], axis=1, dtype=np.float32)
        mean[alone] = features[alone]
        rate = float(index_rate)
        return (mean * np.float32(rate) + np.float32(1 - rate) * features).astype(np.float32, copy=False)

    def _features(self, features: np.ndarray) -> np.ndarray:
        features = np.ascontiguousarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            where = self.path if self.path is not None else "retrieval index"
            raise InputError(f"{where}: features {list(features.shape)} do not match the index's [frames, {self.feature_dim}]")
        return features


def _faiss_reason(exc: BaseException) -> str:
    """faiss's messages span lines ("Error in ... at ...: Error: 'msg' failed"): the line that says why."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "Error:" in line:
            return line.split("Error:", 1)[1].strip()[:160]
    return first_line(exc, default=type(exc).__name__)
