"""Render docs/PERFORMANCE.md and its speed-up/accuracy plot from the suite's JSON results.

    python benchmarks/report.py [RESULTS_DIR] [DOC.md]     # default: benchmarks/results docs/PERFORMANCE.md

Everything in the document comes from the JSON files run_all.py writes (run, builds, floor,
bench_lengths, bench_streaming, profiles, sections), so the document can be regenerated without
re-measuring, and every figure in it can be traced to a raw number.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
PLOT_NAME = "speedup_vs_accuracy.png"
REFERENCE = "eager-fp32"
NAIVE = "naive-onnx"
TARGET_SECONDS = 2.0
WINDOW_SECONDS = 10.0  # the runtime's default window (runtime/windows.py: 1000 frames at 100 frames/s)


def _load(results: Path, name: str) -> Any:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _f(value: Any, spec: str = ".2f", missing: str = "-") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return missing
    return format(value, spec)


def _mb(value: Any) -> str:
    return _f(value / 1e6 if value else None, ".1f")


def _rows_at(bench: dict[str, Any], seconds: float) -> dict[str, dict[str, Any]]:
    return {r["source"]: r for r in bench["results"] if abs(r["seconds"] - seconds) < 1e-6}


def _accuracy(source: dict[str, Any], row: dict[str, Any] | None) -> tuple[float | None, float | None, str]:
    """(SNR dB or None for exact, log-mel dB, where from): the artifact's report, else the in-run comparison."""
    report = source.get("report")
    if report and report.get("max_log_mel_db") is not None:
        return report.get("min_snr_db"), report.get("max_log_mel_db"), "report.json golden set (worst case)"
    acc = (row or {}).get("accuracy_vs_reference")
    if acc:
        return acc.get("snr_db"), acc.get("log_mel_db"), f"in-run vs {acc['reference']}"
    return None, None, "-"


def _snr_text(snr: float | None, log_mel: float | None) -> str:
    if snr is None and log_mel is not None:
        return "exact" if log_mel == 0 else "> 120"
    return _f(snr, ".1f")


def _machine(run: dict[str, Any], bench: dict[str, Any]) -> str:
    machine = bench["machine"]
    libraries = ", ".join(f"{k} {v}" for k, v in machine.get("libraries", {}).items())
    return (f"**Machine:** {machine['cpu']}, {machine['cores']} logical cores, CPU flags `{' '.join(machine['flags'])}`; "
            f"**{machine['threads']} threads** for every source; {libraries}.")


# -- targets ---------------------------------------------------------------------------------------

def _is_pruned(source: dict[str, Any]) -> bool:
    passes = (source.get("report") or {}).get("passes") or []
    return any("prun" in str(name) for name in passes)


def _targets(bench: dict[str, Any], sections: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    sources = {s["label"]: s for s in bench["sources"]}
    rows = _rows_at(bench, TARGET_SECONDS)
    artifacts = [s for s in bench["sources"] if s["kind"] == "artifact"]

    def best(select: Callable[[dict[str, Any]], bool]) -> tuple[str | None, float | None]:
        found = [(s["label"], rows[s["label"]].get("speedup_vs_first")) for s in artifacts
                 if select(s) and rows.get(s["label"], {}).get("status") == "ok"]
        found = [f for f in found if f[1] is not None]
        return max(found, key=lambda f: f[1]) if found else (None, None)

    def speed_target(name: str, needed: float, select: Callable[[dict[str, Any]], bool]) -> tuple[str, str, str, str]:
        label, value = best(select)
        if label is None:
            return (name, f">= {needed:g}x", "no such artifact built", "PENDING")
        return (name, f">= {needed:g}x", f"{value:.2f}x ({label})", "PASS" if value >= needed else "FAIL")

    out = [
        speed_target("int8 OpenVINO artifact vs eager fp32", 3.0, lambda s: s["backend"] == "openvino" and s["precision"] == "int8" and not _is_pruned(s)),
        speed_target("bf16/fp16 artifact vs eager fp32", 1.8, lambda s: s["precision"] in ("bf16", "fp16")),
        speed_target("pruned + int8 artifact vs eager fp32", 5.0, lambda s: s["precision"] == "int8" and _is_pruned(s)),
    ]
    int8 = [s for s in artifacts if s["precision"] == "int8" and s.get("size_bytes") and not _is_pruned(s)]
    if int8:
        smallest = min(int8, key=lambda s: s["size_bytes"])
        out.append(("int8 artifact size", "<= 30 MB", f"{smallest['size_bytes'] / 1e6:.1f} MB ({smallest['label']})",
                    "PASS" if smallest["size_bytes"] <= 30e6 else "FAIL"))
    else:
        out.append(("int8 artifact size", "<= 30 MB", "no int8 artifact built", "PENDING"))
    # Static-chunk artifacts take exactly their chunk (streaming); the streaming table measures them.
    linear = [row for row in bench.get("linearity", []) if sources.get(row["source"], {}).get("kind") == "artifact"
              and not (sources[row["source"]].get("frames") or {}).get("static")]
    measured = [row for row in linear if row["linear"] is not None]
    if measured:
        worst = max(measured, key=lambda row: row["rtf_ratio_longest_to_base"])
        out.append(("every artifact linear: RTF at the longest length / RTF at 2 s", "<= 1.10",
                    f"worst {worst['rtf_ratio_longest_to_base']:.2f} ({worst['source']}, {worst['longest_seconds']:g} s)",
                    "PASS" if all(row["linear"] for row in measured) else "FAIL"))
        unmeasured = [row["source"] for row in linear if row["linear"] is None]
        if unmeasured:
            out.append(("artifacts that could not run the longest length", "none", ", ".join(unmeasured), "FAIL"))
    cache = (sections.get("cache") or {}).get("result") or {}
    for key, name, needed in (("second_build_ratio", "second identical build / first build wall time", 0.05),
                              ("warm_load_ratio", "warm OpenVINO load / cold load", 0.5)):
        if cache.get(key) is not None:
            out.append((name, f"<= {needed:g}", f"{cache[key]:.3f}", "PASS" if cache[key] <= needed else "FAIL"))
        else:
            out.append((name, f"<= {needed:g}", "not measured (benchmarks/section_cache.py, issue 6)", "PENDING"))
    if cache.get("precision_change_hits") is not None:
        reused = [stage for stage in cache["precision_change_hits"] if stage == "capture" or stage.startswith("pass:")]
        out.append(("precision-only change reuses capture and passes", "cache hits", ", ".join(cache["precision_change_hits"]) or "none",
                    "PASS" if "capture" in reused and len(reused) == len([s for s in cache["precision_change_hits"] + cache["precision_change_misses"] if s == "capture" or s.startswith("pass:")]) else "FAIL"))
    return out


# -- tables ----------------------------------------------------------------------------------------

def _length_table(bench: dict[str, Any], seconds: float) -> list[str]:
    sources = {s["label"]: s for s in bench["sources"]}
    rows = _rows_at(bench, seconds)
    naive = rows.get(NAIVE)
    lines = [
        "| source | backend | precision | p50 ms | p90 ms | p99 ms | RTF p50 | speed-up vs eager fp32 | vs naive ONNX | x floor | peak RSS MB | size MB | SNR dB | log-mel dB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, source in sources.items():
        row = rows.get(label)
        if row is None:
            continue
        snr, log_mel, _ = _accuracy(source, row)
        if row["status"] != "ok":
            lines.append(f"| {label} | {source['backend']} | {source['precision']} | {row['status']}: {row['reason'][:90]} |  |  |  |  |  |  |  |  |  |  |")
            continue
        versus_naive = naive["p50_ms"] / row["p50_ms"] if naive and naive.get("status") == "ok" else None
        lines.append(
            f"| {label} | {source['backend']} | {source['precision']} | {row['p50_ms']:.1f} | {row['p90_ms']:.1f} | {row['p99_ms']:.1f} | "
            f"{row['rtf_p50']:.3f} | {_f(row.get('speedup_vs_first'))}x | {_f(versus_naive)}x | {_f(row.get('x_floor'))} | "
            f"{_f(row.get('peak_rss_mb'), '.0f')} | {_mb(source.get('size_bytes'))} | {_snr_text(snr, log_mel)} | {_f(log_mel, '.3f')} |"
        )
    return lines


def _linearity_table(bench: dict[str, Any]) -> list[str]:
    lengths = sorted({r["seconds"] for r in bench["results"]})
    memory = {(r["source"], r["seconds"]): r.get("peak_rss_mb") for r in bench["results"] if r["status"] == "ok"}
    lines = [
        "| source | " + " | ".join(f"RTF {s:g} s" for s in lengths) + " | longest / 2 s | linear | "
        + " | ".join(f"peak MB {s:g} s" for s in lengths if s >= TARGET_SECONDS) + " | memory longest / 2 s | memory longest / 10 s |",
        "|---|" + "---:|" * len(lengths) + "---:|---|" + "---:|" * len([s for s in lengths if s >= TARGET_SECONDS]) + "---:|---:|",
    ]
    for row in bench.get("linearity", []):
        rtf = row["rtf_p50"]
        cells = []
        for s in lengths:
            entry = next((r for r in bench["results"] if r["source"] == row["source"] and abs(r["seconds"] - s) < 1e-6), None)
            if entry is None:
                cells.append("-")
            elif entry["status"] == "ok":
                cells.append(_f(rtf.get(f"{s:g}"), ".3f"))
            else:
                cells.append(entry["status"])
        verdict = "-" if row["linear"] is None else ("yes" if row["linear"] else "**no**")
        longest = row.get("longest_seconds")
        peaks = [_f(memory.get((row["source"], s)), ".0f") for s in lengths if s >= TARGET_SECONDS]
        at_window, at_longest = memory.get((row["source"], WINDOW_SECONDS)), memory.get((row["source"], longest))
        versus_window = at_longest / at_window if at_window and at_longest and longest and longest > WINDOW_SECONDS else None
        lines.append(
            f"| {row['source']} | " + " | ".join(cells) + f" | {_f(row['rtf_ratio_longest_to_base'])} | {verdict} | "
            + " | ".join(peaks) + f" | {_f(row.get('peak_rss_ratio_longest_to_base'))} | {_f(versus_window)} |"
        )
    return lines


def _streaming_table(streaming: dict[str, Any]) -> list[str]:
    sources = {s["label"]: s for s in streaming["sources"]}
    lines = [
        "| source | backend | precision | chunk p50 ms | p90 ms | p99 ms | RTF p50 | RTF p99 | speed-up vs eager fp32 | x floor | peak RSS MB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in streaming["results"]:
        source = sources[row["source"]]
        if row["status"] != "ok":
            lines.append(f"| {row['source']} | {source['backend']} | {source['precision']} | {row['status']}: {row['reason'][:100]} |  |  |  |  |  |  |  |")
            continue
        lines.append(
            f"| {row['source']} | {source['backend']} | {source['precision']} | {row['p50_ms']:.1f} | {row['p90_ms']:.1f} | {row['p99_ms']:.1f} | "
            f"{row['rtf_p50']:.3f} | {row['rtf_p99']:.3f} | {_f(row.get('speedup_vs_first'))}x | {_f(row.get('x_floor'))} | {_f(row.get('peak_rss_mb'), '.0f')} |"
        )
    return lines


def _floor_section(floor: dict[str, Any], bench: dict[str, Any]) -> list[str]:
    lines = [
        f"Peak rates measured here ({floor['method']}, {floor['threads']} threads). 1 multiply-add = 2 operations; "
        "the best implementation is the peak, the others are shown for comparison.",
        "",
        "| precision | peak GOP/s | by | all implementations (GOP/s) |",
        "|---|---:|---|---|",
    ]
    for precision in ("fp32", "bf16", "int8"):
        entry = floor.get(precision) or {}
        others = ", ".join(f"{name}: {_f(value, '.0f')}" for name, value in entry.get("candidates", {}).items())
        lines.append(f"| {precision} | {_f(entry.get('gops'), '.0f')} | {entry.get('implementation') or '-'} | {others} |")
    reference = next((s for s in bench["sources"] if s["label"] == REFERENCE), bench["sources"][0])
    gflop = reference.get("gflop_per_second_of_audio")
    if gflop:
        lines += ["", f"The model needs **{gflop:.1f} GFLOP per second of audio** ({reference['flops_counted_from']}). "
                  "The floor real-time factor of a precision is that divided by its peak:", "",
                  "| precision | floor RTF | floor ms for 2 s |", "|---|---:|---:|"]
        for precision in ("fp32", "bf16", "int8"):
            gops = (floor.get(precision) or {}).get("gops")
            if gops:
                lines.append(f"| {precision} | {gflop / gops:.4f} | {2000 * gflop / gops:.1f} |")
    lines += ["", "Each source's FLOPs are counted on its own graph where it has one (so pruned graphs count less):", "",
              "| source | GFLOP per s of audio | counted from | precision | x floor at 2 s |", "|---|---:|---|---|---:|"]
    rows = _rows_at(bench, TARGET_SECONDS)
    for source in bench["sources"]:
        row = rows.get(source["label"], {})
        lines.append(f"| {source['label']} | {_f(source.get('gflop_per_second_of_audio'), '.1f')} | {source['flops_counted_from']} | "
                     f"{source['precision']} ({row.get('floor_precision', '-')} floor) | {_f(row.get('x_floor'))} |")
    return lines


def _profile_tables(profile: dict[str, Any]) -> list[str]:
    if "error" in profile:
        return [f"Profile failed: {profile['error']}"]
    lines = [f"{profile['what']} at {profile['seconds']:g} s, {profile['threads']} threads, mean of {profile['runs']} runs "
             f"({profile['method']}): {profile['total_ms']:.0f} ms per run.", "",
             "| module | ms | share | GFLOP | achieved GOP/s |", "|---|---:|---:|---:|---:|"]
    for row in profile["by_module"]:
        lines.append(f"| {row['module']} | {row['ms']:.1f} | {_f(row['share'] * 100 if row['share'] is not None else None, '.1f')} % | "
                     f"{_f(row.get('gflop'))} | {_f(row.get('achieved_gops'), '.1f')} |")
    if profile.get("by_op_type"):
        lines += ["", "| op type | ms | share |", "|---|---:|---:|"]
        for row in profile["by_op_type"][:10]:
            lines.append(f"| {row['op_type']} | {row['ms']:.1f} | {row['share'] * 100:.1f} % |")
    return lines


def _profile_comparison(reference: dict[str, Any], artifact: dict[str, Any], floor: dict[str, Any] | None) -> list[str]:
    """Module by module: eager against the fastest artifact, and how far each runs from the fp32 peak."""
    if "error" in reference or "error" in artifact:
        return []
    peak = ((floor or {}).get("fp32") or {}).get("gops")
    eager = {row["module"]: row for row in reference["by_module"]}
    compiled = {row["module"]: row for row in artifact["by_module"]}
    lines = ["| module | eager ms | artifact ms | speed-up | eager GOP/s | artifact GOP/s |" + (" artifact % of fp32 peak |" if peak else ""),
             "|---|---:|---:|---:|---:|---:|" + ("---:|" if peak else "")]
    for module in [m for m in eager if m in compiled]:
        a, b = eager[module], compiled[module]
        speedup = a["ms"] / b["ms"] if b["ms"] > 0 else None
        row = (f"| {module} | {a['ms']:.1f} | {b['ms']:.1f} | {_f(speedup)}x | {_f(a.get('achieved_gops'), '.1f')} | "
               f"{_f(b.get('achieved_gops'), '.1f')} |")
        if peak:
            row += f" {_f(100 * b['achieved_gops'] / peak if b.get('achieved_gops') else None, '.0f')} |"
        lines.append(row)
    heaviest = max(reference["by_module"], key=lambda row: row["ms"])
    decoder = sum(row["ms"] for row in reference["by_module"] if row["module"].startswith("dec")) / reference["total_ms"]
    lines += ["", f"In the eager reference the decoder takes {100 * decoder:.0f} % of the time; the heaviest group is "
              f"{heaviest['module']} ({100 * heaviest['share']:.0f} %)."]
    return lines


def _changes_table(bench: dict[str, Any]) -> list[str]:
    """Pairs of sources that differ in exactly one thing (backend, precision or pass list): what that change did."""
    rows = _rows_at(bench, TARGET_SECONDS)

    def traits(source: dict[str, Any]) -> dict[str, Any]:
        passes = (source.get("report") or {}).get("passes")
        kind = source["kind"]
        return {
            "backend": "pytorch eager" if kind.startswith("eager") else ("onnxruntime" if kind == NAIVE else source["backend"]),
            "precision": source["precision"],
            "passes": tuple(passes) if passes is not None else ("(naive export)",) if kind == NAIVE else ("(eager)",),
        }

    sources = [s for s in bench["sources"] if rows.get(s["label"], {}).get("status") == "ok"]
    lines = ["| change | from | to | speed-up | size | SNR dB (from -> to) |", "|---|---|---|---:|---:|---|"]
    found = 0
    for i, a in enumerate(sources):
        for b in sources[i + 1:]:
            ta, tb = traits(a), traits(b)
            differing = [k for k in ta if ta[k] != tb[k]]
            if len(differing) != 1:
                continue
            key = differing[0]
            slow, fast = (a, b) if rows[a["label"]]["p50_ms"] >= rows[b["label"]]["p50_ms"] else (b, a)
            ts, tf = traits(slow), traits(fast)
            describe = (lambda t: ", ".join(t[key]) or "(none)") if key == "passes" else (lambda t: str(t[key]))
            size_ratio = (fast["size_bytes"] / slow["size_bytes"]) if fast.get("size_bytes") and slow.get("size_bytes") else None
            snr_slow, mel_slow, _ = _accuracy(slow, rows[slow["label"]])
            snr_fast, mel_fast, _ = _accuracy(fast, rows[fast["label"]])
            lines.append(
                f"| {key}: {describe(ts)} -> {describe(tf)} | {slow['label']} | {fast['label']} | "
                f"{rows[slow['label']]['p50_ms'] / rows[fast['label']]['p50_ms']:.2f}x | {_f(size_ratio)}x | "
                f"{_snr_text(snr_slow, mel_slow)} -> {_snr_text(snr_fast, mel_fast)} |"
            )
            found += 1
    if not found:
        lines.append("| (no two sources differ in exactly one of backend, precision, passes) | | | | | |")
    return lines


def _builds_table(builds: dict[str, Any]) -> list[str]:
    lines = ["| recipe | artifact | backend | precision | status | build time s | passes |", "|---|---|---|---|---|---:|---|"]
    for build in builds["builds"]:
        status = build["status"] if build["status"] != "failed" else f"**failed**: {build.get('error', '')[:160]}"
        lines.append(f"| {build['recipe']} | {build.get('name', '-')} | {build.get('backend', '-')} | {build.get('precision', '-')} | {status} | "
                     f"{_f(build.get('build_time_s'), '.0f')} | {', '.join(build.get('passes') or []) or '-'} |")
    return lines


# -- plot ------------------------------------------------------------------------------------------

def plot_speedup_vs_accuracy(bench: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _rows_at(bench, TARGET_SECONDS)
    figure, axes = plt.subplots(figsize=(8, 5))
    markers = {"eager-fp32": "s", "eager-bf16": "D", "naive-onnx": "^", "artifact": "o"}
    largest_loss = 0.0
    for source in bench["sources"]:
        row = rows.get(source["label"])
        if not row or row["status"] != "ok" or row.get("speedup_vs_first") is None:
            continue
        _, log_mel, _ = _accuracy(source, row)
        x = log_mel if log_mel is not None else 0.0
        largest_loss = max(largest_loss, x)
        axes.scatter([x], [row["speedup_vs_first"]], marker=markers.get(source["kind"], "o"), s=60,
                     label=f"{source['label']} ({source['precision']})")
        axes.annotate(source["label"], (x, row["speedup_vs_first"]), textcoords="offset points", xytext=(5, 4), fontsize=7)
    axes.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    axes.set_xscale("symlog", linthresh=1e-3)
    axes.set_xlim(0.0, max(1.0, largest_loss * 3.0))
    axes.set_xlabel("accuracy loss: log-mel distance to the fp32 reference, dB (artifacts: worst golden case; baselines: this run)", fontsize=8)
    axes.set_ylabel(f"speed-up vs eager fp32 at {TARGET_SECONDS:g} s (p50)")
    machine = bench["machine"]
    axes.set_title(f"v2 40k synthesizer, {machine['cpu']}, {machine['threads']} threads", fontsize=9)
    axes.grid(True, which="both", alpha=0.3)
    if axes.collections:
        axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


# -- the document ----------------------------------------------------------------------------------

def _isa_sections(results: Path) -> list[str]:
    """One section per CPU class measured (``benchmarks/isa_section.py`` writes results/isa-CLASS.json)."""
    import importlib.util

    files = sorted(Path(results).glob("isa-*.json"))
    if not files:
        return []
    spec = importlib.util.spec_from_file_location("isa_section", Path(__file__).resolve().parent / "isa_section.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lines = ["## Per CPU class", "",
             "The tables after this section come from the machine named in them. `make bench` also writes the section of the "
             "CPU class it runs on (`benchmarks/isa_section.py`; a lower class can be measured on a newer CPU under oneDNN's ISA "
             "cap, said so in its section). Each: eager fp32, the OpenVINO artifacts built for that class (`target.cpu`), one "
             "interleaved run at 2 s, ratios to eager fp32 and to the floor measured under the same cap.", ""]
    for path in files:
        text = module.render(json.loads(path.read_text()))
        lines += ["#" + text.splitlines()[0], *text.splitlines()[1:], ""]
    return lines


def _pipeline_section(results: Path) -> list[str]:
    """Converting audio end to end (``benchmarks/pipeline_bench.py`` writes results/pipeline.json): its own
    machine line, the per-stage table and the target, with the details in docs/performance/pipeline.md."""
    path = Path(results) / "pipeline.json"
    if not path.exists():
        return ["## Converting audio end to end", "", "Not measured yet: `python benchmarks/pipeline_bench.py`.", ""]
    record = json.loads(path.read_text())
    machine, times = record["machine"], record["times_s"]
    flags = " ".join(machine.get("flags", []))
    verdict = "PASS" if record["speedup"] >= 3.0 else "FAIL"
    lines = [
        "## Converting audio end to end", "",
        f"`benchmarks/pipeline_bench.py` on {record['created']}: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, class "
        f"{machine.get('class')}, flags `{flags}`; {machine.get('threads')} threads. {record['audio']['seconds']:g} s of real speech, "
        "the eager fp32 pipeline (encoder, RMVPE, voice in PyTorch) against the int8 OpenVINO bundle built from the shipped "
        f"recipes, {record['repeat']} interleaved runs, medians. Details: [performance/pipeline.md](performance/pipeline.md).", "",
        "| stage | eager fp32 (s) | bundle int8 (s) | ratio |", "|---|---|---|---|",
    ]
    for stage in ("encoder", "pitch", "synthesizer", "host", "total"):
        eager, bundle = times["eager fp32"][stage], times["bundle int8"][stage]
        lines.append(f"| {stage} | {eager:.3f} | {bundle:.3f} | {eager / bundle:.2f}x |" if bundle > 1e-4 else f"| {stage} | {eager:.3f} | {bundle:.3f} | - |")
    accuracy = record["accuracy"]
    lines += ["", f"Target: int8 bundle >= 3x the eager fp32 pipeline: **{record['speedup']:.2f}x, {verdict}**; output against "
              f"the eager pipeline's: log-mel {accuracy['log_mel_db']:.2f} dB (budget {record['budget'].get('max_log_mel_db')} dB).", ""]
    return lines


def _stream_section(results: Path) -> list[str]:
    """Real-time streaming (``benchmarks/stream_bench.py`` writes results/stream.json): per-block times of the
    block engine and the targets, with the details in docs/performance/stream.md and docs/STREAMING.md."""
    path = Path(results) / "stream.json"
    if not path.exists():
        return ["## Real-time streaming", "", "Not measured yet: `python benchmarks/stream_bench.py`.", ""]
    record = json.loads(path.read_text())
    machine, geometry = record["machine"], record["geometry"]
    flags = " ".join(machine.get("flags", []))
    block_ms = geometry["block"] * 1000
    default = f"{geometry['contexts'][0]:g}"
    lines = [
        "## Real-time streaming", "",
        f"`benchmarks/stream_bench.py` on {record['created']}: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, class "
        f"{machine.get('class')}, flags `{flags}`; {machine.get('threads')} threads. {record['audio']['seconds']:g} s of real speech "
        f"streamed through `runtime.stream.Stream` in {block_ms:.0f} ms blocks ({geometry['crossfade'] * 1000:.0f} ms crossfade, 10 ms "
        f"search), {record['repeat']} passes interleaved. Time per block (a block slower than {block_ms:.0f} ms is a dropout). "
        "Details: [performance/stream.md](performance/stream.md), how it works: [STREAMING.md](STREAMING.md).", "",
        "| stream | p50 ms | p99 ms | max ms | p99 / block | blocks over | encoder | pitch | synthesizer |", "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in record["streams"].items():
        stages = row["stages_p50_ms"]
        lines.append(f"| {name} | {row['p50_ms']} | {row['p99_ms']} | {row['max_ms']} | {row['p99_share_of_block'] * 100:.0f} % | "
                     f"{row['over_budget'] * 100:.1f} % | {stages.get('encoder', 0):.1f} | {stages.get('pitch', 0):.1f} | {stages.get('synthesizer', 0):.1f} |")
    synth = record["synthesizer_stage"][default]
    full = record["streams"][f"int8 block, {default} s context"]
    accuracy = record["streamed_vs_offline"]
    lines += [
        "",
        f"Targets ({default} s context, the default): synthesizer path p99 < 50 % of the block: **{synth['p99_ms']} ms, "
        f"{synth['p99_share_of_block'] * 100:.0f} %, {'PASS' if synth['p99_share_of_block'] < 0.5 else 'FAIL'}**; full int8 pipeline p99 < 100 %: "
        f"**{full['p99_ms']} ms, {full['p99_share_of_block'] * 100:.0f} %, {'PASS' if full['p99_share_of_block'] < 1.0 else 'FAIL'}**.",
        "",
        "Streamed output against the offline conversion of the same file by the same components (log-mel dB; budget 1.5 dB): "
        + "; ".join(f"{name}: {row['log_mel_db']:.2f}" for name, row in accuracy.items()) + ".",
        "",
    ]
    pitch = record.get("pitch_cache")
    if pitch:
        rows = pitch["methods"]
        lines += [
            f"The pitch cache ({pitch['context']} s context) against the same tracker over the whole file: pm (Praat, real speech) "
            f"{rows['pm']['f0_cents']:.1f} cents mean, {rows['pm']['f0_cents_p95']:.1f} p95, {rows['pm']['voicing_mismatch'] * 100:.1f} % voicing "
            f"flips (budget 20 cents, 5 %); random-weight RMVPE {rows['rmvpe']['f0_cents']:.0f} cents (a random network's f0 is not "
            "smooth and moves with its context: no statement about real RMVPE).",
            "",
        ]
    return lines


def _training_section(results: Path) -> list[str]:
    """The distillation trainer (``benchmarks/train_bench.py`` writes results/train.json): its speed-ups,
    time to the held-out target against the loop before them, the adversarial option; details in docs/TRAINING.md."""
    path = Path(results) / "train.json"
    if not path.exists():
        return ["## Distillation training", "", "Not measured yet: `python benchmarks/train_bench.py`.", ""]
    from rvc_compile.measure.training import markdown

    record = json.loads(path.read_text())
    target, adversarial = record["time_to_target"], record["adversarial"]
    today, ours = target["today"], target["ours"]
    warm = record["speedups"]["variants"]["+teacher cache, warm"]["speedup_over_today"]
    return [
        "## Distillation training", "",
        "`benchmarks/train_bench.py` (`rvc-compile train-bench` plus two comparisons): the v2 40k demo voice, decoder pruned 50 %, "
        "fp32 on the CPU. How the trainer works: [TRAINING.md](TRAINING.md).", "",
        markdown(record["speedups"], record["machine"]).rstrip(), "",
        f"Targets: throughput at least 1.5x today's loop with an identical loss curve: **{warm:.2f}x with the teacher's outputs cached "
        f"(a resumed run, a sweep of pruning ratios), {'PASS' if warm >= 1.5 else 'FAIL'}**; the first run of a voice gains only the "
        "smaller speed-ups (table). Pruned voice at most 0.35 dB held-out log-mel in at most half of today's wall time: "
        f"**{ours['held_out_log_mel_db']:.3f} dB in {ours['total_s']:.0f} s against today's {today['held_out_log_mel_db']:.3f} dB in "
        f"{today['total_s']:.0f} s ({target['wall_ratio']:.2f}x), {'PASS' if target['target_met'] else 'FAIL'}** (ours: least-squares refit, "
        f"{ours['steps']} steps over {ours['crops']} fixed crops, empty teacher cache; today: slicing, {today['steps']} steps).", "",
        f"Adversarial option ({adversarial['steps']} steps from the same start, {adversarial['discriminator']}): held-out log-mel "
        f"{adversarial['with']['held_out_log_mel_db']:.3f} dB with it, {adversarial['without']['held_out_log_mel_db']:.3f} dB without; "
        f"{adversarial['with']['steps_per_s']:.2f} against {adversarial['without']['steps_per_s']:.2f} steps/s.", "",
    ]


def _scale_section(results: Path) -> list[str]:
    """Many voices (``benchmarks/scale_bench.py`` writes results/scale.json): a bound voice against its full
    build, and the executors' voices per hour; details in docs/SCALE.md."""
    path = Path(results) / "scale.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    if "binding" not in record:
        return ["## Many voices", "", "Not measured yet: `python benchmarks/scale_bench.py binding` (and `executors`).", ""]
    binding = record["binding"]
    summary, machine = binding["summary"], binding["machine"]
    pairs = ", ".join(f"{b['snr_db_worst']:.2f} / {f['snr_db_worst']:.2f} dB" for b, f in zip(binding["bound"], binding["full"]))
    lines = [
        "## Many voices", "",
        f"`benchmarks/scale_bench.py` on {machine['cpu']}, {machine['cores']} cores, flags {' '.join(machine['flags']) or 'none of note'}; "
        "how binding and the Ray executor work: [SCALE.md](SCALE.md).", "",
        f"Per-voice weight binding (recipes/demo.yaml without fold_speaker, {binding['size']}-size voices, one build at a time): a bound voice "
        f"took **{summary['bound_s_median']:.1f} s against {summary['full_s_median']:.1f} s for its full build ({summary['bound_over_full']:.2f}x; "
        f"target at most {summary['target']:.2f}x: {'PASS' if summary['met'] else 'FAIL'})**, at the same accuracy "
        f"(worst golden SNR bound / full: {pairs}). "
        f"The first voice of an architecture compiles it: {binding['first_voice_compiles_architecture']['seconds']:.0f} s.", "",
    ]
    for key, label in (("executors", "small voices"), ("executors_full", "full-size voices")):
        if key in record:
            run = record[key]
            lines += [f"Executors ({label}, {run['voices']} voices, {run['workers']} workers, target.threads=1): local pool "
                      f"{run['summary']['local']['voices_per_hour_median']:.0f} voices/h, Ray {run['summary']['ray']['voices_per_hour_median']:.0f} voices/h "
                      f"({run['summary']['ray_vs_local']:.2f}x)" + (f"; {run['note']}" if run.get("note") else "") + ".", ""]
    return lines


def _aoti_section(results: Path) -> list[str]:
    """AOTInductor beside the ONNX backends on this CPU (results/aoti_cpu.json, one ``rvc-compile bench``
    run), and on a GPU where ``benchmarks/gpu_check.sh`` has written results/gpu_check.json."""
    lines = ["## AOTInductor (CPU, and GPU where one was lent)", ""]
    path = Path(results) / "aoti_cpu.json"
    if not path.exists():
        lines += ["Not measured yet: build recipes/cpu-bf16-aoti.yaml and bench it beside the ONNX artifacts (docs/AOTI.md).", ""]
    else:
        bench = json.loads(path.read_text())
        machine = bench["machine"]
        accuracy = {source["label"]: source.get("report") or {} for source in bench["sources"]}
        lines += [
            f"One interleaved `rvc-compile bench` run on {machine['cpu']}, {machine['cores']} cores, flags {' '.join(machine['flags'])}, "
            f"{machine['threads']} threads, torch {machine['libraries'].get('torch')}; full-size v2 40k voice (random weights). "
            "How the backend works: [AOTI.md](AOTI.md).", "",
            "| source | " + " | ".join(f"{s:g} s p50 ms (x eager)" for s in bench["settings"]["seconds"]) + " | worst golden SNR dB | peak MB |",
            "|---|" + "---:|" * (len(bench["settings"]["seconds"]) + 2),
        ]
        for source in bench["sources"]:
            label = source["label"]
            rows = {row["seconds"]: row for row in bench["results"] if row["source"] == label and row["status"] == "ok"}
            cells = [f"{rows[s]['p50_ms']:.0f} ({rows[s]['speedup_vs_first']:.2f}x)" if s in rows else "-" for s in bench["settings"]["seconds"]]
            snr = accuracy[label].get("min_snr_db")
            peak = max((row.get("peak_rss_mb") or 0) for row in rows.values()) if rows else 0
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {snr:.1f} | {peak:.0f} |" if snr is not None else f"| {label} | " + " | ".join(cells) + f" | exact | {peak:.0f} |")
        lines.append("")
        failed = [f"{row['source']} at {row['seconds']:g} s: {row.get('reason') or row.get('error') or row['status']}" for row in bench["results"] if row["status"] != "ok"]
        if failed:
            lines += ["Failed in this run: " + "; ".join(failed) + ".", ""]
    gpu = Path(results) / "gpu_check.json"
    if gpu.exists():
        check = json.loads(gpu.read_text())
        lines += [f"GPU ({check['device']}, torch {check['torch']}, `benchmarks/gpu_check.sh`): " + "; ".join(
            f"{row['seconds']:g} s{' blocks' if row['block'] else ''}: " + ", ".join(f"{k} {v:.2f}x" for k, v in row["speedup_vs_eager_fp16"].items())
            for row in check["cases"]) + f" against eager fp16. Target 3x on 0.5 s: {'met' if check.get('target', {}).get('met') else 'not met'}.", ""]
    else:
        lines += ["GPU: no GPU machine was lent to the sessions so far; `bash benchmarks/gpu_check.sh` on one writes "
                  "results/gpu_check.json, which this section then shows.", ""]
    return lines


def render(results: Path, doc: Path) -> Path:
    results, doc = Path(results), Path(doc)
    run, builds, floor = _load(results, "run"), _load(results, "builds"), _load(results, "floor")
    lengths, streaming = _load(results, "bench_lengths"), _load(results, "bench_streaming")
    profiles, sections = _load(results, "profiles") or {}, _load(results, "sections") or {}
    plot = plot_speedup_vs_accuracy(lengths, doc.parent / "performance" / PLOT_NAME)
    try:
        results_text = results.resolve().relative_to(ROOT)
    except ValueError:
        results_text = results
    machine = _machine(run, lengths)
    lines = ["# Performance", ""]
    if run.get("quick"):
        lines += ["> **QUICK RUN** (`run_all.py --quick`): a small model and few repetitions, to prove the pipeline. "
                  "These are not the published figures.", ""]
    lines += [
        f"Generated by `make bench` (`benchmarks/run_all.py`) on {lengths['created']} in {run['wall_time_s'] / 60:.1f} min; "
        f"raw results: `{results_text}/*.json`. Regenerate the document from them with `python benchmarks/report.py`. "
        f"Model: RVC v2 40k synthesizer with pitch (`{run['checkpoint']}`, {run['model_size']} size, random weights in the official format).",
        "",
        machine,
        "",
        "## Targets",
        "",
        f"Ratios from one interleaved run, {TARGET_SECONDS:g} s of audio, {lengths['machine']['threads']} threads. "
        "PENDING: the artifact or measurement does not exist yet.",
        "",
        "| target | needed | measured | verdict |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in _targets(lengths, sections)],
        "",
        *_isa_sections(results),
        *_pipeline_section(results),
        *_stream_section(results),
        *_training_section(results),
        *_scale_section(results),
        *_aoti_section(results),
        f"## {TARGET_SECONDS:g} s of audio",
        "",
        machine,
        "",
        *_length_table(lengths, TARGET_SECONDS),
        "",
        "speed-up: p50 of eager fp32 / p50 of the source (same run, same inputs). x floor: p50 / floor time of the source's precision. "
        "SNR and log-mel: artifacts from their own report.json (worst golden case, against the fp32 reference); baselines "
        "compared in this run against eager fp32 on the benchmark input. Size: model files an app ships (artifacts), the "
        "checkpoint (eager), the exported ONNX (naive).",
        "",
        f"## Independent chunks: {streaming['settings']['chunk_seconds']:g} s (the graph alone, no context)",
        "",
        machine,
        "",
        f"{streaming['results'][0].get('chunks', '?')} consecutive chunks of {streaming['settings']['chunk_seconds']:g} s per pass, "
        f"{streaming['settings']['repeat']} passes per source, interleaved; latency is per chunk call and RTF = chunk time / chunk "
        "duration. Each chunk is an independent call with no extra context frames: the graph's own cost, not a real-time "
        "stream (that is the streaming section above). n/a: the artifact's frame range does not admit the chunk length.",
        "",
        *_streaming_table(streaming),
        "",
        "## How cost grows with the work",
        "",
        machine,
        "",
        "Real-time factor (p50) per length and peak resident memory of each source's own process. An artifact must stay "
        "linear: RTF at the longest length within 10 % of RTF at 2 s; memory should be bounded by the runtime's window, "
        "not the input. Dynamic artifacts run inputs longer than their window (1000 frames, 10 s, by default) in overlapped "
        "windows, so their memory grows up to 10 s and then stays flat: compare the longest length with 10 s. "
        "skipped: a slow baseline not run at that length to keep the suite within its time budget.",
        "",
        *_linearity_table(lengths),
        "",
        "## The physical floor",
        "",
        *_floor_section(floor, lengths),
        "",
        "## Where time goes",
        "",
    ]
    if profiles.get("reference"):
        lines += ["### Eager fp32 reference", "", *_profile_tables(profiles["reference"]), ""]
    for failure in profiles.get("profile_failures", []):
        lines += [f"Profiling {failure['label']} failed ({failure['error']}); the next fastest artifact is profiled instead.", ""]
    if profiles.get("best_artifact"):
        lines += [f"### Fastest profiled artifact at {TARGET_SECONDS:g} s: {profiles['best_artifact']['label']}", "",
                  *_profile_tables(profiles["best_artifact"]), ""]
    if profiles.get("reference") and profiles.get("best_artifact"):
        comparison = _profile_comparison(profiles["reference"], profiles["best_artifact"], floor)
        if comparison:
            lines += ["### Module by module", "", *comparison, ""]
    lines += [
        "## What each optimization changed",
        "",
        f"Every pair of sources that differ in exactly one of backend, precision or pass list, at {TARGET_SECONDS:g} s "
        "(speed-up and size: slower / faster source).",
        "",
        *_changes_table(lengths),
        "",
        f"## Speed-up against accuracy loss",
        "",
        f"![speed-up vs accuracy loss](performance/{plot.name})",
        "",
        "## Builds",
        "",
        f"Every recipe in recipes/, built against the demo checkpoint with `rvc-compile build --set source.checkpoint=...`.",
        "",
        *_builds_table(builds),
        "",
    ]
    lines += _sections_text(sections)
    lines += [
        "## Method",
        "",
        "- One command: `make bench` (`python benchmarks/run_all.py`); budget ~20 min on this 2-core machine once the "
        "artifacts exist (a fresh build of every recipe adds its build time; artifacts from the same recipe and checkpoint are reused).",
        "- Every source runs in its own worker process, loaded once; only one computes at a time. Per length: one warm-up "
        "run each, then the repetitions round-robin across sources, so drift in the machine hits all alike. Time is taken "
        "inside the worker around the model call (`time.perf_counter`); a 10 ms pause before each call lets the previous "
        "source's idle thread pool stop spinning.",
        f"- Repetitions: {run['plan']['repeat']} at lengths up to 2 s, fewer above (about the same audio per length, at least "
        f"{run['plan']['min_repeat']}). Percentiles over few runs are coarse; the run count is in the JSON.",
        "- Inputs, identical for all: real RVC content features tiled to length with a seeded perturbation, a phrase-like "
        "f0 contour, seeded Gaussian noise for the prior and the NSF source (`golden.example_case`, `inputs.make_noise`).",
        "- Peak memory: the resident-set high-water mark (`VmHWM`) of each source's own worker process; lengths run shortest first, so the value after a "
        "length is the peak at that length (it includes the loaded model and the Python runtime).",
        "- eager fp32: `ReferenceModel.infer` (what RVC's inference runs on CPU); eager bf16: the same under "
        "`torch.autocast('cpu', torch.bfloat16)`.",
        f"- naive ONNX: `torch.onnx.export` with the TorchScript tracer at the benchmark length, static shapes (no dynamic "
        "axes), no passes, no precision work, run by ONNX Runtime with default session options plus the thread count. A "
        "trace only runs at its traced length, so one is exported per length, in a separate process, before timing. "
        "RVC's own exporter declares dynamic time axes; a static export can only give ORT more to specialise on, so this "
        "baseline is not pessimistic.",
        "- Floor: FLOPs per second of audio counted at 2 s (convolutions, transposed convolutions, matrix products; "
        "OpenVINO shape inference on an artifact's graph, torch's FlopCounterMode on the checkpoint's model), divided by "
        "the measured peak of the source's precision class (int8 -> int8, bf16 -> bf16, fp32/fp16 -> fp32: this CPU has "
        "no fp16 arithmetic).",
        "- Profiles: forward hooks for the eager model; ONNX Runtime's profiler or OpenVINO's PERF_COUNT for artifacts.",
        "",
    ]
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(lines))
    return doc


def _sections_text(sections: dict[str, Any]) -> list[str]:
    """Sections other issues add (benchmarks/section_*.py): their own ``render``, else their JSON."""
    lines = []
    expected = {"cache": "Build cache (issue 6)", "pruning": "Pruning (issue 5)"}
    for name in sorted(set(expected) | set(sections)):
        title = expected.get(name, name.replace("_", " ").capitalize())
        lines += [f"## {title}", ""]
        entry = sections.get(name)
        if entry is None:
            lines += [f"Not measured yet: `benchmarks/section_{name}.py` (with `run(context) -> dict` and optionally "
                      "`render(result) -> str`) plugs it into this suite.", ""]
            continue
        if entry["status"] != "ok":
            lines += [f"Failed: {entry['error']}", ""]
            continue
        renderer = _section_renderer(name)
        lines += [renderer(entry["result"]) if renderer else "```json\n" + json.dumps(entry["result"], indent=2) + "\n```", ""]
    return lines


def _section_renderer(name: str) -> Callable[[Any], str] | None:
    import importlib.util

    path = ROOT / "benchmarks" / f"section_{name}.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location(f"benchmarks_section_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, "render", None)


def main(argv: list[str] | None = None) -> None:
    args = argv if argv is not None else sys.argv[1:]
    results = Path(args[0]) if args else ROOT / "benchmarks" / "results"
    doc = Path(args[1]) if len(args) > 1 else ROOT / "docs" / "PERFORMANCE.md"
    print(render(results, doc))


if __name__ == "__main__":
    main()
