"""``rvc-compile bench --stream``: the real-time engine timed block by block, as a voice changer runs it.

Each source is a VOICE as ``rvc-compile stream`` opens it (a bundle, a synthesizer artifact with encoder
and pitch artifacts, a checkpoint with their sources); every source streams the same real speech (the
bundled clips, 16 kHz) through its own ``runtime.stream.Stream``, ``repeat`` passes with the sources
interleaved. Every block counts: a stream compiles and warms its engines when it is made. Reported per source:
p50/p99/max time per block, the share of blocks over the block's own duration (a block that takes longer
than it lasts is an audible dropout in a live stream) and the p50 of every stage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import InputError


@dataclass
class StreamBenchSettings:
    seconds: float = 10.0  # of speech streamed per pass
    repeat: int = 2
    threads: int | None = 2
    block: float | None = None
    context: float | None = None
    crossfade: float | None = None
    synth_context: float = 0.5
    f0_method: str | None = None
    encoder: Path | None = None
    rmvpe: Path | None = None
    synthesizer: Path | None = None


def speech(seconds: float) -> tuple[np.ndarray, list[str]]:
    """``seconds`` of the bundled real speech at 16 kHz (the clips repeated as needed)."""
    from ..components.encoder.inputs import BUNDLED_CLIPS, BUNDLED_DIR
    from ..convert.audio import to_16k

    clips = [BUNDLED_DIR / name for name in BUNDLED_CLIPS]
    missing = [clip for clip in clips if not clip.is_file()]
    if missing:
        raise InputError(f"{missing[0]}: the bundled speech clips are not installed (bench --stream streams them)")
    parts = [to_16k(clip) for clip in clips]
    audio = np.concatenate(parts)
    repeats = -(-int(seconds * 16000) // audio.shape[0])
    return np.tile(audio, repeats)[: int(seconds * 16000)], [clip.name for clip in clips]


def run_stream_bench(sources: list[str], settings: StreamBenchSettings, log: Callable[[str], None] = print) -> dict[str, Any]:
    from ..convert.voice import open_stream
    from ..machine import cpu_info, machine_isa
    from ..runtime.stream import stream_audio

    if not 0 < settings.seconds <= 600:
        raise InputError(f"--stream-seconds: {settings.seconds} must be between 0 and 600")
    if settings.repeat < 1:
        raise InputError(f"--repeat: {settings.repeat} must be at least 1")
    audio, clips = speech(settings.seconds)

    def make(source: str) -> Any:
        return open_stream(Path(source), encoder=settings.encoder, rmvpe=settings.rmvpe, synthesizer=settings.synthesizer,
                           threads=settings.threads, block=settings.block, context=settings.context, crossfade=settings.crossfade,
                           synth_context=settings.synth_context, f0_method=settings.f0_method, noise="zero")

    streams = {source: make(source) for source in sources}  # loads (and fails) before anything is timed
    totals: dict[str, list[float]] = {source: [] for source in sources}
    stages: dict[str, dict[str, list[float]]] = {source: {} for source in sources}
    for repeat in range(settings.repeat):
        for source in sources:
            stream = streams[source] if repeat == 0 else make(source)
            started = time.perf_counter()
            stream_audio(stream, audio)
            for timing in stream.timings:
                totals[source].append(timing["total"])
                for stage, value in timing.items():
                    if stage != "total":
                        stages[source].setdefault(stage, []).append(value)
            log(f"{source}: pass {repeat + 1} of {settings.repeat}, {stream.blocks} blocks in {time.perf_counter() - started:.1f} s")
    results = []
    for source in sources:
        stream = streams[source]
        values = np.array(totals[source]) * 1000
        budget_ms = stream.geometry.block * 10.0
        results.append({
            "source": source, "label": stream.label, "geometry": stream.geometry.seconds(), "latency_s": stream.latency_s,
            "blocks": int(values.size), "p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99)),
            "max_ms": float(values.max()), "over_budget": float(np.mean(values > budget_ms)), "p99_share_of_block": float(np.percentile(values, 99) / budget_ms),
            "stages_p50_ms": {stage: float(np.median(times) * 1000) for stage, times in stages[source].items()},
        })
    return {
        "mode": "stream", "machine": {**cpu_info(), "class": machine_isa().name},
        "settings": {"seconds": settings.seconds, "repeat": settings.repeat, "threads": settings.threads, "clips": clips},
        "results": results,
    }


def format_stream_table(result: dict[str, Any]) -> str:
    rows = result["results"]
    lines = [f"streaming: {result['settings']['seconds']:g} s of speech per pass, {result['settings']['repeat']} passes, sources interleaved; "
             "time per block"]
    header = f"{'source':<48} {'block':>6} {'context':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'p99/block':>9} {'over':>6}  p50 per stage (ms)"
    lines += [header, "-" * len(header)]
    for row in rows:
        stages = ", ".join(f"{name} {value:.1f}" for name, value in row["stages_p50_ms"].items())
        lines.append(f"{row['source'][-48:]:<48} {row['geometry']['block']:>6g} {row['geometry']['context']:>7g} {row['p50_ms']:>8.1f} "
                     f"{row['p99_ms']:>8.1f} {row['max_ms']:>8.1f} {row['p99_share_of_block'] * 100:>8.0f}% {row['over_budget'] * 100:>5.1f}%  {stages}")
    return "\n".join(lines)
