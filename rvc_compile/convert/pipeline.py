"""RVC's conversion (``Pipeline.pipeline`` and ``Pipeline.vc`` of RVC-Project's
``infer/modules/vc/pipeline.py``) on injected engines, step by step; numpy and scipy only.

    audio16k --high-pass--> split at quiet points --> pitch over the whole padded input
             --per segment: encoder -> retrieval blend -> 2x frames -> protect -> synthesizer -> trim--
             --> concatenate --> loudness envelope mix --> peak limit --> audio at the voice's rate

Steps, as RVC (fp32 configuration: x_pad 1 s, x_query 6 s, x_center 38 s, x_max 41 s):

1. a 5th-order Butterworth high-pass at 48 Hz, run forwards and backwards (``filtfilt``) at 16 kHz;
2. inputs longer than ``t_max`` are cut near every ``t_center`` samples, each cut at the quietest point
   (the first minimum of |x| summed over 160 samples) within ``t_query`` samples of it;
3. the audio is reflect-padded by ``t_pad`` at both ends; the pitch engine sees all of it at once
   (``p_len = len // 160`` frames), and the pitch is shifted by ``2 ** (semitones / 12)``;
4. each segment (its own ``t_pad`` of context on both sides) goes through the encoder; the features are
   blended with the retrieval index (when there is one and ``index_rate`` != 0), repeated to 2x frames
   (100 frames/s), cut to ``len(segment) // 160`` frames; where f0 < 1 Hz (unvoiced) the blended features
   are mixed back with the raw ones by ``protect`` (0.5 turns it off); the synthesizer renders them and
   ``t_pad`` seconds of output are trimmed from both ends;
5. the output's loudness envelope (RMS over half-second frames, linearly interpolated per sample) is
   moved towards the input's: ``out *= rms_in ** (1 - rate) * rms_out ** (rate - 1)``, skipped at rate 1;
6. output peaking above 0.99 is scaled down to 0.99 (RVC does it in its int16 conversion).

The coarse pitch RVC feeds the synthesizer is computed inside our synthesizer graph: the synthesizer
engine takes f0 in Hz. The pitch method's own details (harvest's median filter, pm's padding) are the
pitch engine's; RVC's ``vc_single`` input pre-scale is ``convert.audio.prescale`` (done by
``prepare_input`` and ``to_16k``, before ``convert``).

Where this differs from RVC, and why:
- RVC's loudness step runs librosa's RMS (float32 for the float32 output) and torch's linear
  interpolation (float32 positions); here both are float64 numpy with the same definitions, so gains
  agree to about 1e-6 relative. The high-pass, padding, splitting, feature and pitch arithmetic are the
  same operations in the same dtypes (float32 where RVC's torch works in float32).
- Input shorter than one encoder window (400 samples, 25 ms at 16 kHz) is refused: RVC's trim then
  leaves no output at all (and its final ``max`` fails on the empty array).
- The pitch shift may be fractional (RVC's UI rounds it to whole semitones).
- Features longer than a segment's frames (an encoder not following ``(n - 400) // 320 + 1``) are cut to
  them; RVC's synthesizer would refuse the mismatch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any, Callable, ClassVar, Mapping, Protocol

import numpy as np

from ..errors import InputError

SAMPLE_RATE = 16000  # the encoder's and pitch engine's rate
WINDOW = 160  # samples per pitch frame (10 ms); features are 2 frames of it
ENCODER_WINDOW = 400  # the content encoder's receptive field: frames = (n - 400) // 320 + 1
ENCODER_HOP = 320
HIGHPASS_ORDER, HIGHPASS_HZ = 5, 48
OUTPUT_PEAK = 0.99
PROTECT_OFF = 0.5  # protect >= this: the raw features are never mixed back
UNVOICED_BELOW_HZ = 1.0  # RVC's protect mask: pitchf < 1 -> unvoiced
STAGES = ("encoder", "pitch", "retrieval", "synthesizer", "host")


# -- engines -----------------------------------------------------------------------------------------------

class Encoder(Protocol):
    """16 kHz float32 audio [n] -> content features float32 [frames, feature_dim], frames = (n - 400) // 320 + 1."""

    feature_dim: int

    def __call__(self, audio16k: np.ndarray) -> np.ndarray: ...


class PitchEstimator(Protocol):
    """16 kHz float64 audio [n] -> f0 in Hz (0 = unvoiced) at 160-sample frames, at least ``p_len`` of them.
    Its float dtype is kept through the pitch shift (RVC shifts the estimator's own array in place)."""

    def __call__(self, audio16k: np.ndarray, p_len: int) -> np.ndarray: ...


class Synthesizer(Protocol):
    """Features float32 [T, feature_dim] and f0 float32 [T] in Hz (None when ``has_f0`` is False) -> float32
    audio [T * hop_length] at ``sample_rate``."""

    sample_rate: int
    feature_dim: int
    has_f0: bool
    hop_length: int

    def __call__(self, features: np.ndarray, f0: np.ndarray | None) -> np.ndarray: ...


class Retrieval(Protocol):
    """``convert.retrieval.RetrievalIndex``: RVC's retrieval blend of features [T, C] -> [T, C]."""

    feature_dim: int

    def blend(self, features: np.ndarray, index_rate: float) -> np.ndarray: ...


# -- settings ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Settings:
    """One conversion's settings, as a bundle's manifest stores them (``to_dict`` / ``from_dict``).

    pitch_shift: semitones, -24..24 (fractions allowed); index_rate: retrieval share 0..1 (0: no retrieval);
    protect: 0..0.5, the share of retrieval-blended features kept on unvoiced frames (0.5: off);
    rms_mix_rate: 0..1, 1 keeps the output's own loudness envelope, 0 takes the input's."""

    pitch_shift: float = 0.0
    index_rate: float = 0.75
    protect: float = 0.33
    rms_mix_rate: float = 0.25

    RANGES: ClassVar[dict[str, tuple[float, float]]] = {
        "pitch_shift": (-24.0, 24.0), "index_rate": (0.0, 1.0), "protect": (0.0, 0.5), "rms_mix_rate": (0.0, 1.0),
    }

    def __post_init__(self) -> None:
        for key, (low, high) in self.RANGES.items():
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise InputError(f"{key}: {value!r} is not a number")
            if not math.isfinite(float(value)) or not low <= float(value) <= high:
                raise InputError(f"{key}: {value!r} is outside {low:g}..{high:g}")
            object.__setattr__(self, key, float(value))

    def to_dict(self) -> dict[str, float]:
        return {field.name: getattr(self, field.name) for field in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, strict: bool = True, where: str = "settings") -> "Settings":
        """``strict``: refuse keys that are not settings (a misspelt key would otherwise be ignored)."""
        if not isinstance(data, Mapping):
            raise InputError(f"{where}: must be a mapping, not {type(data).__name__}")
        names = {field.name for field in fields(cls)}
        unknown = sorted(set(data) - names)
        if strict and unknown:
            raise InputError(f"{where}.{unknown[0]}: not a conversion setting (expected {', '.join(sorted(names))})")
        try:
            return cls(**{key: value for key, value in data.items() if key in names})
        except InputError as exc:
            raise InputError(f"{where}.{exc}") from None


@dataclass(frozen=True)
class Chunking:
    """RVC's segmenting constants (``configs/config.py``), in seconds: ``x_pad`` context padded on each side
    of a segment, cuts searched ``x_query`` either side of every ``x_center``, inputs kept whole while their
    length plus 10 ms is at most ``x_max``. Small values are for tests; ``x_pad`` must be a whole number of
    10 ms frames."""

    x_pad: float = 1.0
    x_query: float = 6.0
    x_center: float = 38.0
    x_max: float = 41.0

    def __post_init__(self) -> None:
        for name in ("x_pad", "x_query", "x_center", "x_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise InputError(f"chunking.{name}: {value!r} must be a positive number of seconds")
        frames = self.x_pad * SAMPLE_RATE / WINDOW
        if abs(frames - round(frames)) > 1e-6 or 2 * self.t_pad + 1 < ENCODER_WINDOW:
            raise InputError(f"chunking.x_pad: {self.x_pad!r} must be a whole number of 10 ms frames, at least 0.02 s")
        if 2 * self.t_query > self.t_center:
            raise InputError(f"chunking.x_query: {self.x_query!r} must be at most half of x_center ({self.x_center!r})")

    @property
    def t_pad(self) -> int:
        return round(SAMPLE_RATE * self.x_pad)

    @property
    def t_query(self) -> int:
        return round(SAMPLE_RATE * self.x_query)

    @property
    def t_center(self) -> int:
        return round(SAMPLE_RATE * self.x_center)

    @property
    def t_max(self) -> int:
        return round(SAMPLE_RATE * self.x_max)

    def t_pad_tgt(self, sample_rate: int) -> int:
        return round(int(sample_rate) * self.x_pad)

    @property
    def longest_segment(self) -> int:
        """The most samples one segment gives the encoder: the longest stretch between two cuts
        (x_center + 2 x_query) or an input kept whole (x_max), with t_pad of context on both sides and one
        window (832160 samples, 52 s, for RVC's fp32 constants)."""
        return max(self.t_center + 2 * self.t_query, self.t_max) + 2 * self.t_pad + WINDOW

    def fitting(self, max_samples: int | None, label: str = "encoder") -> "Chunking":
        """These constants, or all but x_pad scaled down so that every segment fits an encoder that takes at
        most ``max_samples`` (a compiled encoder's ``shapes.max_frames``); then long inputs are split more
        often than RVC splits them, each cut still at a quiet point."""
        if max_samples is None or self.longest_segment <= max_samples:
            return self
        room = (int(max_samples) - 2 * self.t_pad - WINDOW) / SAMPLE_RATE
        scale = room / max(self.x_center + 2 * self.x_query, self.x_max)
        if scale * self.x_center < 2.0:  # cuts at least 2 s apart
            shortest = math.ceil(2.0 / self.x_center * max(self.x_center + 2 * self.x_query, self.x_max) * SAMPLE_RATE) + 2 * self.t_pad + WINDOW
            raise InputError(f"{label}: takes at most {max_samples} samples; conversion needs an encoder that takes at least {shortest} "
                             f"(RVC's segments reach {self.longest_segment}: build it with that shapes.max_frames)")

        def cut(value: float) -> float:
            return math.floor(value * scale * 100) / 100

        return Chunking(self.x_pad, cut(self.x_query), cut(self.x_center), cut(self.x_max))


FP32_CHUNKING = Chunking(1, 6, 38, 41)  # RVC on CPU and fp32 GPUs
HALF_CHUNKING = Chunking(3, 10, 60, 65)  # RVC's fp16 GPU configuration


# -- the host steps (each a function of arrays, tested on its own) -------------------------------------------

@lru_cache(maxsize=1)
def _highpass_coefficients() -> tuple[np.ndarray, np.ndarray]:
    from scipy import signal

    return signal.butter(N=HIGHPASS_ORDER, Wn=HIGHPASS_HZ, btype="high", fs=SAMPLE_RATE)


def highpass(audio16k: np.ndarray) -> np.ndarray:
    """RVC's 48 Hz 5th-order Butterworth high-pass, zero-phase (``filtfilt``): float64 [n]. Needs n > 18."""
    from scipy import signal

    b, a = _highpass_coefficients()
    return signal.filtfilt(b, a, audio16k)


def split_points(filtered: np.ndarray, chunking: Chunking = FP32_CHUNKING) -> list[int]:
    """Where RVC cuts the (high-passed) input, in samples, before rounding down to 160: none when the input
    plus 160 samples is at most ``t_max``; else, for every multiple t of ``t_center`` inside the input, the
    first sample of least |x| summed over the 160 samples around it (``x[j - 80 : j + 80]``) within
    ``[t - t_query, t + t_query)``.

    The sums are accumulated in RVC's order (one |x| shift at a time, float64), over the query windows only,
    so ties and near-ties resolve to the same sample."""
    n = filtered.shape[0]
    padded = np.pad(filtered, (WINDOW // 2, WINDOW // 2), mode="reflect")
    if padded.shape[0] <= chunking.t_max:
        return []
    magnitude = np.abs(padded)
    points = []
    for t in range(chunking.t_center, n, chunking.t_center):
        low, high = t - chunking.t_query, min(t + chunking.t_query, n)
        sums = np.zeros(high - low, dtype=np.float64)
        for shift in range(WINDOW):
            sums += magnitude[low + shift: high + shift]
        points.append(low + int(np.argmin(sums)))
    return points


def frame_rms(audio: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    """``librosa.feature.rms(y=audio, frame_length, hop_length)[0]`` (center=True, pad_mode "constant"): the
    signal zero-padded by ``frame_length // 2`` on both sides, ``1 + (len - frame_length) // hop`` frames,
    sqrt of the mean square of each; float64."""
    audio = np.asarray(audio, dtype=np.float64).reshape(-1)
    padded = np.pad(audio, (frame_length // 2, frame_length // 2))
    count = 1 + (padded.shape[0] - frame_length) // hop_length
    windows = np.lib.stride_tricks.sliding_window_view(padded, frame_length)[::hop_length][:count]
    power = np.empty(count, dtype=np.float64)
    block = max(1, (1 << 22) // frame_length)  # frames per step: a few MB of squares at a time
    for start in range(0, count, block):
        power[start:start + block] = np.mean(np.square(windows[start:start + block]), axis=1)
    return np.sqrt(power)


def interpolate_linear(values: np.ndarray, size: int) -> np.ndarray:
    """``torch.nn.functional.interpolate(values[None, None], size=size, mode="linear")`` (align_corners
    False: half-sample centres, clamped at the ends), float64 [size]."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    count = values.shape[0]
    if size == count:
        return values.copy()
    source = np.maximum((np.arange(size, dtype=np.float64) + 0.5) * (count / size) - 0.5, 0.0)
    low = np.minimum(source.astype(np.int64), count - 1)
    high = low + (low < count - 1)
    weight_high = np.clip(source - low, 0.0, 1.0)
    return (1.0 - weight_high) * values[low] + weight_high * values[high]


def change_rms(source: np.ndarray, source_rate: int, output: np.ndarray, output_rate: int, rate: float) -> np.ndarray:
    """RVC's ``change_rms``: the output (float32) scaled sample by sample by ``rms_in ** (1 - rate) *
    max(rms_out, 1e-6) ** (rate - 1)``, both envelopes half-second RMS frames (``frame_rms`` with frame
    ``rate // 2 * 2``, hop ``rate // 2``) interpolated linearly to the output's length."""
    size = output.shape[0]
    rms_in = interpolate_linear(frame_rms(source, source_rate // 2 * 2, source_rate // 2), size)
    rms_out = interpolate_linear(frame_rms(output, output_rate // 2 * 2, output_rate // 2), size)
    rms_out = np.maximum(rms_out, 1e-6)
    # RVC's exponents are torch.tensor(1 - rate) and torch.tensor(rate - 1): float32 scalars
    gain = np.power(rms_in, float(np.float32(1.0 - rate))) * np.power(rms_out, float(np.float32(rate - 1.0)))
    return (output.astype(np.float64) * gain).astype(np.float32)


def limit_peak(audio: np.ndarray) -> np.ndarray:
    """RVC's last step: audio peaking above 0.99 scaled so its peak is 0.99. RVC folds the scale into its
    int16 conversion (``audio * float32(32768 / (peak / 0.99))``); this is that product / 32768, exactly."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.size == 0:
        return audio
    audio_max = float(np.abs(audio).max()) / OUTPUT_PEAK
    if audio_max <= 1:
        return audio
    return (audio * np.float32(32768.0 / audio_max)) / np.float32(32768.0)


# -- the pipeline ----------------------------------------------------------------------------------------------

class _Clock:
    """Seconds per stage of one conversion, added into the caller's dict at the end."""

    def __init__(self) -> None:
        self.spent = dict.fromkeys(STAGES, 0.0)
        self.started = time.perf_counter()

    def run(self, stage: str, function: Callable[..., Any], *args: Any) -> Any:
        tick = time.perf_counter()
        try:
            return function(*args)
        finally:
            self.spent[stage] += time.perf_counter() - tick

    def report(self, timings: dict[str, float] | None) -> None:
        self.spent["host"] = max(0.0, time.perf_counter() - self.started - sum(self.spent[s] for s in STAGES if s != "host"))
        if timings is not None:
            for stage, seconds in self.spent.items():
                timings[stage] = timings.get(stage, 0.0) + seconds


class VoicePipeline:
    """RVC's conversion on engines (module docstring). ``convert`` takes 16 kHz audio as ``prepare_input``
    gives it and returns float32 audio at ``synthesizer.sample_rate``."""

    def __init__(self, encoder: Encoder, synthesizer: Synthesizer, pitch: PitchEstimator | None = None,
                 index: Retrieval | None = None, *, chunking: Chunking = FP32_CHUNKING):
        voice_dim = int(synthesizer.feature_dim)
        if int(encoder.feature_dim) != voice_dim:
            raise InputError(f"{_label(encoder, 'encoder')}: gives {encoder.feature_dim}-dim features but the voice takes {voice_dim}")
        if index is not None and int(index.feature_dim) != voice_dim:
            raise InputError(f"{_label(index, 'retrieval index')}: holds {index.feature_dim}-dim features but the voice takes {voice_dim}")
        if synthesizer.has_f0 and pitch is None:
            raise InputError(f"{_label(synthesizer, 'voice')}: the voice takes pitch (f0): give a pitch estimator")
        self.encoder, self.synthesizer, self.index, self.chunking = encoder, synthesizer, index, chunking
        self.pitch = pitch if synthesizer.has_f0 else None  # unpitched voices: no pitch, no protect

    @property
    def sample_rate(self) -> int:
        return int(self.synthesizer.sample_rate)

    def convert(
        self, audio16k: np.ndarray, *, pitch_shift: float = 0.0, index_rate: float = 0.75, protect: float = 0.33,
        rms_mix_rate: float = 0.25, progress: Callable[[int, int], None] | None = None, timings: dict[str, float] | None = None,
        label: str = "input audio",
    ) -> np.ndarray:
        """Converted float32 audio at ``sample_rate``. ``progress(done, total)`` after every segment;
        ``timings``: seconds per stage (encoder, pitch, retrieval, synthesizer, host) added into it;
        ``label``: what input errors name (the file, for the CLI).

        Input: float32 mono 16 kHz (other float dtypes are cast to float32, as RVC's decoder gives),
        at least 400 samples (25 ms), finite. Silence converts: its pitch is unvoiced, and with
        rms_mix_rate < 1 its zero loudness envelope makes the output silent too."""
        settings = Settings(pitch_shift=pitch_shift, index_rate=index_rate, protect=protect, rms_mix_rate=rms_mix_rate)
        audio = self._check_input(audio16k, label)
        clock = _Clock()
        chunking, window = self.chunking, WINDOW
        t_pad, t_pad2 = chunking.t_pad, 2 * chunking.t_pad

        filtered = highpass(audio)
        cuts = split_points(filtered, chunking)
        padded = np.pad(filtered, (t_pad, t_pad), mode="reflect")
        f0 = None
        if self.pitch is not None:
            p_len = padded.shape[0] // window
            f0 = self._pitch(clock, padded, p_len, settings.pitch_shift)

        bounds = []  # (audio start, audio stop, frame start, frame stop) of each segment in ``padded``
        start = 0
        for cut in cuts:
            cut = cut // window * window
            bounds.append((start, cut + t_pad2 + window, start // window, (cut + t_pad2) // window))
            start = cut
        bounds.append((start, padded.shape[0], start // window, None))

        pieces = []
        for number, (begin, end, frame_begin, frame_end) in enumerate(bounds, start=1):
            segment_f0 = None if f0 is None else f0[frame_begin:frame_end]
            pieces.append(self._segment(clock, padded[begin:end], segment_f0, settings))
            if progress is not None:
                progress(number, len(bounds))
        output = np.concatenate(pieces).astype(np.float32, copy=False)
        if output.size and settings.rms_mix_rate != 1:
            output = change_rms(filtered, SAMPLE_RATE, output, self.sample_rate, settings.rms_mix_rate)
        output = limit_peak(output)
        clock.report(timings)
        return output

    # -- steps ---------------------------------------------------------------------------------------------

    def _check_input(self, audio16k: np.ndarray, label: str = "input audio") -> np.ndarray:
        audio = np.asarray(audio16k)
        if audio.ndim != 1:
            raise InputError(f"{label}: must be mono 16 kHz samples [n], not shape {list(audio.shape)}")
        if not np.issubdtype(audio.dtype, np.floating):
            raise InputError(f"{label}: must be float samples, not {audio.dtype} (prepare_input converts PCM)")
        audio = audio.astype(np.float32, copy=False)
        if audio.size == 0:
            raise InputError(f"{label}: has no samples")
        if not np.isfinite(audio).all():
            raise InputError(f"{label}: has NaN or Inf samples")
        if audio.size < ENCODER_WINDOW:
            raise InputError(
                f"{label}: {audio.size} samples ({audio.size / SAMPLE_RATE * 1000:.1f} ms) at 16 kHz is shorter than "
                f"one encoder window ({ENCODER_WINDOW} samples, 25 ms): RVC's pipeline gives no output for it"
            )
        return audio

    def _pitch(self, clock: _Clock, padded: np.ndarray, p_len: int, pitch_shift: float) -> np.ndarray:
        raw = clock.run("pitch", self.pitch, padded, p_len)
        f0 = np.array(raw, copy=True).reshape(-1)
        if not np.issubdtype(f0.dtype, np.floating):
            f0 = f0.astype(np.float64)
        if f0.shape[0] < p_len:
            raise InputError(f"{_label(self.pitch, 'pitch estimator')}: gave {f0.shape[0]} f0 frames for {p_len} (at least p_len expected)")
        f0 *= 2 ** (pitch_shift / 12)  # in the estimator's dtype, as RVC's in-place shift
        return f0[:p_len].astype(np.float32)

    def _segment(self, clock: _Clock, segment: np.ndarray, f0: np.ndarray | None, settings: Settings) -> np.ndarray:
        """RVC's ``vc``: one padded segment -> its audio, ``t_pad`` trimmed from both ends."""
        features = self._encode(clock, segment)
        protecting = f0 is not None and settings.protect < PROTECT_OFF
        raw = features.copy() if protecting else None
        if self.index is not None and settings.index_rate != 0:
            features = clock.run("retrieval", self.index.blend, features, settings.index_rate)
            features = np.asarray(features, dtype=np.float32)
        features = np.repeat(features, 2, axis=0)  # F.interpolate(scale_factor=2), nearest
        frames = min(segment.shape[0] // WINDOW, features.shape[0])
        if f0 is not None:
            frames = min(frames, f0.shape[0])
            f0 = np.ascontiguousarray(f0[:frames])
        features = features[:frames]
        if protecting:
            raw = np.repeat(raw, 2, axis=0)[:frames]
            voiced = np.where(f0 < UNVOICED_BELOW_HZ, np.float32(settings.protect), np.float32(1.0))[:, None]
            features = features * voiced + raw * (np.float32(1.0) - voiced)
        audio = clock.run("synthesizer", self.synthesizer, np.ascontiguousarray(features, dtype=np.float32), f0)
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        expected = frames * int(self.synthesizer.hop_length)
        if audio.shape[0] != expected:
            raise InputError(f"{_label(self.synthesizer, 'synthesizer')}: gave {audio.shape[0]} samples for {frames} frames ({expected} expected)")
        trim = self.chunking.t_pad_tgt(self.sample_rate)
        return audio[trim:-trim]

    def _encode(self, clock: _Clock, segment: np.ndarray) -> np.ndarray:
        features = clock.run("encoder", self.encoder, segment.astype(np.float32))
        features = np.asarray(features, dtype=np.float32)
        if features.ndim == 3 and features.shape[0] == 1:
            features = features[0]
        dim = int(self.synthesizer.feature_dim)
        if features.ndim != 2 or features.shape[1] != dim or features.shape[0] == 0:
            raise InputError(f"{_label(self.encoder, 'encoder')}: gave features {list(features.shape)} for {segment.shape[0]} samples; expected [frames >= 1, {dim}]")
        return features


def _label(engine: Any, default: str) -> str:
    label = getattr(engine, "label", None) or getattr(engine, "path", None)
    return str(label) if label else default
