"""Real-time conversion: microphone blocks in, converted blocks out, on compiled graphs. numpy only.

    stream = Stream(engines, block=0.25, context=1.0, crossfade=0.05, sample_rate=48000)
    for block in microphone:            # exactly block * sample_rate samples each
        speaker.play(stream.push(block))  # exactly block * voice rate samples each

RVC's real-time path (its ``rtrvc.py`` and ``realtime_gui.py``), block by block (docs/STREAMING.md):

1. the block is resampled to 16 kHz (a continuous soxr stream) into a ring buffer holding the window:
   ``context + block + crossfade + search`` seconds, the newest audio last;
2. the content encoder runs over the whole window (its last frame repeated, as RVC does, so the 2x
   frames cover the window), and the retrieval index blends the frames the flow will see;
3. the pitch estimator runs over only the newest ``block + 50 ms`` (RMVPE: rounded up to a whole number
   of its 32-frame poolings) and writes all but its 3 edge frames and the last into a rolling pitch
   cache, so older frames keep the estimate they had with more audio around them;
4. the synthesizer renders the last ``block + crossfade + search`` frames: a real-time block artifact
   (``stream:`` recipe section: encoder over the window, flow over the rendered frames plus 24, decoder
   over the rendered frames only), or any other synthesizer artifact run over the rendered frames plus
   ``synth_context`` seconds before them;
5. SOLA: the offset within the search frames where the new audio best continues the previous block's
   crossfade tail (normalised cross-correlation) is found, the two are crossfaded with sin^2 windows,
   and exactly one block is returned. The output lags the input by the crossfade + search frames.

A push validates the block before it changes anything: a bad block (wrong length, NaN/Inf, after
``close``) raises ``InputError`` and the next good block continues as if it never came. ``push``, the
setters and ``close`` may be called from any thread (one lock serialises them).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError

FRAME = 160  # 16 kHz samples per 10 ms frame
RATE = 16000
PITCH_MARGIN = 800  # samples beyond the block the pitch estimator sees (RVC: block_frame_16k + 800)
RMVPE_POOLING = 5120  # 32 frames of 160: RVC rounds RMVPE's input up to whole poolings (minus one frame)
PITCH_EDGE = 3  # frames at the start of each pitch estimate that are not trusted (RVC: pitch[3:-1])
DEFAULT_BLOCK, DEFAULT_CONTEXT, DEFAULT_CROSSFADE, DEFAULT_SEARCH = 0.25, 1.0, 0.05, 0.01  # context: docs/STREAMING.md
DEFAULT_SYNTH_CONTEXT = 0.5  # seconds a dynamic synthesizer sees before the rendered frames
STAGES = ("resample", "encoder", "retrieval", "pitch", "synthesizer", "sola")


@dataclass(frozen=True)
class BlockGeometry:
    """A stream's lengths in 10 ms frames: the block, the context before it, the crossfade and the
    SOLA search after it. The window the encoder sees is all four; the synthesizer renders the last three."""

    block: int
    context: int
    crossfade: int
    search: int

    @classmethod
    def from_seconds(cls, block: float, context: float, crossfade: float, search: float = DEFAULT_SEARCH, where: str = "stream") -> "BlockGeometry":
        frames = {}
        for name, value in (("block", block), ("context", context), ("crossfade", crossfade), ("search", search)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0 \
                    or abs(value * 100 - round(value * 100)) > 1e-6:
                raise InputError(f"{where}: {name} {value!r} s must be a whole number of 10 ms frames (0.01 s), 0 or more")
            frames[name] = int(round(value * 100))
        geometry = cls(**frames)
        geometry.check(where)
        return geometry

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "BlockGeometry":
        geometry = cls(**{key: int(data[key]) for key in ("block", "context", "crossfade", "search")})
        geometry.check(where)
        return geometry

    def check(self, where: str) -> None:
        if self.block < 1:
            raise InputError(f"{where}: a block must be at least 10 ms")
        if self.crossfade > self.block:
            raise InputError(f"{where}: the crossfade ({self.crossfade * 10} ms) is longer than the block ({self.block * 10} ms)")
        if self.context > 6000:
            raise InputError(f"{where}: context {self.context / 100:g} s is more than 60 s")

    @property
    def window(self) -> int:
        return self.block + self.context + self.crossfade + self.search

    @property
    def rendered(self) -> int:
        return self.block + self.crossfade + self.search

    @property
    def delay(self) -> int:
        """Frames the output lags the input (besides the block's own buffering and the compute time)."""
        return self.crossfade + self.search

    def seconds(self) -> dict[str, float]:
        return {key: getattr(self, key) / 100 for key in ("block", "context", "crossfade", "search")}

    def describe(self) -> str:
        s = self.seconds()
        return f"{s['block']:g} s blocks, {s['context']:g} s context, {s['crossfade']:g} s crossfade, {s['search']:g} s search"


def pitch_samples(geometry: BlockGeometry, method: str) -> int:
    """16 kHz samples the pitch estimator sees per block: the block + 50 ms, RMVPE's rounded to its poolings."""
    samples = geometry.block * FRAME + PITCH_MARGIN
    if method == "rmvpe":
        samples = RMVPE_POOLING * -(-samples // RMVPE_POOLING) - FRAME
    return min(samples, geometry.window * FRAME)


def sola(rendered: np.ndarray, previous: np.ndarray, block: int, search: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(one block of output, the next crossfade tail, the offset chosen): RVC's SOLA in numpy.

    ``rendered``: block + crossfade + search samples; ``previous``: the last block's crossfade tail."""
    crossfade = previous.shape[0]
    offset = 0
    if crossfade:
        head = rendered[: crossfade + search].astype(np.float64)
        numerator = np.correlate(head, previous.astype(np.float64), mode="valid")  # search + 1 offsets
        energy = np.concatenate([[0.0], np.cumsum(head * head)])
        denominator = np.sqrt(energy[crossfade : crossfade + search + 1] - energy[: search + 1] + 1e-8)
        offset = int(np.argmax(numerator / denominator))
    out = rendered[offset:].astype(np.float32, copy=True)
    if crossfade:
        fade_in = np.sin(0.5 * np.pi * np.linspace(0.0, 1.0, crossfade, dtype=np.float64)) ** 2
        out[:crossfade] = out[:crossfade] * fade_in + previous * (1.0 - fade_in)
    return out[:block], out[block : block + crossfade].copy(), offset


class Stream:
    """A real-time conversion stream over engines (``runtime.pipeline.Engines``: a bundle's, loose
    artifacts', or the eager reference's), or over a loaded bundle itself. See the module docstring.

    ``block``/``context``/``crossfade``/``search``: seconds (defaults: a block artifact's own geometry,
    else 0.25 / 1.0 / 0.05 / 0.01). ``sample_rate``: the rate of the pushed blocks; output is at the
    voice's rate. ``synth_context``: seconds a dynamic synthesizer artifact sees before the rendered
    frames (a block artifact sees the whole context)."""

    def __init__(
        self, engines: Any, *, block: float | None = None, context: float | None = None, crossfade: float | None = None,
        search: float | None = None, sample_rate: int = RATE, f0_method: str = "rmvpe", pitch_shift: float = 0.0,
        index_rate: float = 0.0, speaker: int = 0, noise: str = "zero", synth_context: float = DEFAULT_SYNTH_CONTEXT,
        label: str | None = None, warm_up: bool = True, history: int = 10000,
    ):
        from .pipeline import PitchEngine

        engines = getattr(engines, "engines", engines)  # a loaded bundle (runtime.pipeline.CompiledPipeline) gives its engines
        engines.check()
        self.engines = engines
        self.voice = engines.synthesizer
        self.label = label or engines.label or "stream"
        self.geometry = self._geometry(block, context, crossfade, search)
        g = self.geometry
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or not 8000 <= sample_rate <= 384000 or sample_rate % 100:
            raise InputError(f"{self.label}: sample_rate {sample_rate!r} must be a rate in Hz from 8000 to 384000 that is a multiple of 100 (whole samples per 10 ms)")
        self.sample_rate = int(sample_rate)
        self.block_samples = g.block * self.sample_rate // 100
        self.output_rate = int(self.voice.sample_rate)
        self.zc = self.output_rate // 100  # output samples per frame
        self.hop = int(getattr(self.voice, "hop_length", None) or self.voice.spec.hop_length)
        self.has_f0 = bool(self.voice.has_f0)
        self.speaker, self.noise = int(speaker), noise
        self.f0_method = f0_method
        self.pitch = PitchEngine(f0_method, rmvpe=engines.rmvpe) if self.has_f0 else None
        self.pitch_samples = pitch_samples(g, f0_method)
        max_samples = engines.encoder.max_samples
        if max_samples is not None and g.window * FRAME > max_samples:
            raise InputError(f"{engines.encoder.label}: takes at most {max_samples / RATE:g} s but the stream's window is {g.window / 100:g} s "
                             "(context + block + crossfade + search): shorten the context")
        min_samples = getattr(getattr(engines.encoder, "model", None), "min_samples", None)
        if min_samples is not None and g.window * FRAME < min_samples:
            raise InputError(f"{engines.encoder.label}: takes at least {min_samples / RATE:g} s but the stream's window is {g.window / 100:g} s "
                             "(context + block + crossfade + search): lengthen the context, or build the encoder with a lower shapes.min_frames")
        self._render = self._renderer(synth_context)
        self._prefer_static_shapes(synth_context)
        self._pitch_shift = self._index_rate = 0.0
        self.pitch_shift, self.index_rate = pitch_shift, index_rate
        self._lock = threading.RLock()
        self._closed = False
        self._resampler = None
        if self.sample_rate != RATE:
            import soxr

            self._resampler = soxr.ResampleStream(self.sample_rate, RATE, 1, dtype="float32", quality="HQ")
        self._ring = np.zeros(g.window * FRAME, np.float32)
        self._f0 = np.zeros(g.window, np.float64)  # Hz before the pitch shift, one per window frame
        self._tail = np.zeros(g.crossfade * self.zc, np.float32)
        self.blocks = 0
        # The last ``history`` blocks (a live stream runs for hours): seconds per stage and in total, SOLA's
        # offset (output samples), and the f0 (Hz, shifted) the block's own frames were rendered with.
        self.timings: deque[dict[str, float]] = deque(maxlen=history)
        self.offsets: deque[int] = deque(maxlen=history)
        self.block_f0: deque[np.ndarray] = deque(maxlen=history)
        if warm_up:
            self.warm_up()

    # -- setup ------------------------------------------------------------------------------------------

    def _geometry(self, block: float | None, context: float | None, crossfade: float | None, search: float | None) -> BlockGeometry:
        built = self._built_geometry()
        asked = {"block": block, "context": context, "crossfade": crossfade, "search": search}
        if built is None:
            defaults = {"block": DEFAULT_BLOCK, "context": DEFAULT_CONTEXT, "crossfade": DEFAULT_CROSSFADE, "search": DEFAULT_SEARCH}
            values = {key: defaults[key] if value is None else value for key, value in asked.items()}
            return BlockGeometry.from_seconds(**values, where=self.label)
        have = built.seconds()
        for key, value in asked.items():
            if value is not None and abs(value - have[key]) > 1e-9:
                raise InputError(f"{getattr(self.voice, 'path', self.label)}: a real-time block artifact for {built.describe()}, "
                                 f"not {key} {value:g} s; build one with that stream section, or use a dynamic synthesizer")
        return built

    def _built_geometry(self) -> BlockGeometry | None:
        """The block geometry a real-time block synthesizer was built for (None: it renders every frame)."""
        skip = getattr(getattr(self.voice, "spec", None), "skip_frames", 0)
        if not skip:
            return None
        manifest = getattr(self.voice, "manifest", None)
        stream = manifest.model.get("stream") if manifest is not None else getattr(self.voice, "stream", None)
        where = str(getattr(self.voice, "path", self.label))
        if not stream:
            raise InputError(f"{where}: renders only the frames after {skip} but names no block geometry (model.stream)")
        geometry = BlockGeometry.from_dict(stream, where)
        if geometry.context != skip:
            raise InputError(f"{where}: model.stream.context {geometry.context} differs from the graph's skip_frames {skip}")
        return geometry

    def _renderer(self, synth_context: float) -> Any:
        g, voice = self.geometry, self.voice
        if self._built_geometry() is not None:
            frames = voice.manifest.model.frames if getattr(voice, "manifest", None) is not None else None
            if frames is not None and frames.static and frames.min != g.window:
                raise InputError(f"{voice.path}: its static shape is {frames.min} frames, not the window of {g.window}")
            return lambda features, f0, noise: voice.infer(features, f0, speaker=self.speaker, noise=noise)
        if not isinstance(synth_context, (int, float)) or isinstance(synth_context, bool) or not 0 <= synth_context:
            raise InputError(f"{self.label}: synth_context {synth_context!r} must be 0 or more seconds")
        lead = min(g.context, int(round(synth_context * 100)))
        frames = g.rendered + lead
        manifest = getattr(voice, "manifest", None)
        if manifest is not None:
            if manifest.model.frames.static:
                raise InputError(f"{voice.path}: a static-shape synthesizer of {manifest.model.frames.min} frames without a stream section; "
                                 "streams take a real-time block artifact (recipe stream: section) or a dynamic one")
            low, high = manifest.model.frames.min, getattr(voice, "max_frames", None)
            if frames < low or (high is not None and frames > high):
                raise InputError(f"{voice.path}: takes {low}..{high} frames; the stream renders {frames} (block + crossfade + search + synth context)")

        def render(features: np.ndarray, f0: np.ndarray | None, noise: str) -> np.ndarray:
            start = g.context - lead
            audio = voice.infer(features[start:], None if f0 is None else f0[start:], speaker=self.speaker, noise=noise)
            return np.asarray(audio).reshape(-1)[lead * self.hop :]

        return render

    def _prefer_static_shapes(self, synth_context: float) -> None:
        """Every call of a stream has the same shapes: have compiled models run them on static-shape
        compilations (OpenVINO's dynamic-shape kernels are slower), and compile them now, not on the
        first live block."""
        g = self.geometry
        encoder = getattr(self.engines.encoder, "model", None)
        if encoder is not None and hasattr(encoder, "prefer_length"):
            encoder.prefer_length(g.window * FRAME)
        pitch = getattr(self.engines.rmvpe, "__self__", None) if self.has_f0 and self.f0_method == "rmvpe" else None
        if pitch is not None and hasattr(pitch, "prefer_length"):
            pitch.prefer_length(self.pitch_samples // FRAME + 1)
        if hasattr(self.voice, "prefer_length") and self._built_geometry() is None:
            self.voice.prefer_length(g.rendered + min(g.context, int(round(synth_context * 100))))

    def warm_up(self, runs: int = 3) -> None:
        """Run every engine ``runs`` times on quiet noise of the stream's shapes, without touching the
        stream's state: static-shape compilations and the first inferences' allocations happen here, not
        in live blocks (measured: the first two or three encoder calls after compiling took twice as long)."""
        g = self.geometry
        rng = np.random.default_rng(0)
        for _ in range(runs):
            audio = (rng.standard_normal(g.window * FRAME) * 0.01).astype(np.float32)
            features = self._features(audio, lambda stage, function, *args: function(*args))
            f0 = None
            if self.has_f0:
                self.pitch(audio[-self.pitch_samples:], self.pitch_samples // FRAME + 1)
                f0 = np.full(g.window, 150.0, np.float32)
            self._render(features, f0, "zero")

    # -- settings (any thread, any time) ---------------------------------------------------------------

    @property
    def pitch_shift(self) -> float:
        return self._pitch_shift

    @pitch_shift.setter
    def pitch_shift(self, semitones: float) -> None:
        if isinstance(semitones, bool) or not isinstance(semitones, (int, float)) or not math.isfinite(semitones) or abs(semitones) > 48:
            raise InputError(f"{self.label}: pitch shift {semitones!r} must be a number of semitones within +-48")
        self._pitch_shift = float(semitones)

    @property
    def index_rate(self) -> float:
        return self._index_rate

    @index_rate.setter
    def index_rate(self, rate: float) -> None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
            raise InputError(f"{self.label}: index rate {rate!r} must be between 0 and 1")
        if rate and self.engines.index is None:
            raise InputError(f"{self.label}: index rate {rate:g} needs a retrieval index (none loaded)")
        self._index_rate = float(rate)

    @property
    def latency_s(self) -> float:
        """Seconds from a sample entering ``push`` to its converted sample leaving it, before compute:
        the block's own buffering plus the crossfade and search frames the output lags by."""
        return (self.geometry.block + self.geometry.delay) / 100

    # -- running ---------------------------------------------------------------------------------------

    def _check_block(self, block: Any, sample_rate: int | None) -> np.ndarray:
        where = f"{self.label}: block {self.blocks + 1}"
        if self._closed:
            raise InputError(f"{self.label}: the stream is closed")
        if sample_rate is not None and int(sample_rate) != self.sample_rate:
            raise InputError(f"{where}: is at {sample_rate} Hz but the stream takes {self.sample_rate} Hz")
        audio = np.asarray(block)
        if audio.ndim == 2 and 1 <= audio.shape[1] <= 16 and audio.shape[0] == self.block_samples:
            audio = audio.mean(axis=1)  # [samples, channels]: a callback's buffer
        if audio.ndim != 1:
            raise InputError(f"{where}: must be mono samples [n] or [n, channels], not shape {list(audio.shape)}")
        if not np.issubdtype(audio.dtype, np.floating):
            raise InputError(f"{where}: must be float samples, not {audio.dtype}")
        if audio.shape[0] != self.block_samples:
            raise InputError(f"{where}: has {audio.shape[0]} samples; the stream takes blocks of {self.block_samples} "
                             f"({self.geometry.block * 10} ms at {self.sample_rate} Hz)")
        if not np.isfinite(audio).all():
            raise InputError(f"{where}: has NaN or Inf samples (the block was dropped; the stream goes on with the next)")
        return audio.astype(np.float32)

    def push(self, block: Any, sample_rate: int | None = None) -> np.ndarray:
        """Convert one block: ``block`` float samples at ``sample_rate`` -> float32 [block seconds x voice rate]."""
        with self._lock:
            audio = self._check_block(block, sample_rate)
            clock: dict[str, float] = {}
            started = time.perf_counter()

            def timed(stage: str, function: Any, *args: Any) -> Any:
                begin = time.perf_counter()
                try:
                    return function(*args)
                finally:
                    clock[stage] = clock.get(stage, 0.0) + time.perf_counter() - begin

            # Nothing below changes the stream's state until the block is fully converted.
            incoming = timed("resample", self._to_16k, audio)
            ring = np.concatenate([self._ring[incoming.shape[0]:], incoming])[-self._ring.shape[0]:]
            features = self._features(ring, timed)
            f0_cache = self._pitch_cache(ring, timed) if self.has_f0 else None
            f0 = None if f0_cache is None else (f0_cache * 2 ** (self._pitch_shift / 12)).astype(np.float32)
            noise = self.noise if not self.noise.startswith("seed:") else f"seed:{int(self.noise[5:]) + self.blocks}"
            rendered = np.asarray(timed("synthesizer", self._render, features, f0, noise), dtype=np.float32).reshape(-1)
            expected = self.geometry.rendered * self.zc
            if rendered.shape[0] != expected:
                raise InputError(f"{self.label}: the synthesizer gave {rendered.shape[0]} samples for a block, {expected} expected")
            if not np.isfinite(rendered).all():
                raise InputError(f"{self.label}: block {self.blocks + 1}: the synthesizer's output has NaN or Inf")
            out, tail, offset = timed("sola", sola, rendered, self._tail, self.geometry.block * self.zc, self.geometry.search * self.zc)
            self._ring, self._tail = ring, tail
            if f0_cache is not None:
                self._f0 = f0_cache
            self.blocks += 1
            clock["total"] = time.perf_counter() - started
            self.timings.append(clock)
            self.offsets.append(offset)
            if f0 is not None:
                self.block_f0.append(f0[self.geometry.context : self.geometry.context + self.geometry.block].copy())
            return out

    def _to_16k(self, audio: np.ndarray) -> np.ndarray:
        if self._resampler is None:
            return audio
        # A continuous stream (no edge at every block). It is the one state a push changes before the
        # block has converted: if an engine fails afterwards, that block's audio is skipped, not repeated.
        return np.asarray(self._resampler.resample_chunk(audio), dtype=np.float32)

    def _features(self, ring: np.ndarray, timed: Any) -> np.ndarray:
        g = self.geometry
        features = np.asarray(timed("encoder", self.engines.encoder, ring), dtype=np.float32)
        if features.ndim == 3 and features.shape[0] == 1:
            features = features[0]
        half = -(-g.window // 2)
        if features.ndim != 2 or features.shape[0] < 1:
            raise InputError(f"{self.engines.encoder.label}: gave features {list(features.shape)} for the stream's window")
        if features.shape[0] < half:  # RVC repeats the last frame (its encoder gives (n - 400) // 320 + 1)
            features = np.concatenate([features, np.repeat(features[-1:], half - features.shape[0], axis=0)])
        features = features[:half]
        if self._index_rate and self.engines.index is not None:
            from ..components.synthesizer.spec import FLOW_CONTEXT

            first = max(g.context - FLOW_CONTEXT, 0) // 2  # what the flow and decoder see
            blended = timed("retrieval", self.engines.index.blend, features[first:], self._index_rate)
            features = np.concatenate([features[:first], np.asarray(blended, dtype=np.float32)])
        return np.ascontiguousarray(np.repeat(features, 2, axis=0)[: g.window])

    def _pitch_cache(self, ring: np.ndarray, timed: Any) -> np.ndarray:
        g = self.geometry
        tail = ring[-self.pitch_samples:]
        frames = tail.shape[0] // FRAME + 1  # frame j is centred on tail sample 160 j; the last on the window's end
        estimate = np.asarray(timed("pitch", self.pitch, tail, frames), dtype=np.float64).reshape(-1)[:frames]
        if estimate.shape[0] < frames:
            raise InputError(f"{self.label}: the pitch estimator gave {estimate.shape[0]} frames for {frames}")
        cache = np.concatenate([self._f0[g.block:], np.zeros(g.block)])
        fresh = estimate[PITCH_EDGE:-1]  # window frame k is centred on window sample 160 k: the last estimate is past it
        cache[-fresh.shape[0]:] = fresh
        return cache

    def close(self) -> None:
        """End the stream; later pushes raise ``InputError``."""
        with self._lock:
            self._closed = True

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- reporting ---------------------------------------------------------------------------------------

    def stats(self, skip: int = 0) -> dict[str, Any]:
        """p50/p99/max block time (ms), the share of blocks over the block's own duration, per-stage p50s."""
        timings = list(self.timings)[skip:]
        if not timings:
            return {"blocks": 0}
        budget = self.geometry.block / 100
        totals = np.array([t["total"] for t in timings])
        stages = {stage: float(np.median([t.get(stage, 0.0) for t in timings]) * 1000) for stage in STAGES if any(stage in t for t in timings)}
        return {
            "blocks": len(timings),
            "block_s": budget,
            "p50_ms": float(np.percentile(totals, 50) * 1000),
            "p99_ms": float(np.percentile(totals, 99) * 1000),
            "max_ms": float(totals.max() * 1000),
            "over_budget": float(np.mean(totals > budget)),
            "stages_p50_ms": stages,
        }


def stream_audio(stream: Stream, audio: np.ndarray, *, on_block: Any = None) -> np.ndarray:
    """Feed ``audio`` (at ``stream.sample_rate``) through ``stream`` block by block, in real-time order;
    return the output aligned with the input: the lag (crossfade + search) dropped, the end flushed with
    silence, ``len(audio)`` samples' worth at the voice's rate. ``on_block(index, seconds)`` after each."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    g = stream.geometry
    lag_blocks = -(-g.delay // g.block) if g.delay else 0
    blocks = -(-audio.shape[0] // stream.block_samples) + lag_blocks
    padded = np.zeros(blocks * stream.block_samples, np.float32)
    padded[: audio.shape[0]] = audio
    pieces = []
    for index in range(blocks):
        pieces.append(stream.push(padded[index * stream.block_samples : (index + 1) * stream.block_samples]))
        if on_block is not None:
            on_block(index, stream.timings[-1]["total"])
    out = np.concatenate(pieces)[g.delay * stream.zc :]
    return out[: int(round(audio.shape[0] * stream.output_rate / stream.sample_rate))]
