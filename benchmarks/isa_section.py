"""One CPU class's section of docs/PERFORMANCE.md: ratios to eager fp32 and to that machine's floor.

    python benchmarks/isa_section.py                 # this machine's class (what `make bench` runs)
    python benchmarks/isa_section.py --class avx2    # as on an AVX2-only CPU, on a newer one (emulated)

A class below this machine's is reached with oneDNN's ISA cap (ONEDNN_MAX_CPU_ISA): OpenVINO and torch's
oneDNN kernels then dispatch as on that class (measured on an AVX2-only machine: the same int8 accuracy,
see docs/PRECISION.md); ONNX Runtime's MLAS ignores the cap, so emulated sections leave ONNX Runtime
out. Steps: the full-size demo checkpoint; the fp32 and int8 (and, with native bf16, bf16) OpenVINO
recipes built for the class (target.cpu); one interleaved `rvc-compile bench` at 2 s under the cap,
with the floor measured under it too. Writes benchmarks/results/isa-CLASS.json and
docs/performance/isa-CLASS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from rvc_compile.machine import cpu_info, emulation_env, machine_isa, resolve_target_cpu  # noqa: E402

# On AMX, OpenVINO 2026.4's int8 convolutions of this model are pathological (docs/PRECISION.md:
# 42 s to compile, 5 GB, slower than fp32 at 2 s, out of memory at 10 s): left out there, with the reason.
SKIP = {"amx": {"cpu-int8-openvino.yaml": "OpenVINO 2026.4's AMX int8 kernels: 42 s compile, 5 GB and slower than fp32 at 2 s, out of memory at 10 s"}}


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    print("+", " ".join(command), flush=True)
    return subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env}, cwd=ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--class", dest="cpu_class", default="auto", help="ISA class (auto: this machine's)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "isa")
    args = parser.parse_args()
    target = resolve_target_cpu(args.cpu_class)
    here = machine_isa()
    if not here.runs_as(target):
        raise SystemExit(f"--class {target.name}: this {here.name} CPU cannot run it (it lacks {', '.join(sorted(target.features - here.features))})")
    env = emulation_env(target, here)
    started = time.perf_counter()
    checkpoint = args.out / "demo_voice_v2_40k.pth"
    if not checkpoint.exists():
        from rvc_compile.components.synthesizer.synthetic import make_checkpoint

        make_checkpoint(checkpoint, version="v2", sample_rate="40k", size="full")
    recipes = ["cpu-fp32-openvino.yaml", "cpu-int8-openvino.yaml"] + (["cpu-bf16-openvino.yaml"] if target.native_bf16 else [])
    if not env:  # natively, ONNX Runtime's kernels are this class's too
        recipes += ["cpu-fp32-onnxruntime.yaml", "cpu-int8-onnxruntime.yaml"]
    artifacts, builds = [], []
    for recipe in recipes:
        if recipe in SKIP.get(target.name, {}):
            builds.append({"recipe": recipe, "status": "skipped", "reason": SKIP[target.name][recipe]})
            continue
        built = _run([sys.executable, "-m", "rvc_compile.cli", "build", f"recipes/{recipe}", "--set", f"source.checkpoint={checkpoint}",
                      "--set", f"target.cpu={target.name}", "--set", "latency.seconds=[2.0]", "--set", "latency.repeat=1",
                      "--set", "latency.warmup=1", "--set", "latency.goals=[]", "--out", str(args.out / target.name), "--force"], env)
        if built.returncode != 0:
            builds.append({"recipe": recipe, "status": "failed", "error": (built.stderr.strip().splitlines() or ["?"])[-1]})
            continue
        path = Path(built.stdout.strip().splitlines()[-1])
        report = json.loads((path / "report.json").read_text())
        case = report["accuracy"]["cases"][-1]
        builds.append({"recipe": recipe, "status": "built", "artifact": str(path), "snr_db": case["snr_db"], "log_mel_db": case["log_mel_db"],
                       "precision": report["artifact"]["precision"], "weight_bits": report["isa"].get("int8_weight_bits")})
        artifacts.append(str(path))
    bench = _run([sys.executable, "-m", "rvc_compile.cli", "bench", str(checkpoint), *artifacts, "--seconds", "2", "--threads", str(args.threads),
                  "--repeat", str(args.repeat), "--json"], env)
    if bench.returncode != 0:
        raise SystemExit(f"bench failed: {(bench.stderr.strip().splitlines() or ['?'])[-1]}")
    result = json.loads(bench.stdout)
    record = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "class": target.name, "machine": {**cpu_info(), "emulated_from": here.name if env else None, "env": env, "threads": args.threads},
              "builds": builds, "bench": result, "wall_time_s": round(time.perf_counter() - started, 1)}
    results = ROOT / "benchmarks" / "results" / f"isa-{target.name}.json"
    results.write_text(json.dumps(record, indent=2))
    document = ROOT / "docs" / "performance" / f"isa-{target.name}.md"
    document.write_text(render(record))
    print(f"wrote {results.relative_to(ROOT)} and {document.relative_to(ROOT)} in {record['wall_time_s']:.0f} s")


def render(record: dict[str, Any]) -> str:
    machine = record["machine"]
    how = (f"emulated on a {machine['emulated_from']} CPU with {', '.join(f'{k}={v}' for k, v in machine['env'].items())}"
           if machine["env"] else "native")
    lines = [f"# CPU class {record['class']}", "",
             f"**Machine:** {machine['cpu']}, {machine['cores']} cores, flags {' '.join(machine['flags'])}; class {record['class']} ({how}); "
             f"{machine['threads']} threads; one interleaved `rvc-compile bench` run at 2 s of audio. "
             "Full-size v2 40k demo voice (random weights, official format). Read the ratios, not the milliseconds.", "",
             "| source | precision | p50 (ms) | RTF | vs eager fp32 | x floor | SNR (dB) | log-mel (dB) |", "|---|---|---|---|---|---|---|---|"]
    accuracy = {Path(b["artifact"]).parent.name + "@" + Path(b["artifact"]).name: b for b in record["builds"] if b["status"] == "built"}
    sources = {s["label"]: s for s in record["bench"]["sources"]}
    for row in record["bench"]["results"]:
        if row.get("status") != "ok":
            continue
        build = accuracy.get(row["source"], {})
        precision = sources[row["source"]].get("precision", "")
        if build.get("weight_bits"):
            precision += f" ({build['weight_bits']}-bit weights)"
        snr = "reference" if row["source"] not in accuracy else f"{build['snr_db']:.1f}"
        mel = "" if row["source"] not in accuracy else f"{build['log_mel_db']:.2f}"
        # Under the cap the peak-rate kernels of ONNX Runtime and MKL still run the real CPU's instructions
        # (ORT's int8 MatMulInteger reached AMX rates as on AVX2): no honest floor there.
        x_floor = None if machine["env"] else row.get("x_floor")
        lines.append(f"| {row['source']} | {precision} | {row['p50_ms']:.0f} | {row['rtf_p50']:.3f} | {row['speedup_vs_first']:.2f}x | "
                     f"{'-' if x_floor is None else format(x_floor, '.2f')} | {snr} | {mel} |")
    for build in record["builds"]:
        if build["status"] != "built":
            lines.append(f"| {build['recipe']} | | {build['status']}: {build.get('reason') or build.get('error')} | | | | | |")
    floor = record["bench"].get("floor") or {}
    peaks = "; ".join(f"{p} {floor[p]['gops']:.0f} GOP/s" for p in ("fp32", "bf16", "int8") if isinstance(floor.get(p), dict) and floor[p].get("gops"))
    if machine["env"]:
        candidates = "; ".join(f"{p}: " + ", ".join(f"{name} {value}" for name, value in floor[p]["candidates"].items())
                               for p in ("fp32", "bf16", "int8") if isinstance(floor.get(p), dict))
        lines += ["", "x floor: not given for an emulated class. The peak-rate kernels of ONNX Runtime (MLAS) and torch's "
                  "matrix products do not obey oneDNN's cap and run the real CPU's instructions, so no floor measured here is "
                  f"the emulated class's (GOP/s measured under the cap: {candidates}; the AVX2-only machine of issue 12 "
                  "measured fp32 113 and int8 238 GOP/s)."]
    else:
        lines += ["", f"Floor (peak matrix-product rates): {peaks or 'not measured'}."]
    lines += ["SNR and log-mel: the artifact's 2 s golden case against the fp32 reference, as built for this class.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
