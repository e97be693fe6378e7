"""``rvc-compile export``: an ONNX Runtime artifact -> one ONNX file an existing app loads unchanged.

    result = export_artifact("out/artifacts/voice/1.0.0", "vc-client", "voice.onnx")

Profiles (``export.profiles``): ``vc-client`` (the w-okada VC Client) and ``rvc-onnx`` (RVC WebUI's
``OnnxRVC``). The artifact's graph is kept as built; a small front (``export.front``) computes what the
clients do not (the NSF excitation, the noise draws) and ``export.graph`` joins the two and shapes the
output and metadata as the client reads them.

Every export is verified before anything is written: the same graph with its noise draws as inputs
(``noise="inputs"``) is fed each of the artifact's golden cases as the client would feed it and must
match the stored fp32 reference within the artifact's accuracy budget; at three more lengths it must
match the artifact's own runtime on identical inputs and noise, within the same budget. The exported
file itself is then run once as its client runs it. A failure raises ``GateFailure`` (exit 1) and
writes nothing; the result is recorded beside the file (``VOICE.onnx.json``). docs/EXPORT.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import ArtifactError, ExportError, GateFailure, InputError
from .front import NOISE_MODES, PRIOR_NOISE_INPUT, SOURCE_NOISE_INPUT
from .profiles import PRIOR_NOISE, PROFILES, Profile, client_feed, get_profile, prior_channels

SIDECAR_SUFFIX = ".json"
SIDECAR_FORMAT = 1
EXTRA_LENGTHS = 3  # lengths checked against the artifact's runtime, besides the golden cases

__all__ = ["PROFILES", "ExportResult", "export_artifact", "export_into", "sidecar_path"]


@dataclass(frozen=True)
class ExportResult:
    path: Path  # the exported ONNX file
    sidecar: Path  # its record (VOICE.onnx.json)
    profile: str
    precision: str
    sha256: str
    passed: bool
    cases: list[dict[str, Any]] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)  # the sidecar's contents


def sidecar_path(out_path: Path) -> Path:
    return Path(f"{out_path}{SIDECAR_SUFFIX}")


def export_artifact(artifact_dir: str | Path, profile: str, out_path: str | Path, *, noise: str = "graph",
                    threads: int | None = None, log: Callable[[str], None] = print) -> ExportResult:
    """Export the intact ONNX Runtime artifact ``artifact_dir`` for ``profile``'s client into ``out_path``.

    ``noise``: "graph" (default) draws the noise inside the graph, as the clients expect; "inputs" makes
    the draws extra inputs (``prior_noise``, ``source_noise``): a deterministic file for checking, which
    the clients cannot feed. ExportError/ArtifactError (exit 2) for what cannot be exported,
    GateFailure (exit 1) when the exported graph fails verification; nothing is written then.
    """
    from ..artifact.manifest import MANIFEST, check_sections, verify_or_raise
    from ..backends import BACKENDS
    from ..hashing import sha256_file

    artifact_dir = Path(artifact_dir)
    if profile not in PROFILES:
        raise ExportError.about(artifact_dir, f"unknown export profile {profile!r} (known: {', '.join(PROFILES)})")
    if noise not in NOISE_MODES:
        raise ExportError.about(artifact_dir, f"unknown noise mode {noise!r} (known: {', '.join(NOISE_MODES)})")
    manifest = check_sections(verify_or_raise(artifact_dir), artifact_dir, backends=BACKENDS)  # ArtifactError when tampered
    source = {"artifact": manifest.name, "version": manifest.version, "path": str(artifact_dir.resolve()),
              "manifest_sha256": sha256_file(artifact_dir / MANIFEST)}
    return _export(artifact_dir, manifest, get_profile(profile), Path(out_path), noise=noise, threads=threads, log=log,
                   source=source, open_runtime=lambda: _load_sealed(artifact_dir, threads))


def export_into(artifact_dir: Path, manifest: Mapping[str, Any], entries: list[Any], *, threads: int | None = None,
                log: Callable[[str], None] = print) -> list[ExportResult]:
    """The build's exports (the recipe's ``export`` section): each profile into
    ``artifact_dir/exports/<profile>.onnx`` + sidecar, from the artifact folder being assembled (its
    manifest not yet written; the writer hashes the exported files with the others)."""
    from ..artifact.schema import parse_manifest

    typed = parse_manifest(dict(manifest), artifact_dir)
    results = []
    for entry in entries:
        out = artifact_dir / "exports" / f"{entry.profile}.onnx"
        out.parent.mkdir(exist_ok=True)
        source = {"artifact": typed.name, "version": typed.version, "path": None, "manifest_sha256": None}
        results.append(_export(artifact_dir, typed, get_profile(entry.profile), out, noise=entry.noise, threads=threads, log=log,
                               source=source, open_runtime=lambda: _open_draft(artifact_dir, typed, threads),
                               shown=out.relative_to(artifact_dir).as_posix()))
    return results


# -- what can be exported ---------------------------------------------------------------------------

def _precision(manifest: Any) -> str:
    """The precision the artifact's graph runs (a recipe's ``auto`` resolved by the build)."""
    section = manifest.get("precision")
    if isinstance(section, Mapping) and isinstance(section.get("precision"), str):
        return section["precision"]
    return manifest.target.precision or "fp32"


def check_exportable(path: Path, manifest: Any, profile: Profile) -> None:
    """ExportError naming the artifact when ``profile`` cannot carry it."""
    if manifest.component.kind != "synthesizer":
        raise ExportError.about(path, f"a {manifest.component.kind} artifact; {profile.name} files carry RVC synthesizers only")
    if manifest.backend.name != "onnxruntime":
        raise ExportError.about(path, f"an {manifest.backend.name} artifact; export takes ONNX Runtime artifacts "
                                      "(build the recipe with target.backend: onnxruntime)")
    if manifest.model.frames.static:
        raise ExportError.about(path, f"a static-shape artifact ({manifest.model.frames.min} frames); {profile.client} feeds "
                                      "any length, so export needs shapes.mode: dynamic")
    if not manifest.model["f0"] and profile.no_f0_roles is None:
        raise ExportError.about(path, f"a voice without pitch (f0); {profile.client} runs pitch voices only (profile {profile.name})")
    for item in profile.inputs:
        if item.role == PRIOR_NOISE and prior_channels(item) < manifest.model["inter_channels"]:
            raise ExportError.about(path, f"the voice's prior has {manifest.model['inter_channels']} channels; {profile.client} feeds "
                                          f"{item.name} with {prior_channels(item)}")
    known = {"features", "f0", "speaker", "prior_noise", "source_noise", "excitation"}
    unknown = [name for name in manifest.input_names if name not in known]
    if unknown:
        raise ExportError.about(path, f"the graph takes input {unknown[0]!r}, which no {profile.name} input can feed")


# -- the export ---------------------------------------------------------------------------------------

def _export(path: Path, manifest: Any, profile: Profile, out_path: Path, *, noise: str, threads: int | None,
            log: Callable[[str], None], source: dict[str, Any], open_runtime: Callable[[], Any], shown: str | None = None) -> ExportResult:
    import onnx

    from ..components import get_component
    from ..hashing import sha256_file
    from .graph import compose, profile_metadata

    check_exportable(path, manifest, profile)
    component = get_component("synthesizer", for_build=False)
    spec = component.spec_from_manifest(manifest, path)
    precision = _precision(manifest)
    model_file = path / manifest.backend.files["model"]
    graph_inputs = list(manifest.input_names)
    metadata = profile_metadata(profile, spec)
    started = time.perf_counter()
    try:
        synth = onnx.load(str(model_file))
    except Exception as exc:  # protobuf's DecodeError and friends; hashes were checked, so the file is as built
        raise ArtifactError.about(model_file, f"not a readable ONNX graph ({type(exc).__name__})") from None

    def build(mode: str) -> Any:
        copy = onnx.ModelProto()
        copy.CopyFrom(synth)
        return compose(profile, spec, copy, graph_inputs, precision, noise=mode, metadata=metadata)

    variant = build("inputs")
    final = variant if noise == "inputs" else build(noise)
    log(f"export {profile.name}: composed ({precision}, noise {noise}); verifying")
    threads = threads or manifest.target.threads
    cases = _verify(path, manifest, profile, spec, component, precision, variant, threads, open_runtime)
    failures = [f"{case['name']}: {failure}" for case in cases for failure in case["failures"]]
    data = final.SerializeToString()
    client_run = _client_run(profile, spec, precision, data, manifest, path, threads, noise) if not failures else None
    if client_run is not None and client_run.get("problem"):
        failures.append(f"client run: {client_run['problem']}")
    if failures:
        raise GateFailure(f"{out_path}: the {profile.name} export of {path} failed verification ({len(failures)}): {'; '.join(failures[:3])}",
                          failures=failures)
    digest = hashlib.sha256(data).hexdigest()
    record = _record(profile, manifest, spec, precision, noise, source, out_path, data, digest, metadata, cases, client_run,
                     graph_inputs, sha256_file(model_file), time.perf_counter() - started)
    _write_atomically(out_path, data, sidecar_path(out_path), (json.dumps(record, indent=2, allow_nan=False) + "\n").encode())
    worst = min((case["snr_db"] for case in cases if case.get("snr_db") is not None), default=None)
    log(f"export {profile.name}: {len(cases)} cases pass (worst SNR {'exact' if worst is None else f'{worst:.1f} dB'}); wrote {shown or out_path}")
    return ExportResult(path=out_path, sidecar=sidecar_path(out_path), profile=profile.name, precision=precision, sha256=digest,
                        passed=True, cases=cases, record=record)


def _record(profile: Profile, manifest: Any, spec: Any, precision: str, noise: str, source: dict[str, Any], out_path: Path, data: bytes,
            digest: str, metadata: dict[str, Any] | None, cases: list[dict[str, Any]], client_run: dict[str, Any] | None,
            graph_inputs: list[str], model_sha256: str, seconds: float) -> dict[str, Any]:
    from .. import __version__
    from ..verify.metrics import smallest_passing_budget
    from .front import front_inputs

    types = profile.input_types(has_f0=spec.f0, feature_dim=spec.feature_dim, inter_channels=spec.inter_channels, precision=precision)
    inputs = [{"name": name, "dtype": dtype, "shape": list(shape)} for name, dtype, shape in types]
    if noise == "inputs":
        extra = front_inputs(profile, spec.f0, "inputs")[len(types):]
        shapes = {PRIOR_NOISE_INPUT: [1, spec.inter_channels, "frames"], SOURCE_NOISE_INPUT: [1, "samples"]}
        inputs += [{"name": name, "dtype": "float32", "shape": shapes[name]} for name in extra]
    return {
        "format": SIDECAR_FORMAT,
        "file": out_path.name,
        "sha256": digest,
        "size_bytes": len(data),
        "profile": profile.name,
        "client": profile.client,
        "noise": noise,
        "precision": precision,
        "source": {**source, "model_sha256": model_sha256, "graph_inputs": graph_inputs},
        "component": {"kind": "synthesizer", "spec": spec.to_dict()},  # what bench needs to make the voice's inputs
        "voice": {"version": spec.version, "sample_rate": spec.sampling_rate, "hop_length": spec.hop_length, "f0": spec.f0,
                  "feature_dim": spec.feature_dim, "fixed_speaker": manifest.model.get("fixed_speaker")},
        "inputs": inputs,
        "output": {"name": profile.output, "shape": ["samples"] if profile.flat_output else [1, 1, "samples"], "clipped": profile.clip},
        "metadata": metadata,
        "verification": {
            "noise": "inputs (the same graph with its noise draws as inputs)",
            "budget": dict(manifest.accuracy_budget),
            "smallest_passing_budget": smallest_passing_budget(cases),
        },
        "cases": cases,
        "client_run": client_run,
        "passed": True,
        "rvc_compile_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "export_time_s": round(seconds, 2),
    }


# -- verification -------------------------------------------------------------------------------------

def _session(data: bytes, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _variant_feed(profile: Profile, spec: Any, precision: str, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The variant's inputs for user-level ``arrays``: what the client feeds, then the noise draws."""
    feed = client_feed(profile, features=arrays["features"], f0=arrays.get("f0"), speaker=int(arrays["speaker"][0]),
                       prior_noise=arrays["prior_noise"], has_f0=spec.f0, precision=precision)
    if not profile.prior_noise_input:
        feed[PRIOR_NOISE_INPUT] = np.ascontiguousarray(arrays["prior_noise"], dtype=np.float32)
    if spec.f0:
        feed[SOURCE_NOISE_INPUT] = np.ascontiguousarray(arrays["source_noise"], dtype=np.float32)
    return feed


def _check_lengths(manifest: Any) -> list[int]:
    """Three lengths in the artifact's frame range: its shortest, its optimum (or the middle), its longest."""
    frames = manifest.model.frames
    middle = frames.opt if frames.opt is not None and frames.min < frames.opt < frames.max else (frames.min + frames.max) // 2
    lengths = sorted({frames.min, middle, frames.max})
    candidate = frames.min + 1
    while len(lengths) < EXTRA_LENGTHS and candidate < frames.max:
        lengths = sorted({*lengths, candidate})
        candidate += 1
    return lengths


def _verify(path: Path, manifest: Any, profile: Profile, spec: Any, component: Any, precision: str, variant: Any, threads: int,
            open_runtime: Callable[[], Any]) -> list[dict[str, Any]]:
    from ..artifact.golden import load_case
    from ..verify.metrics import check_budget

    session = _session(variant.SerializeToString(), threads)
    budget = dict(manifest.accuracy_budget)
    speaker = int(manifest.model.get("fixed_speaker") or 0)
    cases = []

    def run(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        (output,) = session.run([profile.output], _variant_feed(profile, spec, precision, arrays))
        return np.asarray(output, dtype=np.float32).reshape(-1)

    def case(name: str, against: str, frames: int, reference: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
        metrics = component.compare(spec, reference, candidate)
        failures = check_budget(metrics, budget, keys=component.BUDGET_KEYS)
        relative = float(np.linalg.norm(candidate - reference) / max(float(np.linalg.norm(reference)), 1e-12)) if not metrics["length_mismatch"] else None
        keep = {metric: metrics.get(metric) for metric, _ in component.BUDGET_KEYS.values()}
        return {"name": name, "against": against, "frames": frames, **keep, "relative_l2_error": relative, "failures": failures, "passed": not failures}

    for golden in manifest.golden:
        arrays = load_case(path / golden.file)
        reference = arrays.pop("reference").reshape(-1)
        cases.append(case(golden.name, "fp32 reference (golden case)", golden.frames, reference, run(arrays)))
    voice = open_runtime()
    for index, frames in enumerate(_check_lengths(manifest)):
        seed = 200 + index
        arrays = component.example_inputs(spec, frames, seed, noise=f"seed:{seed}", speaker=speaker)
        try:
            expected = voice.run_case(arrays)
        except InputError as exc:
            raise ArtifactError.about(path, f"its runtime cannot run {frames} frames ({exc.problem or exc})") from None
        cases.append(case(f"length-{frames}", "artifact runtime", frames, expected, run(arrays)))
    return cases


def _client_run(profile: Profile, spec: Any, precision: str, data: bytes, manifest: Any, path: Path, threads: int, noise: str) -> dict[str, Any]:
    """The exported file run once as its client runs it (first golden case's inputs; its own noise)."""
    from ..artifact.golden import load_case

    session = _session(data, threads)
    golden = manifest.golden[0] if manifest.golden else None
    if golden is not None:
        arrays = load_case(path / golden.file)
    else:
        from ..components import get_component

        arrays = get_component("synthesizer", for_build=False).example_inputs(spec, manifest.model.frames.min, 0)
    feed = _variant_feed(profile, spec, precision, arrays) if noise == "inputs" else client_feed(
        profile, features=arrays["features"], f0=arrays.get("f0"), speaker=int(arrays["speaker"][0]),
        prior_noise=arrays["prior_noise"], has_f0=spec.f0, precision=precision)
    names = [item.name for item in session.get_inputs()]
    values = [feed[name] for name in names]
    if profile.flat_output:  # VC Client: by name, run(["audio"], feed)[0]
        audio = np.asarray(session.run([profile.output], dict(zip(names, values)))[0])
    else:  # OnnxRVC: by position, run(None, ...)[0]
        audio = np.asarray(session.run(None, {session.get_inputs()[i].name: values[i] for i in range(len(values))})[0])
    frames = arrays["features"].shape[1]
    expected = (frames * spec.hop_length,) if profile.flat_output else (1, 1, frames * spec.hop_length)
    problem = None
    if audio.shape != expected:
        problem = f"output shape {list(audio.shape)}, expected {list(expected)}"
    elif not np.isfinite(audio).all():
        problem = "output has NaN or Inf"
    elif profile.clip and float(np.abs(audio).max()) > 1.0:
        problem = f"output reaches {float(np.abs(audio).max()):.3g}, not clipped to [-1, 1]"
    return {"frames": int(frames), "shape": list(audio.shape), "peak": float(np.abs(audio).max()) if audio.size else 0.0,
            "inputs": names, **({"problem": problem} if problem else {})}


# -- opening the artifact's runtime -------------------------------------------------------------------

def _load_sealed(path: Path, threads: int | None) -> Any:
    from ..runtime import load

    return load(path, threads=threads)


def _open_draft(path: Path, manifest: Any, threads: int | None) -> Any:
    """The runtime of an artifact being assembled (no manifest on disk yet), as the build's own checks open it."""
    from ..backends import get_backend
    from ..components import get_component

    runner = get_backend(manifest.backend.name, for_build=False).load(path, dict(manifest.backend.options), threads=threads)
    return get_component(manifest.component.kind, for_build=False).open(path, manifest, runner, 0.0)


# -- writing --------------------------------------------------------------------------------------------

def _write_atomically(out_path: Path, data: bytes, sidecar: Path, record: bytes) -> None:
    """Both files or neither: each written beside its final name and renamed into place."""
    out_path = Path(out_path)
    if out_path.is_dir():
        raise ExportError.about(out_path, "is a folder; give the ONNX file to write (-o VOICE.onnx)")
    if not out_path.parent.is_dir():
        raise ExportError.about(out_path, f"no such folder {out_path.parent}")
    token = secrets.token_hex(4)
    temporary = [out_path.parent / f".{out_path.name}.tmp-{token}", sidecar.parent / f".{sidecar.name}.tmp-{token}"]
    placed = False
    try:
        for target, content in zip(temporary, (data, record)):
            with open(target, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary[0], out_path)
        placed = True
        os.replace(temporary[1], sidecar)
    except BaseException:
        for target in temporary:
            target.unlink(missing_ok=True)
        if placed:  # never a file without the record of its verification
            out_path.unlink(missing_ok=True)
        raise
