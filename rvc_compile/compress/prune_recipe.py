"""``rvc-compile prune RECIPE.yaml``: checkpoint -> channel pruning -> distillation -> pruned checkpoint + report.

The prune recipe is its own small typed schema, read with the build recipe's machinery (located YAML,
``--set`` overrides, errors naming key path and line, JSON Schema). Its output is a checkpoint in the
``rvc-compile-pruned`` format (docs/PRUNING.md), which a build recipe then takes as ``source.checkpoint``
like any other, and a report (JSON + markdown) beside it: FLOPs, parameters, and the held-out accuracy
against the original model right after pruning and after fine-tuning.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal, Optional

from .distill import HELD_OUT_NOISE_SEED, DistillConfig
from ..errors import CheckpointError, RecipeError
from ..passes.prune import PruningParams
from ..artifact.manifest import NAME_RULE, is_valid_name
from ..hashing import is_sha256_hex
from ..recipe.schema import Calibration, _dataclass_schema, _Located, _validate_calibration, read_recipe_file


# -- the schema ----------------------------------------------------------------------------------

@dataclass
class PruneSource:
    """The checkpoint to prune: any file ``rvc-compile inspect`` reads (a pruned one is pruned further)."""

    checkpoint: Path
    sha256: Optional[str] = None
    config: Optional[Path] = None
    sample_rate: Optional[Literal["32k", "40k", "48k"]] = None


@dataclass
class PruneCalibration(Calibration):
    """Training inputs for importance and distillation, and held-out inputs for the accuracy figures,
    from any source a build's calibration takes (``precision/calibration.py``, docs/CALIBRATION.md):

    - ``rvc-logs``: the voice's RVC training folder (``logs/NAME/``: ``3_feature768/`` + ``2b-f0nsf/``),
      the data the voice was trained on: what distillation should use;
    - ``npz``: a folder of ``.npz`` files with ``features`` and ``f0``;
    - ``generated``: synthesized cases (tests and demos).
    ``held_out`` files (spread over the sorted list) are kept out of training and measure the result;
    generated held-out cases use seeds 10000 above ``seed``.
    """

    source: Literal["none", "generated", "npz", "rvc-logs"] = "generated"
    count: int = 8
    seconds: float = 4.0
    held_out: int = 2
    held_out_seconds: float = 2.0


@dataclass
class PrunePruning(PruningParams):
    """What to cut, and how the cut layers are refitted; ``reconstruct`` defaults to least_squares here:
    distillation then starts far closer to the original (docs/TRAINING.md)."""

    reconstruct: Literal["none", "least_squares"] = "least_squares"


@dataclass
class PruneOutput:
    checkpoint: Path
    dtype: Literal["fp16", "fp32"] = "fp16"  # fp16 as RVC's own small models
    work_dir: Optional[Path] = None  # distillation state (resumable); default: <checkpoint stem>.distill/ beside it
    info: Optional[str] = None  # the checkpoint's free-text "info" entry


@dataclass
class PruneRecipe:
    name: str
    source: PruneSource
    output: PruneOutput
    pruning: PrunePruning = field(default_factory=PrunePruning)
    distillation: DistillConfig = field(default_factory=DistillConfig)
    calibration: PruneCalibration = field(default_factory=PruneCalibration)
    recipe_path: Path = field(default=Path("<recipe>"), metadata={"internal": True})

    @property
    def work_dir(self) -> Path:
        out = self.output.checkpoint
        return self.output.work_dir or out.with_name(out.stem + ".distill")

    @property
    def report_paths(self) -> tuple[Path, Path]:
        out = self.output.checkpoint
        return out.with_name(out.stem + ".report.json"), out.with_name(out.stem + ".report.md")


def _validate(recipe: PruneRecipe, located: _Located) -> None:
    if not is_valid_name(recipe.name):
        raise located.error(("name",), f"{recipe.name!r}: {NAME_RULE}")
    if recipe.source.sha256 is not None and not is_sha256_hex(recipe.source.sha256):
        raise located.error(("source", "sha256"), "expected 64 lowercase hex digits")
    # Pruning and distillation settings are checked by their own dataclasses; the error is re-raised at
    # the recipe line of the key it names.
    try:
        recipe.pruning.check("pruning")
        recipe.distillation.check("distillation")
    except RecipeError as exc:
        if exc.key is None or exc.problem is None:
            raise
        raise located.error(tuple(exc.key.split(".")), exc.problem) from None
    distillation = recipe.distillation
    calibration = recipe.calibration
    if calibration.source == "none":
        raise located.error(("calibration", "source"), "pruning and distillation need inputs: set rvc-logs (the voice's training folder), npz or generated")
    _validate_calibration(calibration, located)
    if calibration.held_out < 1:
        raise located.error(("calibration", "held_out"), "must be at least 1")
    if calibration.held_out_seconds <= 0:
        raise located.error(("calibration", "held_out_seconds"), "must be positive")
    if distillation.steps > 0 and calibration.seconds * 100 < distillation.segment_frames:
        raise located.error(("calibration", "seconds"), f"{calibration.seconds} s is shorter than distillation.segment_frames ({distillation.segment_frames} frames at 100 per second)")
    if recipe.output.checkpoint.suffix != ".pth":
        raise located.error(("output", "checkpoint"), "must end in .pth")
    if recipe.source.checkpoint.resolve() == recipe.output.checkpoint.resolve():
        raise located.error(("output", "checkpoint"), "must differ from source.checkpoint")


def load_prune_recipe(path: str | Path, overrides: list[str] | None = None) -> PruneRecipe:
    """Read, override, convert and check a prune recipe; RecipeError names the key path and line."""
    recipe, located = read_recipe_file(path, PruneRecipe, overrides, "a prune recipe")
    _validate(recipe, located)
    return recipe


def prune_recipe_json_schema() -> dict[str, Any]:
    schema = _dataclass_schema(PruneRecipe)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "rvc-compile prune recipe", **schema}


# -- the run -------------------------------------------------------------------------------------

@dataclass
class PruneRunResult:
    path: Path
    report: dict[str, Any]


def _summary(measured: dict[str, Any] | None) -> dict[str, Any] | None:
    if measured is None:
        return None
    return {key: (round(value, 4) if isinstance(value, float) else value) for key, value in measured.items()}


def run_prune(recipe: PruneRecipe, *, log: Callable[[str], None] = print, cache_dir: Path | None = None) -> PruneRunResult:
    """Prune and fine-tune ``recipe.source``; write the pruned checkpoint and its report; nothing on failure.

    ``cache_dir``: the build cache (None: ``$RVC_COMPILE_CACHE`` or the user cache folder); it holds
    the calibration sets and the teacher's outputs (``distillation.teacher_cache``).
    """
    import torch

    from ..cache.store import resolve_cache_dir
    from ..precision.calibration import load_calibration_split

    from .. import __version__
    from ..components.synthesizer.checkpoint import load_checkpoint, save_pruned_checkpoint
    from .distill import HeldOut, distill, resolve_device
    from ..machine import cpu_info
    from .prune import prune_model, summary_line

    started = time.perf_counter()
    source = recipe.source
    checkpoint = load_checkpoint(source.checkpoint, config_path=source.config, sample_rate=source.sample_rate)
    if source.sha256 and source.sha256 != checkpoint.sha256:
        raise CheckpointError(f"{checkpoint.path}: sha256 {checkpoint.sha256} does not match the recipe's pin source.sha256 {source.sha256}")
    spec = checkpoint.spec
    if recipe.distillation.speaker >= spec.n_speakers:
        raise RecipeError(f"{recipe.recipe_path}: distillation.speaker {recipe.distillation.speaker} out of range (the model has {spec.n_speakers} speakers)")
    if recipe.distillation.steps > 0:
        resolve_device(recipe.distillation)  # an unavailable device or emulated precision fails before any work
        if recipe.distillation.discriminator is not None:
            from .discriminator import load_discriminator

            load_discriminator(recipe.distillation.discriminator, spec.version)  # checked before any work too
    cache_dir = resolve_cache_dir(cache_dir)
    torch.set_num_threads(recipe.distillation.threads)

    calibration = recipe.calibration
    training, held_out_set = load_calibration_split(
        calibration, spec, calibration.held_out, calibration.held_out_seconds, cache_dir=cache_dir, log=log,
    )
    cases, held_out_cases = training.cases, held_out_set.cases
    if recipe.distillation.steps > 0:
        short = [name for name, case in zip(training.names, cases) if case["features"].shape[0] < recipe.distillation.segment_frames]
        if short:
            raise RecipeError(
                f"{recipe.recipe_path}: {len(short)} training case(s) are shorter than distillation.segment_frames "
                f"({recipe.distillation.segment_frames} frames), e.g. {short[0]}; lower segment_frames or leave those files out"
            )

    log(f"loaded {checkpoint.path.name}: {spec.version} {spec.sample_rate_tag} f0={int(spec.f0)} ({checkpoint.layout})")
    log(f"training on {training.source}; held out: {held_out_set.source}")
    pruning = recipe.pruning
    result = prune_model(
        spec, checkpoint.state_dict, ratios=pruning.ratios(), importance=pruning.importance, cases=cases, round_to=pruning.round_to,
        reconstruct=pruning.reconstruct,
    )
    log(summary_line(result.record))
    held_out = HeldOut(spec, checkpoint.state_dict, held_out_cases, speaker=recipe.distillation.speaker)
    after_pruning = held_out.measure(result.spec, result.state_dict)
    log(f"held-out log-mel distance to the original right after pruning: {after_pruning['log_mel_db']:.3f} dB")

    distilled = None
    student_state = result.state_dict
    if recipe.distillation.steps > 0:
        distilled = distill(
            spec, checkpoint.state_dict, result.spec, result.state_dict, cases, recipe.distillation, recipe.work_dir, log=log,
            cache_dir=cache_dir,
        )
        student_state = distilled.state_dict
    # Measure what is stored: the weights rounded to the checkpoint's dtype.
    stored = {k: (v.half().float() if recipe.output.dtype == "fp16" else v) for k, v in student_state.items()}
    after_fine_tuning = held_out.measure(result.spec, stored) if distilled is not None else None
    if after_fine_tuning is not None:
        log(f"held-out log-mel distance to the original after fine-tuning: {after_fine_tuning['log_mel_db']:.3f} dB")

    held_out_description = {
        "cases": len(held_out_cases), "seconds": calibration.held_out_seconds, "source": calibration.source,
        "set": held_out_set.source, "sha256": held_out_set.sha256, "training_set": training.source,
        "noise": f"seed:{HELD_OUT_NOISE_SEED}+i (same draws for original and pruned)", "speaker": recipe.distillation.speaker,
    }
    pruning_record = {
        **result.record,
        "source": {"checkpoint": checkpoint.path.name, "sha256": checkpoint.sha256, "layout": checkpoint.layout},
        "held_out": held_out_description,
        "held_out_after_pruning": _summary({k: v for k, v in after_pruning.items() if k != "per_case"}),
    }
    distillation_record = None
    if distilled is not None:
        distillation_record = {
            **{k: v for k, v in distilled.record.items() if k != "history"},
            "held_out_after": _summary({k: v for k, v in after_fine_tuning.items() if k != "per_case"}),
        }

    out_path = recipe.output.checkpoint
    info = recipe.output.info or f"pruned from {checkpoint.path.name} by rvc-compile {__version__}"
    save_pruned_checkpoint(
        out_path, result.spec, student_state, info=info, pruning=pruning_record, distillation=distillation_record, dtype=recipe.output.dtype,
    )
    reloaded = load_checkpoint(out_path)  # the round trip every later stage will do
    if reloaded.spec != result.spec:  # pragma: no cover - a format bug, not a user error
        raise CheckpointError(f"{out_path}: the written checkpoint reads back as another model")

    flops = result.record["gflop_per_second_of_audio"]
    parameters = result.record["parameters"]
    report = {
        "name": recipe.name,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "rvc_compile_version": __version__,
        "machine": {**cpu_info(), "threads": recipe.distillation.threads},
        "source": {"checkpoint": str(checkpoint.path), "sha256": checkpoint.sha256, "layout": checkpoint.layout, **spec.to_dict()},
        "output": {"checkpoint": str(out_path), "sha256": reloaded.sha256, "dtype": recipe.output.dtype, "size_bytes": out_path.stat().st_size},
        "pruning": {k: result.record[k] for k in ("method", "ratios", "importance", "round_to", "reconstruct", "calibration_cases", "channels")},
        "cost": {
            "gflop_per_second_of_audio": flops,
            "parameters": parameters,
            "flops_removed_fraction": result.record["flops_removed_fraction"],
            "parameters_removed_fraction": result.record["parameters_removed_fraction"],
        },
        "accuracy": {
            "held_out": held_out_description,
            "after_pruning": _summary(after_pruning),
            "after_fine_tuning": _summary(after_fine_tuning),
            "log_mel_reduction_factor": (
                round(after_pruning["log_mel_db"] / max(after_fine_tuning["log_mel_db"], 1e-12), 3) if after_fine_tuning else None
            ),
        },
        "distillation": distilled.record if distilled is not None else None,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    json_path, markdown_path = recipe.report_paths
    _write_atomic(json_path, json.dumps(report, indent=2, allow_nan=False) + "\n")
    _write_atomic(markdown_path, prune_report_markdown(report))
    log(f"wrote {out_path} and {markdown_path.name} in {report['wall_s']} s")
    return PruneRunResult(path=out_path, report=report)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def prune_report_markdown(report: dict[str, Any]) -> str:
    cost, accuracy, machine = report["cost"], report["accuracy"], report["machine"]
    flops, parameters = cost["gflop_per_second_of_audio"], cost["parameters"]
    held = accuracy["held_out"]
    distilled = report["distillation"]
    ratios = ", ".join(f"{group} {ratio:.0%}" for group, ratio in report["pruning"]["ratios"].items() if ratio > 0) or "nothing"
    lines = [
        f"# Pruning report: {report['name']}",
        "",
        f"Source `{Path(report['source']['checkpoint']).name}` (sha256 `{report['source']['sha256'][:16]}...`, {report['source']['layout']}) "
        f"-> `{Path(report['output']['checkpoint']).name}` ({report['output']['dtype']}, {report['output']['size_bytes'] / 1e6:.2f} MB).",
        f"Pruned {ratios} of block-internal channels by {report['pruning']['importance']} importance (widths rounded to multiples of {report['pruning']['round_to']})"
        + ("; the decoder pairs' second convs refitted by least squares." if report["pruning"].get("reconstruct") == "least_squares" else "."),
        f"Machine: {machine['cpu']} ({', '.join(machine['flags'])}), {machine['threads']} threads. Total time {report['wall_s']} s.",
        "",
        f"Accuracy: distance to the original model's output on {held['cases']} held-out inputs of {held['seconds']} s "
        f"({held['source']} features and pitch; the same noise draws for both models).",
        "",
        "| model | GFLOP per s of audio | parameters (M) | log-mel distance (dB) | MR-STFT distance | SNR (dB) |",
        "|---|---:|---:|---:|---:|---:|",
        f"| original | {flops['before']['total']:.2f} | {parameters['before']['total'] / 1e6:.3f} | 0 (reference) | 0 | exact |",
    ]
    after_pruning = accuracy["after_pruning"]
    lines.append(
        f"| pruned | {flops['after']['total']:.2f} | {parameters['after']['total'] / 1e6:.3f} | {_fmt(after_pruning['log_mel_db'])} "
        f"| {_fmt(after_pruning['mrstft'])} | {_fmt(after_pruning['snr_db'], 1)} |"
    )
    if accuracy["after_fine_tuning"]:
        tuned = accuracy["after_fine_tuning"]
        lines.append(
            f"| pruned + fine-tuned ({distilled['steps']} steps, {distilled['wall_s']:.0f} s, {distilled['device']} {distilled['precision']}) "
            f"| {flops['after']['total']:.2f} | {parameters['after']['total'] / 1e6:.3f} | {_fmt(tuned['log_mel_db'])} | {_fmt(tuned['mrstft'])} | {_fmt(tuned['snr_db'], 1)} |"
        )
    lines += [
        "",
        f"FLOPs removed: {cost['flops_removed_fraction']:.1%}; parameters removed: {cost['parameters_removed_fraction']:.1%}.",
    ]
    if accuracy["log_mel_reduction_factor"] is not None:
        lines.append(f"Fine-tuning divided the log-mel distance by {accuracy['log_mel_reduction_factor']:.2f}.")
    lines += ["", "| module | GFLOP per s of audio before | after | parameters before | after |", "|---|---:|---:|---:|---:|"]
    for module in flops["before"]:
        lines.append(
            f"| {module} | {flops['before'][module]:.3f} | {flops['after'].get(module, 0.0):.3f} "
            f"| {parameters['before'].get(module, 0):,} | {parameters['after'].get(module, 0):,} |"
        )
    channels = report["pruning"]["channels"]
    lines += ["", "| group | prunable layers | channels before | after |", "|---|---:|---:|---:|"]
    for group, counts in channels.items():
        lines.append(f"| {group} | {counts['layers']} | {counts['before']} | {counts['after']} |")
    if distilled:
        first, last = distilled["loss_first"], distilled["loss_last"]
        lines += [
            "",
            f"Distillation: {distilled['steps']} steps of batch {distilled['config']['batch']} x {distilled['config']['segment_frames']} frames, "
            f"learning rate {distilled['config']['learning_rate']:g}, trained {len(distilled['trained'])} {distilled['config']['train'].replace('_', ' ')}; "
            f"training loss {first['loss']:.4g} (step {first['step']}) -> {last['loss']:.4g} (step {last['step']}).",
        ]
        speed = distilled.get("speed") or {}
        if speed.get("steps_per_s"):
            cache = speed.get("teacher_cache") or {}
            reuse = f"; teacher cache: {cache['chunks_read']} chunk(s) read, {cache['chunks_computed']} computed" if cache.get("store") else ""
            lines.append(f"Speed: {speed['steps_per_s']:.3g} steps/s, peak memory {speed['peak_memory_mb']:.0f} MB{reuse}.")
    return "\n".join(lines) + "\n"
