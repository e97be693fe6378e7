"""The artifact's own report: report.json (strict JSON), report.md and two PNG plots.

matplotlib is imported here only, lazily, with the non-interactive Agg backend.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..verify.metrics import log_mel_db

MEL_PLOT = "mel_comparison.png"
LATENCY_PLOT = "latency.png"


def _number(value: Any, unit: str = "", digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}g}{unit}"
    return f"{value}{unit}"


METRIC_LABELS = {
    "snr_db": "SNR (dB)", "log_mel_db": "log-mel (dB)", "mrstft": "MR-STFT", "f0_cents": "F0 error (cents)",
    "voicing_mismatch": "voicing mismatch", "max_abs_error": "max abs error",
}
_BOOKKEEPING = ("name", "frames", "seconds", "samples", "length_mismatch", "non_finite", "voiced_frames")


def _markdown(report: dict[str, Any], plots: list[str]) -> str:
    artifact, source, machine = report["artifact"], report["source"], report["machine"]
    accuracy, latency = report["accuracy"], report["latency"]
    lines = [
        f"# {artifact['name']} {artifact['version']}",
        "",
        f"Backend **{artifact['backend']}** on {artifact['device']}, precision **{artifact['precision']}**; "
        f"model files {artifact['size_bytes'] / 1e6:.2f} MB; built {artifact['created']} in {report['build_time_s']} s.",
        "",
        f"Source: `{source['checkpoint']}` (sha256 `{source['sha256'][:16]}...`), {source['description']}, "
        f"{source['parameters'] / 1e6:.2f} M parameters, {source['gflop_per_second_of_audio']:.1f} GFLOP per second of input.",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} logical cores, flags {', '.join(machine['flags']) or '-'}; "
        f"{machine['threads']} threads.",
        "",
        "## Accuracy",
        "",
        f"Reference: {accuracy['reference']}; noise `{accuracy['noise']}`. "
        f"Result: **{'PASS' if accuracy['passed'] else 'FAIL'}**.",
        "",
    ]
    # The component's metrics, in the order it reports them (the synthesizer: SNR, log-mel, MR-STFT, F0 ...).
    metrics = [key for key in (accuracy["cases"][0] if accuracy["cases"] else {}) if key not in _BOOKKEEPING]
    lines += ["| case | frames | " + " | ".join(METRIC_LABELS.get(key, key) for key in metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for case in accuracy["cases"]:
        values = ["exact" if key == "snr_db" and case[key] is None else _number(case[key]) for key in metrics]
        lines.append(f"| {case['name']} | {case['frames']} | " + " | ".join(values) + " |")
    budget = ", ".join(f"`{k}` {v}" for k, v in accuracy["budget"].items() if v is not None)
    tightest = ", ".join(f"`{k}` {_number(v)}" for k, v in accuracy["smallest_passing_budget"].items() if v is not None)
    lines += ["", f"Budget: {budget}.", "", f"Smallest budget that would have passed: {tightest or 'exact match'}.", ""]
    lines += ["## Graph checks (against the fp32 PyTorch reference, relative L2 error)", "", "| stage | frames | relative L2 | max abs |", "|---|---|---|---|"]
    for check in report["multi_length_checks"]:
        lines.append(f"| {check['stage']} | {check['frames']} | {check['relative_l2_error']:.3g} | {check['max_abs_error']:.3g} |")
    warm = latency.get("load_time_warm_s")
    load = f"Load time {_number(latency.get('load_time_cold_s', latency['load_time_s']), ' s')} cold" + (
        f", {_number(warm, ' s')} warm (the backend's compiled-model cache)" if warm is not None else " (no compile cache)"
    )
    lines += ["", "## Latency", "", f"{load}; peak memory {_number(latency['peak_memory_mb'], ' MB')} (runtime process).", ""]
    lines += ["| audio (s) | frames | runs | p50 (ms) | p90 (ms) | p99 (ms) | RTF p50 |", "|---|---|---|---|---|---|---|"]
    for case in latency["cases"]:
        lines.append(
            f"| {case['seconds']:.2f} | {case['frames']} | {case['runs']} | {case['p50_ms']:.1f} | {case['p90_ms']:.1f} | "
            f"{case['p99_ms']:.1f} | {case['rtf_p50']:.3f} |"
        )
    lines += ["", f"Goals: {describe_goals(latency['goals'])}. Result: **{'PASS' if latency['passed'] else 'FAIL'}** (only enforced goals can fail).", ""]
    isa = report.get("isa")
    if isa:
        lines += ["## CPU class", "", (
            f"Built for **{isa['target']}** (target.cpu: {isa['requested']}) on a {isa['built_on']} CPU; verified on "
            f"{isa['verified_on']} by {isa['verified_by']}."
            + (f" int8 weights: {isa['int8_weight_bits']} bits." if isa.get("int8_weight_bits") else "")
        ), ""]
    choice = report.get("precision_choice")
    if choice:
        tried = "; ".join(f"{t['precision']}: {t['result']}" for t in choice["tried"]) or "none before it"
        lines += [f"Precision auto chose **{choice['chosen']}** for {choice['cpu']} (left out: {tried}).", ""]
    precision = report.get("precision")
    if precision:
        lines += ["## Precision", ""]
        lines.append(
            f"{precision['low_precision_layers']} of {precision['layers']} weighted layers in {precision['precision']}; "
            f"fp32: {', '.join(f'`{name}`' for name in precision['keep_fp32']) or 'none'}. The NSF sine source is computed on the host in float64."
            if precision["precision"] != "fp32" else "All layers fp32."
        )
        aware = precision.get("accuracy_aware")
        if aware and aware.get("sensitivity"):
            lines += [
                "",
                f"Accuracy-aware quantization kept {len(aware['extra_fp32'])} more layer(s) in fp32 after "
                f"{len(aware['trials'])} trial quantization(s). Per-layer sensitivity: the output's SNR and log-mel distance "
                "when only that layer is int8 (simulated, held-out input), and its cost in GFLOP per second of audio "
                "(what keeping it in fp32 costs):",
                "",
                "| layer | precision | SNR alone in int8 (dB) | log-mel alone in int8 (dB) | GFLOP/s of audio |",
                "|---|---|---|---|---|",
            ]
            ranked = sorted(aware["sensitivity"].items(), key=lambda item: item[1]["snr_db"])
            for name, row in ranked[: max(20, len(aware["extra_fp32"]))]:
                lines.append(f"| `{name}` | {row['precision']} | {row['snr_db']:.1f} | {row['log_mel_db']:.3f} | {row['gflop_per_second']:.3f} |")
            if len(ranked) > max(20, len(aware["extra_fp32"])):
                lines.append(f"| ... {len(ranked) - max(20, len(aware['extra_fp32']))} less sensitive layers, all int8 | | | | |")
            lines += ["", "Trials: " + "; ".join(
                f"{len(trial['extra_fp32'])} extra fp32: {'pass' if trial['passed'] else 'fail (' + str(trial['failure']) + ')'}" for trial in aware["trials"]
            ) + "."]
        lines.append("")
    if report["passes"]:
        lines += ["## Passes", ""]
        for entry in report["passes"]:
            params = ", ".join(f"{k}={v}" for k, v in entry["params"].items()) or "defaults"
            notes = f": {entry['notes']}" if entry["notes"] else ""
            lines.append(f"- `{entry['name']}` ({entry['stage']}; {params}){notes}")
        lines.append("")
    if plots:
        lines += ["## Plots", ""] + [f"![{name}]({name})" for name in plots] + [""]
    return "\n".join(lines)


def plot_mel_comparison(path: Path, reference: np.ndarray, candidate: np.ndarray, sample_rate: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reference_db = log_mel_db(reference, sample_rate)
    floor = float(reference_db.max()) - 80.0
    reference_db = np.maximum(reference_db, floor)
    candidate_db = np.maximum(log_mel_db(candidate, sample_rate), floor)
    difference = candidate_db - reference_db
    limit = max(float(np.abs(difference).max()), 1e-6)
    figure, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True, constrained_layout=True)
    extent = (0.0, reference.shape[0] / sample_rate, 0, reference_db.shape[0])
    for axis, data, title, kwargs in (
        (axes[0], reference_db, "fp32 PyTorch reference: log-mel (dB)", {"cmap": "magma"}),
        (axes[1], candidate_db, "compiled artifact: log-mel (dB)", {"cmap": "magma", "vmin": reference_db.min(), "vmax": reference_db.max()}),
        (axes[2], difference, "difference, compiled - reference (dB)", {"cmap": "coolwarm", "vmin": -limit, "vmax": limit}),
    ):
        image = axis.imshow(data, origin="lower", aspect="auto", extent=extent, **kwargs)
        axis.set_title(title)
        axis.set_ylabel("mel band")
        figure.colorbar(image, ax=axis)
    axes[-1].set_xlabel("time (s)")
    figure.savefig(path, dpi=80)
    plt.close(figure)


def plot_latency(path: Path, samples: dict[str, list[float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 3.5), constrained_layout=True)
    labels = list(samples)
    axis.boxplot([np.asarray(samples[label]) * 1e3 for label in labels], whis=(0, 100))
    axis.set_xticks(range(1, len(labels) + 1), labels)
    axis.set_xlabel("audio length")
    axis.set_ylabel("latency (ms)")
    axis.set_title("latency per call (min, quartiles, max)")
    axis.grid(axis="y", alpha=0.3)
    figure.savefig(path, dpi=80)
    plt.close(figure)


def describe_goals(goals: list[dict[str, Any]]) -> str:
    """One phrase per latency goal: what it asks, what was measured, met or missed, enforced or reported."""
    phrases = []
    for goal in goals:
        asks = []
        if goal.get("max_rtf") is not None:
            measured = f" (measured {goal['rtf_p50']:.3f})" if goal.get("rtf_p50") is not None else ""
            asks.append(f"RTF <= {goal['max_rtf']}{measured}")
        if goal.get("min_speedup_vs_eager") is not None:
            speedup = goal.get("speedup_vs_eager")
            measured = f" (measured {speedup:.2f}x)" if speedup is not None else " (not measured here: needs the eager reference)"
            asks.append(f">= {goal['min_speedup_vs_eager']}x the fp32 eager reference{measured}")
        met = goal.get("met", True)
        status = {True: "met", False: "missed", None: "not fully measured"}[met] + (", enforced" if goal.get("enforce") else ", reported")
        phrases.append(f"{' and '.join(asks)} at {goal['seconds']} s: {status}")
    return "; ".join(phrases) or "none"


def write_report(
    directory: Path,
    report: dict[str, Any],
    *,
    reference_audio: np.ndarray,
    candidate_audio: np.ndarray,
    sample_rate: int | None,
    latency_samples: dict[str, list[float]],
) -> list[str]:
    """Write report.json, the plots and report.md into ``directory``; return the file names written.

    ``sample_rate``: the output's, when it is audio (its mel spectrograms are plotted); None otherwise."""
    directory = Path(directory)
    plots = []
    if sample_rate is not None:
        plot_mel_comparison(directory / MEL_PLOT, reference_audio, candidate_audio, sample_rate)
        plots.append(MEL_PLOT)
    if latency_samples:
        plot_latency(directory / LATENCY_PLOT, latency_samples)
        plots.append(LATENCY_PLOT)
    (directory / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    (directory / "report.md").write_text(_markdown(report, plots))
    return ["report.json", "report.md", *plots]
