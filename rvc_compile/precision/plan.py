"""Precision policies: which layers run in which precision, the same policy for every backend.

A policy is not a blanket cast. Whatever the target precision (fp16, bf16 or int8):
- the NSF sine source is computed on the host in float64 (the ``host_source`` pass; its phase
  accumulation over every output sample cannot survive bf16/fp16, and int8 cannot represent it);
- layers listed in ``precision_policy.keep_fp32`` (module paths, see ``rvc_compile.precision.layers``) stay fp32;
- for int8, layers that accuracy-aware quantization finds too sensitive stay fp32 as well.

Backends apply a ``PrecisionPlan`` with thin adapters: ONNX Runtime converts the graph to fp16 with fp32
islands or inserts QDQ pairs everywhere but the islands; OpenVINO compiles with an explicit inference
precision hint or quantizes with NNCF, ignoring the islands.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# What each backend can run, by device; anything else is refused before any work is done.
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


@dataclass
class PrecisionPlan:
    """Everything a backend needs to produce a graph in the target precision."""

    precision: str  # fp32 | fp16 | bf16 | int8
    layers: list[str] = field(default_factory=list)  # every weighted layer of the graph, in graph order
    keep_fp32: list[str] = field(default_factory=list)  # resolved layer names that stay fp32
    calibration: list[dict[str, np.ndarray]] = field(default_factory=list)  # graph feeds (int8)
    calibration_method: str = "minmax"
    per_channel: bool = True
    # int8 weights: 8 bits need VNNI; 7 keep every u8 x s8 pair sum inside vpmaddubsw's 16 bits on CPUs
    # without it (machine.int8_weight_bits of the target's ISA class).
    weight_bits: int = 8

    @property
    def low_precision_layers(self) -> list[str]:
        if self.precision == "fp32":
            return []
        return [name for name in self.layers if name not in self.keep_fp32]

    def summary(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "layers": len(self.layers),
            "low_precision_layers": len(self.low_precision_layers),
            "keep_fp32": list(self.keep_fp32),
            "calibration_cases": len(self.calibration),
            "calibration_method": self.calibration_method if self.precision == "int8" else None,
            "per_channel": self.per_channel if self.precision == "int8" else None,
            "weight_bits": self.weight_bits if self.precision == "int8" else None,
        }
