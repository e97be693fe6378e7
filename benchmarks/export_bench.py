"""Drop-in ONNX files for VC Client and RVC's OnnxRVC: build, export, run under each client's contract, bench.

    python benchmarks/export_bench.py            # full-size voices: v2 40k (the demo voice), v2 48k, v1 40k
    python benchmarks/export_bench.py --quick    # small models, a few minutes

For each voice: the ONNX Runtime recipes in fp32, fp16 and int8 (recipes/cpu-*-onnxruntime.yaml), each
exported in the vc-client profile, fp32 and int8 also in the rvc-onnx profile (`rvc-compile export`,
which verifies every file against the artifact's fp32 reference before writing it). Each file is then
loaded and run exactly as its client does (tests/test_export.py holds the same feeding code as a test),
and one interleaved `rvc-compile bench` per voice times the vc-client files (bench takes exported files
as `vc-client:FILE.onnx` sources). Writes benchmarks/results/export.json and docs/performance/export.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from rvc_compile.machine import cpu_info, machine_isa  # noqa: E402

VOICES = {"v2-40k": ("v2", "40k"), "v2-48k": ("v2", "48k"), "v1-40k": ("v1", "40k")}
PRECISIONS = ("fp32", "fp16", "int8")
PROFILES = {"vc-client": PRECISIONS, "rvc-onnx": ("fp32", "int8")}


def _run(command: list[str]) -> subprocess.CompletedProcess:
    print("+", " ".join(command), flush=True)
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT)


def _last_line(process: subprocess.CompletedProcess) -> str:
    return (process.stderr.strip().splitlines() or process.stdout.strip().splitlines() or ["?"])[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small models (proves the pipeline; not the published figures)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or ROOT / "out" / ("export-quick" if args.quick else "export")
    started = time.perf_counter()
    from rvc_compile.components.synthesizer.synthetic import make_checkpoint

    record: dict[str, Any] = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "quick": args.quick,
                              "machine": {**cpu_info(), "class": machine_isa().name, "threads": args.threads}, "voices": {}}
    for voice, (version, rate) in VOICES.items():
        checkpoint = out / f"{voice}.pth"
        if not checkpoint.exists():
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            make_checkpoint(checkpoint, version=version, sample_rate=rate, size="small" if args.quick else "full", seed=7)  # seed 7: the demo voice
        entry: dict[str, Any] = {"checkpoint": str(checkpoint), "builds": {}, "exports": []}
        for precision in PRECISIONS:
            overrides = ["--set", f"source.checkpoint={checkpoint}", "--set", f"name={voice}-{precision}", "--set", "latency.seconds=[2.0]",
                         "--set", "latency.repeat=1", "--set", "latency.warmup=1", "--set", "latency.goals=[]"]
            built = _run([sys.executable, "-m", "rvc_compile.cli", "build", f"recipes/cpu-{precision}-onnxruntime.yaml", *overrides,
                          "--out", str(out / "artifacts"), "--force"])
            if built.returncode != 0:
                entry["builds"][precision] = {"status": "failed", "error": _last_line(built)}
                continue
            artifact = Path(built.stdout.strip().splitlines()[-1])
            entry["builds"][precision] = {"status": "built", "artifact": str(artifact)}
            for profile, precisions in PROFILES.items():
                if precision not in precisions:
                    continue
                target = out / "exports" / f"{voice}-{precision}.{profile}.onnx"
                target.parent.mkdir(parents=True, exist_ok=True)
                exported = _run([sys.executable, "-m", "rvc_compile.cli", "export", str(artifact), "--profile", profile, "-o", str(target)])
                item: dict[str, Any] = {"profile": profile, "precision": precision, "file": str(target)}
                if exported.returncode != 0:
                    entry["exports"].append({**item, "status": "failed", "error": _last_line(exported)})
                    continue
                sidecar = json.loads(Path(f"{target}.json").read_text())
                worst = min((case for case in sidecar["cases"] if case.get("snr_db") is not None), key=lambda case: case["snr_db"], default=None)
                item.update(status="exported", size_bytes=target.stat().st_size, verified=sidecar["passed"],
                            worst_snr_db=worst["snr_db"] if worst else None, client_run=_client_run(target, profile))
                entry["exports"].append(item)
        files = [e for e in entry["exports"] if e["status"] == "exported" and e["profile"] == "vc-client"]
        if files:
            bench = _run([sys.executable, "-m", "rvc_compile.cli", "bench", *[f"vc-client:{e['file']}" for e in files], "--seconds", "2",
                          "--threads", str(args.threads), "--repeat", str(args.repeat), "--no-floor", "--json"])
            entry["bench"] = json.loads(bench.stdout) if bench.returncode == 0 else {"error": _last_line(bench)}
        record["voices"][voice] = entry
    record["wall_time_s"] = round(time.perf_counter() - started, 1)
    name = "export-quick" if args.quick else "export"
    results = (out if args.quick else ROOT / "benchmarks" / "results") / f"{name}.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(record, indent=2))
    document = (out if args.quick else ROOT / "docs" / "performance") / f"{name}.md"
    document.write_text(render(record))
    print(f"wrote {results} and {document} in {record['wall_time_s']:.0f} s")


def _client_run(path: Path, profile: str) -> dict[str, Any]:
    """Load and run ``path`` the way its client does, in a fresh process (no rvc-compile imports)."""
    code = f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); import clients, json; print(json.dumps(clients.run_{profile.replace('-', '_')}({str(path)!r}, frames=200)))"
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if process.returncode != 0:
        return {"status": "failed", "error": _last_line(process)}
    return {"status": "ran", **json.loads(process.stdout.strip().splitlines()[-1])}


def render(record: dict[str, Any]) -> str:
    machine = record["machine"]
    lines = ["# Drop-in ONNX files: VC Client and RVC's OnnxRVC", "",
             ("> **QUICK RUN**: small models, to prove the pipeline; not the published figures.\n" if record["quick"] else "")
             + f"Generated by `python benchmarks/export_bench.py` on {record['created']} in {record['wall_time_s'] / 60:.1f} min. "
             f"**Machine:** {machine['cpu']}, {machine['cores']} cores, class {machine['class']}, flags {' '.join(machine['flags'])}; "
             f"{machine['threads']} threads. Voices: random weights in the official format ({'small' if record['quick'] else 'full'} size).", "",
             "Every file was verified by `rvc-compile export` against the artifact's fp32 PyTorch reference (noise as inputs, "
             "golden cases and 3 more lengths) and then loaded and run the way its client does (`tests/clients.py`).", "",
             "| voice | profile | precision | verified | worst SNR (dB) | client run | size MB | p50 at 2 s (ms) | vs fp32 file |",
             "|---|---|---|---|---|---|---|---|---|"]
    for voice, entry in record["voices"].items():
        timing = {}
        bench = entry.get("bench") or {}
        for row in bench.get("results", []):
            if row.get("status") == "ok":
                timing[row["source"]] = row
        fp32_p50 = None
        for item in entry["exports"]:
            if item["profile"] == "vc-client" and item["precision"] == "fp32":
                fp32_p50 = (timing.get(_label(bench, item)) or {}).get("p50_ms")
        for item in entry["exports"]:
            if item["status"] != "exported":
                lines.append(f"| {voice} | {item['profile']} | {item['precision']} | failed: {item['error'][:90]} | | | | | |")
                continue
            row = timing.get(_label(bench, item)) if item["profile"] == "vc-client" else None
            p50 = f"{row['p50_ms']:.0f}" if row else "-"
            ratio = f"{fp32_p50 / row['p50_ms']:.2f}x" if row and fp32_p50 else "-"
            client = item["client_run"]
            ran = f"ran ({client['samples']} samples, max {client['peak']:.2f})" if client.get("status") == "ran" else f"failed: {client.get('error', '')[:60]}"
            snr = "exact" if item["worst_snr_db"] is None else f"{item['worst_snr_db']:.1f}"
            lines.append(f"| {voice} | {item['profile']} | {item['precision']} | {'pass' if item['verified'] else 'FAIL'} | {snr} | {ran} | "
                         f"{item['size_bytes'] / 1e6:.1f} | {p50} | {ratio} |")
        for precision, build in entry["builds"].items():
            if build["status"] != "built":
                lines.append(f"| {voice} | (build) | {precision} | failed: {build['error'][:90]} | | | | | |")
    lines += ["", "p50: one interleaved `rvc-compile bench` run per voice over its vc-client files (inputs fed as VC Client feeds them, "
              "noise drawn in the graph); vs fp32 file: p50 of the fp32 file / p50 of this file. Compare within a voice (one run), "
              "not across voices (separate runs; the machine may have been busier during one). ONNX Runtime's CPU provider has "
              "no fp16 arithmetic, so fp16 files are smaller, not faster, on CPUs (docs/PERFORMANCE.md).", ""]
    return "\n".join(lines)


def _label(bench: dict[str, Any], item: dict[str, Any]) -> str | None:
    for source in bench.get("sources", []):
        if Path(str(source.get("path", ""))).resolve() == Path(item["file"]).resolve():
            return source["label"]
    return None


if __name__ == "__main__":
    main()
