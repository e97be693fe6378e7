"""Real-time streaming: the block engine on compiled int8 graphs against the eager fp32 engine, on real speech.

    python benchmarks/stream_bench.py            # full-size components (v2 40k voice, hubert-base, RMVPE)
    python benchmarks/stream_bench.py --quick    # tiny components, a few minutes (proves the script)

Sources are those of benchmarks/pipeline_bench.py (random weights in the official formats; its int8
OpenVINO bundle is built or taken from the shared cache), plus, per context length, a real-time block
artifact built from recipes/stream/cpu-int8-openvino-block.yaml (the int8 OpenVINO synthesizer recipe
with a ``stream:`` section).

Every configuration streams the same ``--seconds`` of real speech (16 kHz, the clips of pipeline_bench)
block by block through ``runtime.stream.Stream``, in real-time order, ``--repeat`` passes interleaved;
every block counts (a stream compiles and warms up its engines when made). Per configuration: p50/p99/max
block time, the share of blocks over the block's duration, per-stage p50s. Configurations:

- ``int8 block``: int8 encoder + int8 RMVPE + int8 block synthesizer (the full real-time pipeline);
- ``int8 dynamic``: the same with the bundle's dynamic synthesizer over the rendered frames + 0.5 s;
- ``eager fp32``: the same stream on the eager fp32 components (block reference synthesizer).

The synthesizer path is the synthesizer stage of ``int8 block``. Accuracy: the streamed output (lag
removed) against the offline conversion of the whole file by the same components (``convert``, with
index, protect and the loudness mix off, as the stream has none of them) in log-mel dB, and the f0 the
stream rendered each frame with (its rolling pitch cache) against the estimator's f0 over the whole file
in cents; both for the eager fp32 components (the cost of streaming itself) and for int8. (The output's
own f0 says nothing here: random-weight voices do not render a clean pitch.)
Writes benchmarks/results/stream[-quick].json and docs/performance/stream.md (full runs only).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import numpy as np  # noqa: E402

from rvc_compile.machine import cpu_info, machine_isa  # noqa: E402

BLOCK_RECIPE = "recipes/stream/cpu-int8-openvino-block.yaml"


def build_block(recipe_path: Path, voice: Path, out: Path, block: float, context: float, crossfade: float, threads: int, quick: bool) -> Path:
    from rvc_compile.build.pipeline import build
    from rvc_compile.recipe.schema import load_recipe

    overrides = [f"source.checkpoint={voice}", f"target.threads={threads}", f"stream.block={block}", f"stream.context={context}",
                 f"stream.crossfade={crossfade}", f"name=bench-block-{int(round(context * 100))}", "latency.repeat=1"]
    if quick:
        overrides += ["calibration.count=4", "calibration.seconds=1.0"]
    recipe = load_recipe(recipe_path, overrides)
    return build(recipe, out_dir=out / "artifacts", force=True, cache_dir=out / "cache", log=lambda message: print(message, flush=True)).path


def offline(engines: Any, audio: np.ndarray) -> np.ndarray:
    from rvc_compile.runtime.pipeline import ConvertOptions, convert_audio

    options = ConvertOptions.merge({}, f0_method="rmvpe", index_rate=0.0, protect=0.5, rms_mix_rate=1.0)
    return convert_audio(engines, audio, 16000, options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny components (proves the script; not the published figures)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--block", type=float, default=0.25)
    parser.add_argument("--contexts", default="2.5,1.0", help="context lengths in seconds, comma-separated; the first is the default")
    parser.add_argument("--crossfade", type=float, default=0.05)
    parser.add_argument("--no-eager", action="store_true", help="skip the eager fp32 stream (slow on full-size components)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--pitch-check", action="store_true",
                        help="only the pitch cache against whole-file pitch (pm and rmvpe), added to the last results' JSON")
    args = parser.parse_args()
    if args.pitch_check:
        pitch_check(args)
        return
    out = args.out or ROOT / "out" / ("pipeline-bench-quick" if args.quick else "pipeline-bench")  # shares pipeline_bench's sources and cache
    contexts = [float(part) for part in args.contexts.split(",") if part.strip()]
    started = time.perf_counter()

    import torch

    torch.set_num_threads(args.threads)
    from pipeline_bench import make_sources, speech, write_recipe

    from rvc_compile.build.bundle import build_pipeline
    from rvc_compile.convert.eager import engines_from_recipes
    from rvc_compile.recipe.pipeline import component_recipe, load_pipeline_recipe
    from rvc_compile.runtime import load
    from rvc_compile.runtime.pipeline import Engines
    from rvc_compile.runtime.stream import Stream, stream_audio
    from rvc_compile.verify.metrics import compare

    sources = make_sources(out, args.quick)
    recipe = load_pipeline_recipe(write_recipe(out, sources, args.quick, args.threads))
    bundle_path = build_pipeline(recipe, force=True, cache_dir=out / "cache", log=lambda message: print(message, flush=True)).path
    bundle = load(bundle_path, threads=args.threads)
    eager = engines_from_recipes(*(component_recipe(recipe, role) for role in ("synthesizer", "encoder", "pitch")), None)
    audio, clips = speech(args.seconds)

    blocks = {context: load(build_block(ROOT / BLOCK_RECIPE, sources["voice"], out, args.block, context, args.crossfade, args.threads, args.quick),
                            threads=args.threads) for context in contexts}
    compiled = bundle.engines
    configurations: dict[str, tuple[Engines, dict[str, Any]]] = {}
    for context in contexts:
        geometry = {"block": args.block, "context": context, "crossfade": args.crossfade}
        configurations[f"int8 block, {context:g} s context"] = (
            Engines(encoder=compiled.encoder, synthesizer=blocks[context], rmvpe=compiled.rmvpe, label="int8 block"), {})
        configurations[f"int8 dynamic, {context:g} s context"] = (compiled, geometry)
        if not args.no_eager:
            reference = eager.synthesizer.blocks(args.block, context, args.crossfade)
            configurations[f"eager fp32, {context:g} s context"] = (
                Engines(encoder=eager.encoder, synthesizer=reference, rmvpe=eager.rmvpe, label="eager fp32"), geometry)

    def make(name: str) -> Stream:
        engines, geometry = configurations[name]
        return Stream(engines, f0_method="rmvpe", noise="zero", **geometry)

    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in configurations}
    outputs: dict[str, np.ndarray] = {}
    f0_tracks: dict[str, Any] = {}
    for repeat in range(args.repeat):
        for name in configurations:
            stream = make(name)
            outputs[name] = stream_audio(stream, audio)
            stats = stream.stats()
            f0_tracks[name] = np.concatenate(list(stream.block_f0))[stream.geometry.delay :] if stream.block_f0 else None
            runs[name].append({**stats, "totals_ms": [t["total"] * 1000 for t in stream.timings]})
            print(f"{name} pass {repeat + 1}: p50 {stats['p50_ms']:.1f} ms, p99 {stats['p99_ms']:.1f} ms, max {stats['max_ms']:.1f} ms, "
                  f"{stats['over_budget'] * 100:.1f} % over", flush=True)

    offline_outputs = {"eager fp32": offline(eager, audio), "int8": offline(compiled, audio)}
    table: dict[str, Any] = {}
    for name, passes in runs.items():
        totals = np.concatenate([np.array(run["totals_ms"]) for run in passes])
        stages = {stage: round(statistics.median(run["stages_p50_ms"].get(stage, 0.0) for run in passes), 2)
                  for stage in passes[0]["stages_p50_ms"]}
        table[name] = {
            "blocks": int(totals.size), "p50_ms": round(float(np.percentile(totals, 50)), 1), "p99_ms": round(float(np.percentile(totals, 99)), 1),
            "max_ms": round(float(totals.max()), 1), "over_budget": round(float(np.mean(totals > args.block * 1000)), 4),
            "p99_share_of_block": round(float(np.percentile(totals, 99)) / (args.block * 1000), 3), "stages_p50_ms": stages,
        }
    offline_f0 = {"eager fp32": np.asarray(eager.rmvpe(audio)), "int8": np.asarray(compiled.rmvpe(audio))}
    accuracy = {}
    for name, streamed in outputs.items():
        kind = "eager fp32" if name.startswith("eager") else "int8"
        reference = offline_outputs[kind]
        n = min(reference.shape[0], streamed.shape[0])
        metrics = compare(reference[:n], streamed[:n], bundle.sample_rate)
        accuracy[name] = {"log_mel_db": metrics.get("log_mel_db"), "snr_db": metrics.get("snr_db"), **pitch_agreement(f0_tracks[name], offline_f0[kind])}
    synth_p99 = {}
    for context in contexts:  # the synthesizer stage alone, per block, in the int8 block stream
        stream = make(f"int8 block, {context:g} s context")
        stream_audio(stream, audio)
        times = np.array([t["synthesizer"] for t in stream.timings]) * 1000
        synth_p99[f"{context:g}"] = {"p50_ms": round(float(np.percentile(times, 50)), 1), "p99_ms": round(float(np.percentile(times, 99)), 1),
                                     "p99_share_of_block": round(float(np.percentile(times, 99)) / (args.block * 1000), 3)}
    record: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "quick": args.quick,
        "machine": {**cpu_info(), "class": machine_isa().name, "threads": args.threads},
        "audio": {"seconds": args.seconds, "clips": clips}, "repeat": args.repeat,
        "geometry": {"block": args.block, "contexts": contexts, "crossfade": args.crossfade, "search": 0.01},
        "bundle": str(bundle_path), "block_artifacts": {f"{c:g}": str(blocks[c].path) for c in contexts},
        "streams": table, "synthesizer_stage": synth_p99, "streamed_vs_offline": accuracy,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    results = ROOT / "benchmarks" / "results" / ("stream-quick.json" if args.quick else "stream.json")
    results.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(json.dumps({key: record[key] for key in ("streams", "synthesizer_stage", "streamed_vs_offline")}, indent=2, default=str))
    if not args.quick:
        write_doc(record, ROOT / "docs" / "performance" / "stream.md")


def pitch_check(args: Any) -> None:
    """The streamed pitch path alone, for every tracker that can run in real time: each stream's f0 per
    block (its rolling cache) against the same tracker over the whole file. Praat's autocorrelation
    (pm) says what the cache costs on real speech; random-weight RMVPE's pitch is not smooth enough to
    say it (a random network's f0 jumps between frames and with its context)."""
    from pipeline_bench import speech

    from rvc_compile.runtime import load
    from rvc_compile.runtime.pipeline import Engines, PitchEngine
    from rvc_compile.runtime.stream import Stream, stream_audio

    results = ROOT / "benchmarks" / "results" / ("stream-quick.json" if args.quick else "stream.json")
    record = json.loads(results.read_text())
    bundle = load(record["bundle"], threads=args.threads)
    audio, _ = speech(record["audio"]["seconds"])
    default = f"{record['geometry']['contexts'][0]:g}"
    voice = load(record["block_artifacts"][default], threads=args.threads)
    engines = Engines(encoder=bundle.engines.encoder, synthesizer=voice, rmvpe=bundle.engines.rmvpe, label="int8 block")
    checks = {}
    for method in ("pm", "rmvpe"):
        stream = Stream(engines, f0_method=method, noise="zero")
        stream_audio(stream, audio)
        streamed = np.concatenate(list(stream.block_f0))[stream.geometry.delay :]
        whole = PitchEngine(method, rmvpe=bundle.engines.rmvpe)(audio, audio.shape[0] // 160 + 1)
        checks[method] = {**pitch_agreement(streamed, np.asarray(whole)), "p50_ms": round(stream.stats()["p50_ms"], 1)}
        print(method, checks[method], flush=True)
    record["pitch_cache"] = {"context": default, "methods": checks}
    results.write_text(json.dumps(record, indent=2, default=str) + "\n")
    if not args.quick:
        write_doc(record, ROOT / "docs" / "performance" / "stream.md")


def pitch_agreement(streamed: np.ndarray, offline: np.ndarray) -> dict[str, float]:
    """The f0 the stream rendered each frame with (its rolling cache) against the estimator's f0 over the
    whole file, frame by frame: mean |cents| where both are voiced, and the share of frames whose voicing differs."""
    n = min(streamed.shape[0], offline.shape[0])
    a, b = np.asarray(streamed[:n], dtype=np.float64), np.asarray(offline[:n], dtype=np.float64)
    both = (a > 0) & (b > 0)
    cents = np.abs(1200 * np.log2(a[both] / b[both])) if both.any() else np.array([0.0])
    return {"f0_cents": float(cents.mean()), "f0_cents_p95": float(np.percentile(cents, 95)), "voicing_mismatch": float(np.mean((a > 0) != (b > 0))),
            "voiced_frames": int(both.sum())}


def write_doc(record: dict[str, Any], path: Path) -> None:
    machine = record["machine"]
    flags = " ".join(machine.get("flags", [])) if isinstance(machine.get("flags"), list) else machine.get("flags", "")
    block_ms = record["geometry"]["block"] * 1000
    lines = [
        "# Streaming benchmark (generated by benchmarks/stream_bench.py)",
        "",
        f"Machine: {machine.get('cpu', '?')}, class {machine['class']}, {machine['threads']} threads; flags: {flags}.",
        f"Audio: {record['audio']['seconds']:g} s of real speech ({', '.join(record['audio']['clips'][:4])}...), streamed in "
        f"{block_ms:.0f} ms blocks with {record['geometry']['crossfade'] * 1000:.0f} ms crossfade and 10 ms SOLA search; "
        f"{record['repeat']} passes interleaved, every block counted (streams warm their engines up when made).",
        "",
        "| stream | p50 ms | p99 ms | max ms | p99 / block | blocks over | encoder | pitch | synthesizer | sola |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in record["streams"].items():
        stages = row["stages_p50_ms"]
        lines.append(f"| {name} | {row['p50_ms']} | {row['p99_ms']} | {row['max_ms']} | {row['p99_share_of_block'] * 100:.0f} % | "
                     f"{row['over_budget'] * 100:.1f} % | {stages.get('encoder', 0):.1f} | {stages.get('pitch', 0):.1f} | "
                     f"{stages.get('synthesizer', 0):.1f} | {stages.get('sola', 0):.2f} |")
    lines += ["", "Synthesizer stage alone (int8 block artifact), per block:", "", "| context s | p50 ms | p99 ms | p99 / block |", "|---|---|---|---|"]
    for context, row in record["synthesizer_stage"].items():
        lines.append(f"| {context} | {row['p50_ms']} | {row['p99_ms']} | {row['p99_share_of_block'] * 100:.0f} % |")
    lines += ["", "Streamed output against the offline conversion of the whole file by the same components (log-mel), and the f0 the "
              "stream rendered with against RMVPE over the whole file (random-weight RMVPE: its f0 jumps between frames and with its "
              "context, so these cents say little; the pitch-cache table below uses Praat's pm on the same speech):", "",
              "| stream | log-mel dB | f0 cents (mean) | f0 cents (p95) | voicing flips |", "|---|---|---|---|---|"]
    for name, row in record["streamed_vs_offline"].items():
        lines.append(f"| {name} | {row['log_mel_db']:.2f} | {row['f0_cents']:.1f} | {row['f0_cents_p95']:.1f} | {row['voicing_mismatch'] * 100:.1f} % |")
    if "pitch_cache" in record:
        lines += ["", f"The pitch cache alone ({record['pitch_cache']['context']} s context): the f0 each block was rendered with "
                  "against the same tracker over the whole file (`--pitch-check`):", "",
                  "| tracker | f0 cents (mean) | f0 cents (p95) | voicing flips | frames voiced in both | p50 ms per block |",
                  "|---|---|---|---|---|---|"]
        for method, row in record["pitch_cache"]["methods"].items():
            lines.append(f"| {method} | {row['f0_cents']:.1f} | {row['f0_cents_p95']:.1f} | {row['voicing_mismatch'] * 100:.1f} % | "
                         f"{row['voiced_frames']} | {row['p50_ms']} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
