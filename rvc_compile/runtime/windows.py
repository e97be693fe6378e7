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
    frames: int  # frames per graph call
    context: int  # frames on each side a window sees but does not keep
    crossfade: int  # frames over which two windows blend (half on each side of a boundary)

    @property
    def step(self) -> int:
        """Kept frames per window (the distance between window starts)."""
        return self.frames - 2 * self.context - self.crossfade

    def validate(self) -> None:
        if self.context < 0 or self.crossfade < 0 or self.step < 1:
            raise ValueError(f"window of {self.frames} frames cannot hold context {self.context} x 2 and crossfade {self.crossfade}")

    def spans(self, total: int) -> list[tuple[int, int, int, int]]:
        """(input start, input end, kept start, kept end) per window; kept ranges overlap by ``crossfade``."""
        if total <= self.frames:
            return [(0, total, 0, total)]
        spans = []
        kept_start = 0
        while True:
            kept_end = min(kept_start + self.step + self.crossfade, total)
            start = max(0, kept_start - self.context)
            end = min(total, kept_end + self.context)
            # Windows at the edges borrow context from the inside so every call has the same length.
            if end - start < self.frames:
                if start == 0:
                    end = min(total, self.frames)
                else:
                    start = max(0, end - self.frames)
            spans.append((start, end, kept_start, kept_end))
            if kept_end >= total:
                return spans
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


def run_windowed(run: Callable[[dict[str, np.ndarray]], np.ndarray], feed: dict[str, np.ndarray], plan: WindowPlan, hop_length: int) -> np.ndarray:
    """Audio float32 [T * hop] for ``feed`` (graph inputs of T frames), one window at a time."""
    total = int(feed["features"].shape[1])
    spans = plan.spans(total)
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
