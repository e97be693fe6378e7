"""End-to-end conversion: the int8 pipeline bundle against the eager fp32 pipeline, on real speech.

    python benchmarks/pipeline_bench.py            # full-size components (v2 40k voice, hubert-base, RMVPE)
    python benchmarks/pipeline_bench.py --quick    # tiny components, a few minutes (proves the script)

Sources are random weights in the official formats (no real weights can be had here): the demo voice
(v2 40k, seed 7), a hubert-base ContentVec folder (``make-encoder``), a full-size ``rmvpe.pt``
(``make-rmvpe``). One pipeline recipe builds the bundle from the shipped int8 OpenVINO recipes
(recipes/cpu-int8-openvino.yaml, recipes/pipeline/encoder-int8-openvino.yaml,
recipes/pipeline/rmvpe-int8-openvino.yaml). The eager reference is the same components in PyTorch
(``convert.eager``: the pipeline ``rvc-compile convert`` runs for a checkpoint), with the same host code.

Timing: ``--seconds`` of real speech (the clips in calibration/data, concatenated), converted by the
eager pipeline and by the bundle in turn, ``--repeat`` times, interleaved; medians of the total and of
each stage (``convert_audio``'s timings). Both at ``--threads`` (torch.set_num_threads / the artifacts'
threads). Accuracy: the bundle's output against the eager output, zero noise, f0 method rmvpe.
Writes benchmarks/results/pipeline[-quick].json and docs/performance/pipeline.md (full runs only).
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
sys.path[:0] = [str(ROOT)]

import numpy as np  # noqa: E402

from rvc_compile.machine import cpu_info, machine_isa  # noqa: E402

STAGES = ("resample", "encoder", "pitch", "retrieval", "synthesizer", "host")


def make_sources(out: Path, quick: bool) -> dict[str, Path]:
    from rvc_compile.components.encoder.synthetic import write_encoder_folder
    from rvc_compile.components.pitch.synthetic import write_rmvpe
    from rvc_compile.components.synthesizer.synthetic import make_checkpoint

    out.mkdir(parents=True, exist_ok=True)
    paths = {"voice": out / "voice.pth", "encoder": out / "contentvec", "rmvpe": out / "rmvpe.pt"}
    if not paths["voice"].exists():
        if quick:
            make_checkpoint(paths["voice"], version="v1", sample_rate="40k", f0=True, size="small", seed=7)
        else:
            make_checkpoint(paths["voice"], version="v2", sample_rate="40k", f0=True, size="full", seed=7)  # the demo voice
    if not (paths["encoder"] / "config.json").exists():
        write_encoder_folder(paths["encoder"], "tiny-v1" if quick else "base")
    if not paths["rmvpe"].exists():
        write_rmvpe(paths["rmvpe"], width=2 if quick else None)
    return paths


def write_recipe(out: Path, sources: dict[str, Path], quick: bool, threads: int) -> Path:
    features = "v1" if quick else "v2"
    common = [f"target.threads={threads}", "latency.seconds=[2.0]", "latency.repeat=1", "latency.warmup=1", "latency.goals=[]"]
    small = ["calibration.count=4", "calibration.seconds=1.0"] if quick else []
    synth = [f"source.checkpoint={sources['voice']}", *common, *small]
    if quick:
        synth += ["shapes.max_frames=600", "shapes.opt_frames=200"]
    encoder = [f"source.checkpoint={sources['encoder']}", f"source.features={features}", *common, *small, "latency.seconds=[1.0]"]
    pitch = [f"source.checkpoint={sources['rmvpe']}", *common, *small]

    def entry(path: str, overrides: list[str]) -> str:
        return json.dumps({"recipe": str(ROOT / path), "set": overrides})

    recipe = out / "pipeline.yaml"
    recipe.write_text(
        "kind: pipeline\n"
        f"name: bench-pipeline-int8-openvino\nversion: 1.0.0\n"
        f"synthesizer: {entry('recipes/cpu-int8-openvino.yaml', synth)}\n"
        f"encoder: {entry('recipes/pipeline/encoder-int8-openvino.yaml', encoder)}\n"
        f"pitch: {entry('recipes/pipeline/rmvpe-int8-openvino.yaml', pitch)}\n"
        "settings: {f0_method: rmvpe, index_rate: 0.75, protect: 0.33, rms_mix_rate: 0.25}\n"
        "golden: {seconds: 4.0}\n"
        f"output_dir: {out / 'artifacts'}\n"
    )
    return recipe


def speech(seconds: float) -> tuple[np.ndarray, list[str]]:
    """``seconds`` of real speech at 16 kHz, concatenated: first the clips of ../shared/data/speech that the
    int8 calibration never saw (other speakers), then the bundled ones. Clips without speech in them are
    skipped (the LJ Speech copies are a DC offset with under 0.002 RMS of signal: calibration/data/README.md)."""
    from rvc_compile.convert.audio import to_16k

    bundled = sorted((ROOT / "calibration" / "data").glob("*.wav"))
    shared = ROOT.parent / "shared" / "data" / "speech"
    held_out = [clip for clip in sorted(shared.glob("*.wav")) if clip.name not in {path.name for path in bundled}] if shared.is_dir() else []
    parts, used, total = [], [], 0
    while total < seconds * 16000:
        for clip in held_out + bundled:
            audio = to_16k(clip)
            if float(np.std(audio)) < 0.01:
                continue
            parts.append(audio)
            used.append(clip.name)
            total += audio.shape[0]
            if total >= seconds * 16000:
                break
    return np.concatenate(parts)[: int(seconds * 16000)].astype(np.float32), used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny components (proves the script; not the published figures)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or ROOT / "out" / ("pipeline-bench-quick" if args.quick else "pipeline-bench")
    started = time.perf_counter()

    import torch

    torch.set_num_threads(args.threads)
    from rvc_compile.build.bundle import build_pipeline
    from rvc_compile.convert.eager import engines_from_recipes
    from rvc_compile.recipe.pipeline import component_recipe, load_pipeline_recipe
    from rvc_compile.runtime import load
    from rvc_compile.runtime.pipeline import ConvertOptions, convert_audio
    from rvc_compile.verify.metrics import compare

    sources = make_sources(out, args.quick)
    recipe = load_pipeline_recipe(write_recipe(out, sources, args.quick, args.threads))
    tick = time.perf_counter()
    built = build_pipeline(recipe, force=True, cache_dir=out / "cache", log=lambda message: print(message, flush=True))
    build_s = time.perf_counter() - tick
    bundle = load(built.path, threads=args.threads)
    eager = engines_from_recipes(*(component_recipe(recipe, role) for role in ("synthesizer", "encoder", "pitch")), None)
    options = ConvertOptions.merge(bundle.settings)
    audio, clips = speech(args.seconds)

    runs: dict[str, list[dict[str, float]]] = {"eager fp32": [], "bundle int8": []}
    outputs: dict[str, np.ndarray] = {}
    engines = {"eager fp32": eager, "bundle int8": bundle.engines}
    for label, engine in engines.items():  # warm-up: first calls compile/allocate
        convert_audio(engine, audio[:32000], 16000, options)
    for repeat in range(args.repeat):
        for label, engine in engines.items():
            timings: dict[str, float] = {}
            tick = time.perf_counter()
            outputs[label] = convert_audio(engine, audio, 16000, options, timings=timings)
            timings["total"] = time.perf_counter() - tick
            runs[label].append(timings)
            print(f"{label} run {repeat + 1}: {timings['total']:.2f} s", flush=True)

    def median(label: str, key: str) -> float:
        return statistics.median(run.get(key, 0.0) for run in runs[label])

    table = {label: {key: round(median(label, key), 4) for key in (*STAGES, "total")} for label in runs}
    speedup = table["eager fp32"]["total"] / table["bundle int8"]["total"]
    metrics = compare(outputs["eager fp32"], outputs["bundle int8"], bundle.sample_rate)
    components = component_accuracy(eager, bundle.engines, audio)
    manifest = json.loads((built.path / "manifest.json").read_text())
    record: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "quick": args.quick,
        "machine": {**cpu_info(), "class": machine_isa().name, "threads": args.threads},
        "audio": {"seconds": args.seconds, "clips": clips}, "repeat": args.repeat,
        "bundle": str(built.path), "build_s": round(build_s, 1), "components": manifest["components"],
        "budget": manifest["accuracy_budget"], "golden": manifest["golden"],
        "times_s": table, "speedup": round(speedup, 2),
        "rtf": {label: round(values["total"] / args.seconds, 4) for label, values in table.items()},
        "accuracy": {key: metrics.get(key) for key in ("snr_db", "log_mel_db", "mrstft", "f0_cents", "voicing_mismatch", "voiced_frames")},
        "component_accuracy": components,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    results = ROOT / "benchmarks" / "results" / ("pipeline-quick.json" if args.quick else "pipeline.json")
    results.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(json.dumps({key: record[key] for key in ("times_s", "speedup", "rtf", "accuracy")}, indent=2))
    if not args.quick:
        write_doc(record, ROOT / "docs" / "performance" / "pipeline.md")


def component_accuracy(eager: Any, compiled: Any, audio: np.ndarray) -> dict[str, Any]:
    """Each compiled network against its eager model on the benchmark's speech: the encoder's features
    (min and mean cosine over frames, relative error) and RMVPE's f0 (mean cents over frames voiced in
    both, share of voicing flips), on the input as the pipeline pads it (1 s reflected either side)."""
    padded = np.pad(audio, (16000, 16000), mode="reflect")
    reference, candidate = eager.encoder(padded), compiled.encoder(padded)
    dot = (reference * candidate).sum(-1) / (np.linalg.norm(reference, axis=-1) * np.linalg.norm(candidate, axis=-1) + 1e-12)
    f0_reference, f0_candidate = np.asarray(eager.rmvpe(padded)), np.asarray(compiled.rmvpe(padded))
    both = (f0_reference > 0) & (f0_candidate > 0)
    cents = np.abs(1200 * np.log2(f0_candidate[both] / f0_reference[both]))
    return {
        "encoder": {"min_cosine": round(float(dot.min()), 4), "mean_cosine": round(float(dot.mean()), 4),
                    "relative_error": round(float(np.linalg.norm(candidate - reference) / np.linalg.norm(reference)), 4)},
        "rmvpe": {"mean_cents": round(float(cents.mean()), 2) if cents.size else None, "p95_cents": round(float(np.percentile(cents, 95)), 2) if cents.size else None,
                  "voicing_mismatch": round(float(np.mean((f0_reference > 0) != (f0_candidate > 0))), 4), "voiced_frames": int(both.sum())},
    }


def _fmt(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def write_doc(record: dict[str, Any], path: Path) -> None:
    machine = record["machine"]
    flags = " ".join(machine.get("flags", [])) if isinstance(machine.get("flags"), list) else machine.get("flags", "")
    times = record["times_s"]
    lines = [
        "# Converting audio end to end: int8 bundle vs eager fp32 pipeline",
        "",
        f"Generated by `python benchmarks/pipeline_bench.py` on {record['created']} in {record['wall_s'] / 60:.1f} min. "
        f"**Machine:** {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, class {machine['class']}, flags {flags}; "
        f"{machine['threads']} threads. Components: random weights in the official formats at full size (v2 40k voice, "
        "hubert-base ContentVec, RMVPE); the bundle from the shipped int8 OpenVINO recipes.",
        "",
        f"Input: {record['audio']['seconds']:.0f} s of real speech ({', '.join(dict.fromkeys(record['audio']['clips']))}; the int8 "
        "calibration used only arctic_a0001 and libritts_6294_86679), "
        f"f0 method rmvpe, index none, protect 0.33, rms mix 0.25; {record['repeat']} interleaved runs, medians.",
        "",
        "| stage | eager fp32 (s) | bundle int8 (s) | ratio |",
        "|---|---|---|---|",
    ]
    for stage in (*STAGES, "total"):
        eager, bundle = times["eager fp32"][stage], times["bundle int8"][stage]
        ratio = f"{eager / bundle:.2f}x" if bundle > 1e-4 else "-"
        name = f"**{stage}**" if stage == "total" else stage
        lines.append(f"| {name} | {eager:.3f} | {bundle:.3f} | {ratio} |")
    accuracy = record["accuracy"]
    parts = record["component_accuracy"]
    lines += [
        "",
        f"**End to end: {record['speedup']:.2f}x** (RTF {record['rtf']['eager fp32']:.3f} eager, {record['rtf']['bundle int8']:.3f} bundle).",
        "",
        f"Accuracy of the bundle's output against the eager pipeline's (zero noise): log-mel {_fmt(accuracy['log_mel_db'], 3)} dB, "
        f"f0 {_fmt(accuracy['f0_cents'])} cents over the {accuracy.get('voiced_frames')} frames the output tracker finds voiced in both, "
        f"voicing mismatch {_fmt(accuracy['voicing_mismatch'], 3)}, SNR {_fmt(accuracy['snr_db'], 1)} dB "
        f"(budget {', '.join(f'{k} {v}' for k, v in record['budget'].items())}). SNR is not a budget end to end: a few cents of "
        "pitch difference shift the phase of the whole output. The output's f0 is measured on the output audio by "
        "`verify`'s YIN tracker: the same period in both outputs, while the f0 the two fed the voice differs (RMVPE below). "
        "On this random-weight voice the tracker's period is evidently not the f0 given, so the end-to-end f0 figure says "
        "nothing here; read the RMVPE figure for pitch.",
        "",
        f"Each network on the same padded 10 s against its eager model: encoder min cosine {parts['encoder']['min_cosine']} "
        f"(mean {parts['encoder']['mean_cosine']}, relative error {parts['encoder']['relative_error']}); RMVPE mean "
        f"{_fmt(parts['rmvpe']['mean_cents'])} cents (95th percentile {_fmt(parts['rmvpe']['p95_cents'])}) over "
        f"{parts['rmvpe']['voiced_frames']} frames voiced in both, voicing flips {_fmt(parts['rmvpe']['voicing_mismatch'] * 100, 1)} %. "
        "The random-weight RMVPE's pitch jumps from frame to frame (a trained one's does not): its int8 cents "
        "figure is not a prediction for a trained RMVPE.",
        "",
        "Golden cases of the bundle (4 s each, checked at build and by `rvc-compile verify`): "
        + "; ".join(f"{case['source']}: log-mel {_fmt(case['metrics']['log_mel_db'], 3)} dB, f0 {_fmt(case['metrics']['f0_cents'])} ct" for case in record["golden"])
        + ".",
        "",
        "Stages: `encoder` the content encoder over each segment, `pitch` RMVPE over the whole padded input "
        "(host log-mel and decoding included), `synthesizer` the voice per segment (the NSF source on the host included), "
        "`host` RVC's numpy steps (high-pass, padding, feature interpolation, protect, RMS mix, trimming), `resample` "
        "the input to 16 kHz. Build of the bundle: "
        f"{record['build_s'] / 60:.1f} min (three components, cached by content).",
    ]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
