"""Long inputs in overlapped windows: cost linear in the input length, memory bounded by the window.

A window runs the graph on ``frames`` input frames: its own stretch of the input plus ``context``
frames on each side that it does not keep (the encoder's attention and every convolution look that far
without seeing a cut). Adjacent windows overlap by ``2 * crossfade`` kept frames, blended with a linear
crossfade so no seam is audible. Every per-frame input (features, f0, prior noise) and per-sample input
(the host-side NSF excitation) is sliced from the whole input, so the noise and the sine phase are those
of a whole-input run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

# Time axis of every graph input, and whether it counts frames or output samples.
TIME_AXES = {"features": (1, False), "f0": (1, False), "prior_noise": (2, False), "source_noise": (1, True), "excitation": (1, True)}


@dataclass(frozen=True)
class WindowPlan:
    frames: int  # frames per graph call (every window but the last has exactly this many)
    context: int  # frames on each side a window sees but does not keep
    crossfade: int  # frames over which two windows blend

    @property
    def step(self) -> int:
        """Kept frames per full window in the middle of an input (the distance between window starts)."""
        return self.frames - 2 * self.context - self.crossfade

    def validate(self) -> None:
        if self.context < 0 or self.crossfade < 0 or self.step < 1:
            raise ValueError(f"window of {self.frames} frames cannot hold context {self.context} x 2 and crossfade {self.crossfade}")

    def spans(self, total: int, min_frames: int = 1) -> list[tuple[int, int, int, int]]:
        """(input start, input end, kept start, kept end) per window; kept ranges overlap by ``crossfade``.

        Full windows of ``frames`` step along the input (the length an OpenVINO artifact compiles
        statically); the last window is only as long as what is left needs (at least ``min_frames``),
        so the work is the input plus the overlaps, not a multiple of the window.
        """
        if total <= self.frames:
            return [(0, total, 0, total)]
        spans = []
        kept_start = 0
        while True:
            start = max(0, kept_start - self.context)
            if start + self.frames >= total:
                start = max(0, min(start, total - min_frames))
                spans.append((start, total, kept_start, total))
                return spans
            end = start + self.frames
            kept_end = end - self.context
            spans.append((start, end, kept_start, kept_end))
            kept_start = kept_end - self.crossfade


def slice_inputs(feed: dict[str, np.ndarray], start: int, end: int, hop_length: int) -> dict[str, np.ndarray]:
    out = {}
    for name, array in feed.items():
        if name not in TIME_AXES:
            out[name] = array
            continue
        axis, per_sample = TIME_AXES[name]
        scale = hop_length if per_sample else 1
        index = [slice(None)] * array.ndim
        index[axis] = slice(start * scale, end * scale)
        out[name] = np.ascontiguousarray(array[tuple(index)])
    return out


def run_windowed(
    run: Callable[[dict[str, np.ndarray]], np.ndarray], feed: dict[str, np.ndarray], plan: WindowPlan, hop_length: int, min_frames: int = 1,
) -> np.ndarray:
    """Audio float32 [T * hop] for ``feed`` (graph inputs of T frames), one window at a time."""
    total = int(feed["features"].shape[1])
    spans = plan.spans(total, min_frames)
    if len(spans) == 1:
        return np.asarray(run(feed), dtype=np.float32).reshape(-1)
    audio = np.zeros(total * hop_length, dtype=np.float32)
    previous_end = 0  # kept end (frames) of the previous window
    for start, end, kept_start, kept_end in spans:
        out = np.asarray(run(slice_inputs(feed, start, end, hop_length)), dtype=np.float32).reshape(-1)
        kept = out[(kept_start - start) * hop_length : (kept_end - start) * hop_length]
        overlap = (previous_end - kept_start) * hop_length
        if overlap > 0:
            fade = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
            region = slice(kept_start * hop_length, previous_end * hop_length)
            audio[region] = audio[region] * (1.0 - fade) + kept[:overlap] * fade
            audio[previous_end * hop_length : kept_end * hop_length] = kept[overlap:]
        else:
            audio[kept_start * hop_length : kept_end * hop_length] = kept
        previous_end = kept_end
    return audio
