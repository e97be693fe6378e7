"""The RVC synthesizer as a component: RVC V1/V2 ``.pth`` checkpoints -> the inference synthesizer.

User-level inputs (batch dimension 1): ``features`` [1, T, C], ``f0`` [1, T] (pitch models), ``speaker``
[1], and the explicit noise draws ``prior_noise`` [1, inter, T] and ``source_noise`` [1, T * hop]; the
output is audio [1, T * hop] at the model's sample rate. numpy only at the top: torch is imported by the
build-side methods.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ...errors import CheckpointError
from ..base import Arrays, Component, LoadedSource, Signature, TensorSpec
from .examples import example_case
from .inputs import graph_feed, make_noise
from .spec import ModelSpec


class SynthesizerComponent(Component):
    KIND = "synthesizer"
    OUTPUT = "audio"

    @property
    def BUDGET_KEYS(self) -> Mapping[str, tuple[str, str]]:  # type: ignore[override]
        from ...verify.metrics import BUDGET_KEYS

        return BUDGET_KEYS

    @property
    def DEFAULT_BUDGETS(self) -> Mapping[str, Mapping[str, float | None]]:  # type: ignore[override]
        from ...verify.metrics import DEFAULT_BUDGETS

        return DEFAULT_BUDGETS

    # -- source and model -----------------------------------------------------------------------

    def load(self, source: Any) -> LoadedSource:
        from .checkpoint import load_checkpoint

        checkpoint = load_checkpoint(source.checkpoint, config_path=source.config, sample_rate=source.sample_rate)
        if source.sha256 and source.sha256 != checkpoint.sha256:
            raise CheckpointError(f"{checkpoint.path}: sha256 {checkpoint.sha256} does not match the recipe's pin source.sha256 {source.sha256}")
        cache_inputs = {"checkpoint": checkpoint.sha256}
        if source.config is not None:
            from ...artifact.manifest import sha256_file

            cache_inputs["config"] = sha256_file(Path(source.config))
        if source.sample_rate is not None:  # it can change which config a training checkpoint gets
            import hashlib

            cache_inputs["sample_rate"] = hashlib.sha256(source.sample_rate.encode()).hexdigest()
        return LoadedSource(
            path=checkpoint.path, sha256=checkpoint.sha256, spec=checkpoint.spec, weights=checkpoint.state_dict,
            description={"layout": checkpoint.layout, "stored_dtype": checkpoint.stored_dtype}, cache_inputs=cache_inputs,
        )

    def spec_from_dict(self, data: Mapping[str, Any], source: str) -> ModelSpec:
        return ModelSpec.from_dict(dict(data), source=source)

    def spec_section(self, manifest: Mapping[str, Any]) -> str:
        return "component.spec" if "component" in manifest else "source"  # formats 2 and 3: the source section

    def check_spec(self, spec: ModelSpec, model: Mapping[str, Any]) -> str | None:
        """The spec must agree with the model section the runtime reads (checked and bounded by ``check_model``)."""
        described = {"sample_rate": spec.sampling_rate, "hop_length": spec.hop_length, "feature_dim": spec.feature_dim, "f0": spec.f0,
                     "inter_channels": spec.inter_channels, "n_speakers": spec.n_speakers}
        for key, value in described.items():
            if model.get(key) != value:
                return f"gives {key} {value!r} but model.{key} is {model.get(key)!r}"
        return None

    def build_model(self, spec: ModelSpec, weights: Mapping[str, Any] | None) -> Any:
        from .model import build_model

        return build_model(spec, dict(weights) if weights is not None else None)

    def input_names(self, spec: ModelSpec) -> list[str]:
        from .model.synthesizer import input_names

        return list(input_names(spec))

    # -- graph and inputs -----------------------------------------------------------------------

    def frames_per_second(self, spec: ModelSpec) -> float:
        return spec.frames_per_second

    def signature(self, spec: ModelSpec, input_names: list[str]) -> Signature:
        samples = f"frames*{spec.hop_length}"
        shapes: dict[str, tuple[str, tuple[int | str, ...]]] = {
            "features": ("float32", (1, "frames", spec.feature_dim)),
            "f0": ("float32", (1, "frames")),
            "speaker": ("int64", (1,)),
            "prior_noise": ("float32", (1, spec.inter_channels, "frames")),
            "source_noise": ("float32", (1, samples)),
            "excitation": ("float32", (1, samples)),
        }
        return Signature(
            inputs=tuple(TensorSpec(name, *shapes[name]) for name in input_names),
            # Real-time blocks render the frames after skip_frames: a length of its own, not the time axis.
            outputs=(TensorSpec("audio", "float32", (1, samples if not spec.skip_frames else "rendered_samples")),),
            frames_per_second=spec.frames_per_second,
        )

    def output_samples(self, spec: ModelSpec, frames: int) -> int:
        return spec.rendered_frames(frames) * spec.hop_length

    def example_inputs(self, spec: ModelSpec, frames: int, seed: int, *, noise: str | None = None, speaker: int = 0) -> Arrays:
        """Real-feature based content, a phrase f0 contour and seeded noise (``noise``: default seed:{seed})."""
        case = example_case(spec.feature_dim, frames, seed)
        draws = make_noise(noise or f"seed:{seed}", frames, inter_channels=spec.inter_channels, hop_length=spec.hop_length, has_f0=spec.f0)
        arrays = {"features": case["features"][None], "speaker": np.array([speaker], dtype=np.int64), **draws}
        if spec.f0:
            arrays["f0"] = case["f0"][None]
        return arrays

    def graph_feed(self, spec: ModelSpec, arrays: Mapping[str, np.ndarray], names: list[str]) -> Arrays:
        return graph_feed(arrays, names, hop_length=spec.hop_length, sample_rate=spec.sampling_rate, skip_frames=spec.skip_frames)

    def calibration_feeds(self, spec: ModelSpec, recipe: Any, names: list[str], *, static: int | None, speaker: int,
                          cache_dir: Path | None, log: Callable[[str], None]) -> tuple[list[Arrays], str, str]:
        """The recipe's calibration set (speech, training logs or generated) as graph feeds: seeded noise
        draws, host-side excitation, and cut or tiled to the chunk length of a static graph."""
        from ...precision.calibration import load_calibration

        calibration = load_calibration(recipe.calibration, spec, cache_dir=cache_dir, log=log)
        log(f"calibration: {calibration.source} ({len(calibration.cases)} cases{', cached' if calibration.cache_hit else ''})")
        feeds = []
        for index, case in enumerate(calibration.cases):
            case = dict(case)
            if static is not None:
                repeat = -(-static // case["features"].shape[0])
                case = {name: np.concatenate([array] * repeat)[:static] for name, array in case.items()}
            frames = case["features"].shape[0]
            arrays = {name: array[None] for name, array in case.items()}
            arrays.update(speaker=np.array([speaker], dtype=np.int64))
            arrays.update(make_noise(f"seed:{1000 + index}", frames, inter_channels=spec.inter_channels, hop_length=spec.hop_length, has_f0=spec.f0))
            feeds.append(self.graph_feed(spec, arrays, names))
        return feeds, calibration.sha256, calibration.source

    def check_precision(self, spec: ModelSpec, input_names: list[str], precision: str) -> None:
        if precision != "fp32" and spec.f0 and "excitation" not in input_names:
            from ...errors import RecipeError

            raise RecipeError(
                f"passes: a {precision} target needs the host_source pass for this pitch model (the NSF sine source's "
                "phase accumulation must stay out of the low-precision graph)"
            )

    def windowable(self, spec: ModelSpec, input_names: list[str]) -> bool:
        """Slicing the inputs is exact only where the NSF source is computed on the host (or there is
        none); otherwise the sine phase would restart in every window."""
        return not spec.skip_frames and (not spec.f0 or "excitation" in input_names)

    # -- accuracy -------------------------------------------------------------------------------

    def compare(self, spec: ModelSpec, reference: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
        from ...verify.metrics import compare

        return compare(reference, candidate, spec.sampling_rate)

    def output_sample_rate(self, spec: ModelSpec) -> int:
        return spec.sampling_rate

    # -- costs ----------------------------------------------------------------------------------

    def flops_per_second(self, spec: ModelSpec, weights: Mapping[str, Any]) -> dict[str, float]:
        import dataclasses

        from .reference import flops_per_second

        # Per second of the voice's audio; a real-time block model is counted as the whole model (its
        # skipped frames would leave a one-second count with nothing to render).
        return flops_per_second(dataclasses.replace(spec, skip_frames=0), dict(weights))

    def describe(self, spec: ModelSpec) -> str:
        return f"RVC {spec.version} synthesizer, {spec.sampling_rate} Hz, f0={int(spec.f0)}"

    def profile_group(self, spec: ModelSpec, name: str) -> str | None:
        from ...measure.profile import module_group  # enc_p, flow, dec.source, dec.stageN ...

        return module_group(name, len(spec.resblock_kernel_sizes))

    # -- artifact and runtime -------------------------------------------------------------------

    def model_section(self, spec: ModelSpec, input_names: list[str], fixed_inputs: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "sample_rate": spec.sampling_rate,
            "hop_length": spec.hop_length,
            "feature_dim": spec.feature_dim,
            "f0": spec.f0,
            "inter_channels": spec.inter_channels,
            "n_speakers": spec.n_speakers,
            "fixed_speaker": fixed_inputs.get("speaker"),
            "host_source": "excitation" in input_names,
        }

    # Far above any real artifact; past them a manifest is damaged or crafted (and would make the runtime
    # allocate absurd noise arrays).
    MODEL_LIMITS = {"sample_rate": 1_000_000, "hop_length": 100_000, "feature_dim": 65_536, "inter_channels": 65_536, "n_speakers": 1_000_000}

    def check_model(self, model: Mapping[str, Any], read: Any) -> None:
        for key, high in self.MODEL_LIMITS.items():
            read.integer(model.get(key), f"model.{key}", 1, high)
        read.boolean(model.get("f0"), "model.f0")
        if model.get("fixed_speaker") is not None:
            read.integer(model["fixed_speaker"], "model.fixed_speaker", 0, model["n_speakers"] - 1)
        if model.get("stream") is not None:  # a real-time block artifact's geometry, in 10 ms frames
            stream = read.mapping(model["stream"], "model.stream")
            parts = {key: read.integer(stream.get(key), f"model.stream.{key}", 0, 6000) for key in ("block", "context", "crossfade", "search")}
            read.integer(stream.get("window"), "model.stream.window", sum(parts.values()), sum(parts.values()))

    def check_signature(self, input_names: list[str], read: Any) -> None:
        if "features" not in input_names:
            raise read.fail("signature.inputs", "has no 'features' input")

    def open(self, path: Path, manifest: Mapping[str, Any], runner: Any, load_time_s: float) -> Any:
        from ...runtime.voice import CompiledVoice

        return CompiledVoice(path, manifest, runner, load_time_s)
