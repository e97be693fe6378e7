"""``rvc-compile inspect``: what a checkpoint is and what it costs to run, or what CPU an artifact is for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .components.synthesizer.checkpoint import load_checkpoint
from .machine import cpu_info
from .components.synthesizer.reference import flops_per_second, parameter_counts


def describe_checkpoint(path: Path, *, config_path: Path | None = None, sample_rate: str | None = None) -> dict[str, Any]:
    checkpoint = load_checkpoint(path, config_path=config_path, sample_rate=sample_rate)
    spec = checkpoint.spec
    flops = flops_per_second(spec, checkpoint.state_dict)
    return {
        "path": str(path),
        "sha256": checkpoint.sha256,
        "layout": checkpoint.layout,
        "version": spec.version,
        "sample_rate": spec.sampling_rate,
        "f0": spec.f0,
        "feature_dim": spec.feature_dim,
        "hop_length": spec.hop_length,
        "n_speakers": spec.n_speakers,
        "stored_dtype": checkpoint.stored_dtype,
        "weight_norm": checkpoint.weight_norm_style,
        "info": checkpoint.info,
        "config": spec.to_config_list(),
        "channels": spec.channel_map or None,  # pruned widths (rvc-compile-pruned checkpoints)
        "pruning": checkpoint.pruning,
        "parameters": parameter_counts(checkpoint.state_dict),
        "gflop_per_second_of_audio": {name: round(value / 1e9, 3) for name, value in flops.items()},
        "machine": cpu_info(),
    }


def describe_component_source(kind: str, path: Path) -> dict[str, Any]:
    """What a content encoder folder or an rmvpe.pt is: its component's own reading of it (the checks a
    build starts with), its spec and its cost."""
    from .components import get_component
    from .recipe.schema import Source

    component = get_component(kind)
    loaded = component.load(Source(checkpoint=Path(path), component=kind))
    flops = component.flops_per_second(loaded.spec, loaded.weights)
    return {
        "kind": kind, "path": str(path), "sha256": loaded.sha256, "description": loaded.description,
        "spec": loaded.spec.to_dict() if hasattr(loaded.spec, "to_dict") else str(loaded.spec),
        "gflop_per_second_of_audio": {name: round(value / 1e9, 3) for name, value in flops.items()},
        **({"features": {"v2": f"{loaded.spec.get('hidden_size')}-dim (layer 12)",
                         "v1": f"{loaded.spec.get('classifier_proj_size')}-dim (layer 9 + final_proj)"}} if kind == "content-encoder" else {}),
        "machine": cpu_info(),
    }


def describe_source(path: Path, *, config_path: Path | None = None, sample_rate: str | None = None) -> dict[str, Any]:
    """A voice checkpoint, else an rmvpe.pt, else a content encoder folder; the voice's error when none fits."""
    from .errors import CheckpointError

    path = Path(path)
    if path.is_dir():
        if (path / "manifest.json").exists():
            return describe_artifact(path)
        return describe_component_source("content-encoder", path)
    try:
        return describe_checkpoint(path, config_path=config_path, sample_rate=sample_rate)
    except CheckpointError as voice_error:
        if config_path is not None or sample_rate is not None:
            raise
        try:
            return describe_component_source("rmvpe", path)
        except CheckpointError:
            raise voice_error from None


def describe_artifact(path: Path) -> dict[str, Any]:
    """What an artifact is for: name, backend, precision, the CPU class it was built and verified for."""
    from .artifact.manifest import read_manifest

    manifest = read_manifest(Path(path))
    if manifest.get("kind") == "pipeline":
        return {
            "kind": "pipeline", "path": str(path), "name": manifest["name"], "version": manifest["version"],
            "components": {role: {key: entry.get(key) for key in ("kind", "name", "backend", "precision")}
                           for role, entry in manifest["components"].items()},
            "index": (manifest.get("index") or {}).get("file"), "settings": manifest["settings"], "machine": cpu_info(),
        }
    component = manifest.get("component")
    precision = manifest.get("precision") if isinstance(manifest.get("precision"), dict) else {}
    return {
        "kind": "artifact",
        "component": component.get("kind") if isinstance(component, dict) else "synthesizer",
        "path": str(path),
        "name": manifest["name"],
        "version": manifest["version"],
        "backend": manifest.get("backend", {}).get("name"),
        "precision": precision.get("precision"),
        "isa": manifest.get("isa"),
        "precision_choice": manifest.get("precision_choice"),
        "machine": cpu_info(),
    }


def _machine_line(machine: dict[str, Any]) -> str:
    cap = f", capped by ONEDNN_MAX_CPU_ISA={machine['onednn_max_cpu_isa']}" if machine.get("onednn_max_cpu_isa") else ""
    return f"this machine    {machine['isa_class']}  ({machine['cpu']}; {' '.join(machine['flags']) or 'no AVX2'}{cap})"


def format_description(d: dict[str, Any]) -> str:
    if d.get("kind") == "pipeline":
        lines = [f"bundle          {d['path']}  ({d['name']} {d['version']}; a conversion pipeline, docs/CONVERT.md)"]
        lines += [f"  {role:<13} {c['kind']}  {c['name']}  {c['backend']} {c['precision']}" for role, c in d["components"].items()]
        lines.append(f"index           {d['index'] or 'none'}")
        lines.append("settings        " + ", ".join(f"{k} {v}" for k, v in d["settings"].items()))
        lines.append(_machine_line(d["machine"]))
        return "\n".join(lines)
    if d.get("kind") in ("content-encoder", "rmvpe"):
        what = "content encoder" if d["kind"] == "content-encoder" else "RMVPE pitch estimator"
        lines = [f"{what:<15} {d['path']}", f"sha256          {d['sha256']}"]
        lines += [f"{key:<15} {value}" for key, value in (d.get("description") or {}).items()]
        if d.get("features"):
            lines.append("features        " + ", ".join(f"{version} {width}" for version, width in d["features"].items()))
        lines.append(f"spec            {d['spec']}")
        lines.append("GFLOP / s audio " + ", ".join(f"{k} {v:.2f}" for k, v in d["gflop_per_second_of_audio"].items()))
        lines.append(_machine_line(d["machine"]))
        return "\n".join(lines)
    if d.get("kind") == "artifact":
        isa = d.get("isa") or {}
        lines = [
            f"artifact        {d['path']}  ({d['name']} {d['version']}; {d.get('component', 'synthesizer')})",
            f"backend         {d['backend']}  {d['precision']}" + (f"  (precision auto: {d['precision_choice']['chosen']})" if d.get("precision_choice") else ""),
            (f"built for       {isa['target']}  (target.cpu {isa.get('requested')}; built on {isa.get('built_on')}, verified on "
             f"{isa.get('verified_on')} by {isa.get('verified_by')})" + (f"; int8 weights {isa['int8_weight_bits']}-bit" if isa.get("int8_weight_bits") else ""))
            if isa else "built for       an unrecorded CPU class (artifact format 2)",
            _machine_line(d["machine"]),
        ]
        return "\n".join(lines)
    params = d["parameters"]
    gflop = d["gflop_per_second_of_audio"]
    lines = [
        f"checkpoint      {d['path']}",
        f"sha256          {d['sha256']}",
        f"layout          {d['layout']}  (stored {d['stored_dtype']}, weight norm: {d['weight_norm'] or 'folded'})",
        f"version         {d['version']}  ({d['feature_dim']}-dim content features)",
        f"sample rate     {d['sample_rate']} Hz  (hop {d['hop_length']} samples, 100 frames/s)",
        f"pitch (f0)      {'yes (NSF decoder)' if d['f0'] else 'no'}",
        f"speakers        {d['n_speakers']}",
        f"config          {d['config']}",
        "parameters      " + ", ".join(f"{k} {v / 1e6:.3f} M" for k, v in params.items()),
        "GFLOP / s audio " + ", ".join(f"{k} {v:.2f}" for k, v in gflop.items()),
    ]
    if d.get("channels"):
        pruning = d.get("pruning") or {}
        ratios = ", ".join(f"{g} {r:.0%}" for g, r in (pruning.get("ratios") or {}).items() if r > 0)
        lines.insert(8, f"pruned          {len(d['channels'])} layers narrower than the config" + (f" ({ratios} of block-internal channels)" if ratios else ""))
    if d.get("machine"):
        lines.append(_machine_line(d["machine"]))
    return "\n".join(lines)
