"""The content encoder (ContentVec / HuBERT-base) as a component: 16 kHz audio -> RVC content features.

Source: a Transformers folder (``source.checkpoint``: ``config.json`` + ``model.safetensors`` or
``pytorch_model.bin``, see ``folder``); ``source.features`` picks the output RVC's voices take: v2
(default) the output of transformer layer 12, 768-dim; v1 layer 9 through ``final_proj``, 256-dim.

Frames. The graph's one dynamic axis is the input's sample count: the encoder's frame unit is one input
sample (``frames_per_second`` 16000), so the captured graph takes any length exactly, and a recipe's
``shapes.min_frames``/``opt_frames``/``max_frames`` (and golden and latency lengths) are in **samples**
(``min_frames`` at least 400, one output frame's receptive field). The output ``features`` [1,
(n - 400) // 320 + 1, dim] has its own dynamic axis (``feature_frames``). Global self-attention makes
every output frame depend on the whole input, so the runtime never cuts inputs into windows
(``windowable`` False): ``max_frames`` is the longest input one call takes (RVC's pipeline feeds the
encoder segments of under a minute).

User-level inputs: ``audio`` [1, n] float32 at 16 kHz, real speech (``inputs``). Accuracy: per-frame
cosine similarity and relative L2 error of the features against the fp32 reference. numpy only at the
top: torch and transformers are imported by the build-side methods.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ...errors import CheckpointError, RecipeError
from ..base import Arrays, Component, LoadedSource, Signature, TensorSpec
from .spec import SAMPLE_RATE, EncoderSpec

# Attention costs grow with the input's length; FLOPs per second are counted at this length.
FLOP_COUNT_SECONDS = 10.0
_PROFILE_GROUP = re.compile(r"(feature_extractor|feature_projection|encoder\.pos_conv_embed|encoder\.layer_norm|encoder\.layers\.\d+|final_proj)")


class ContentEncoderComponent(Component):
    KIND = "content-encoder"
    OUTPUT = "features"
    TRACE_FRAMES = SAMPLE_RATE  # 1 s, 50 output frames (at 400 samples the one output frame would be specialised)
    BUDGET_KEYS = {"min_cosine": ("min_cosine", "min"), "max_relative_error": ("relative_error", "max")}
    # Measured (docs in the adapter's tests and the lead's notes): random-weight tiny and hubert-base
    # encoders on the bundled speech; fp32 graphs match to ~1e-6, int8 (static, per-channel) gives
    # min cosine ~0.98-0.99 and relative error ~0.1-0.15. Budgets leave a margin for real weights.
    DEFAULT_BUDGETS = {
        "fp32": {"min_cosine": 0.9999, "max_relative_error": 0.001},
        "fp16": {"min_cosine": 0.999, "max_relative_error": 0.03},
        "bf16": {"min_cosine": 0.99, "max_relative_error": 0.1},
        "int8": {"min_cosine": 0.95, "max_relative_error": 0.3},
        "auto": {"min_cosine": 0.999, "max_relative_error": 0.03},  # as fp16 (the synthesizer's rule)
    }

    # -- source and model -----------------------------------------------------------------------

    def load(self, source: Any) -> LoadedSource:
        from .folder import read_folder

        for key in ("config", "sample_rate"):
            if getattr(source, key, None) is not None:
                raise RecipeError.at(f"source.{key}", "not used by content-encoder sources (the folder's config.json describes the network)")
        read = read_folder(source.checkpoint, source.features)
        if source.sha256 and source.sha256 != read.weights_sha256:
            raise CheckpointError(f"{read.weights_file}: sha256 {read.weights_sha256} does not match the recipe's pin source.sha256 {source.sha256}")
        cache_inputs = {
            "config": read.config_sha256,
            "weights": read.weights_sha256,
            "features": hashlib.sha256(read.spec.version.encode()).hexdigest(),  # the same folder gives v1 or v2 graphs
        }
        description = {"weights_file": read.weights_file.name, "config_sha256": read.config_sha256, "layout": read.layout,
                       "weight_norm": read.weight_norm, "stored_dtype": read.stored_dtype}
        return LoadedSource(path=read.path, sha256=read.weights_sha256, spec=read.spec, weights=read.weights,
                            description=description, cache_inputs=cache_inputs)

    def spec_from_dict(self, data: Mapping[str, Any], source: str) -> EncoderSpec:
        return EncoderSpec.from_dict(data, source=source)

    def check_spec(self, spec: EncoderSpec, model: Mapping[str, Any]) -> str | None:
        for key, value in self._described(spec).items():
            if model.get(key) != value:
                return f"gives {key} {value!r} but model.{key} is {model.get(key)!r}"
        return None

    def build_model(self, spec: EncoderSpec, weights: Mapping[str, Any] | None) -> Any:
        from .model import build_model

        return build_model(spec, weights)

    def input_names(self, spec: EncoderSpec) -> list[str]:
        return ["audio"]

    def check_shapes(self, spec: EncoderSpec, shapes: Any) -> None:
        lowest = shapes.chunk_frames if shapes.mode == "static" else shapes.min_frames
        key = "shapes.chunk_frames" if shapes.mode == "static" else "shapes.min_frames"
        if lowest < spec.receptive_field:
            raise RecipeError.at(key, f"{lowest} is below {spec.receptive_field}: a content encoder's frames are 16 kHz input samples, "
                                      f"and one output frame reads {spec.receptive_field} of them")

    # -- graph and inputs -----------------------------------------------------------------------

    def frames_per_second(self, spec: EncoderSpec) -> float:
        return float(SAMPLE_RATE)

    def signature(self, spec: EncoderSpec, input_names: list[str]) -> Signature:
        return Signature(
            inputs=(TensorSpec("audio", "float32", (1, "frames")),),
            outputs=(TensorSpec("features", "float32", (1, "feature_frames", spec.feature_dim)),),
            frames_per_second=float(SAMPLE_RATE), unit="samples",
        )

    def output_samples(self, spec: EncoderSpec, frames: int) -> int:
        return spec.frames_of(frames) * spec.feature_dim

    def example_inputs(self, spec: EncoderSpec, frames: int, seed: int, *, noise: str | None = None, speaker: int = 0) -> Arrays:
        """``frames`` samples of real speech at 16 kHz (a seeded crop of a bundled clip); ``noise`` and
        ``speaker`` mean nothing here."""
        from .inputs import example_audio

        return {"audio": example_audio(int(frames), int(seed))}

    def calibration_feeds(self, spec: EncoderSpec, recipe: Any, names: list[str], *, static: int | None, speaker: int,
                          cache_dir: Path | None, log: Callable[[str], None]) -> tuple[list[Arrays], str, str]:
        """16 kHz speech cases (``inputs.calibration_cases``: generated crops, rvc-logs' ``1_16k_wavs`` or
        .npz audio), cut or tiled to the graph's range (a static graph: its chunk)."""
        from .inputs import calibration_cases, cases_sha256

        shapes = recipe.shapes
        low, high = (static, static) if static is not None else (max(shapes.min_frames, spec.receptive_field), shapes.max_frames)
        cases, description = calibration_cases(recipe.calibration, low=low, high=high, log=log)
        return [{"audio": case[None]} for case in cases], cases_sha256(cases), description

    def fixed_fp32_nodes(self, spec: EncoderSpec, graph: Any, precision: str) -> list[str]:
        """int8: the attention's activation-by-activation products (QK^T and the probabilities times V).
        A static int8 range cannot fit them at every length: one output frame attends with probability 1,
        500 frames with a few hundredths. Measured on a random hubert-base encoder (ONNX Runtime, feature
        extractor fp32): with them int8, min cosine 0.996 at 400 samples but 0.93 at 10 s (calibrated on
        lengths spread from 400 samples to 4 s), or 0.998 at 10 s but 0.18 at 0.1 s (calibrated at 4 s);
        with them fp32, 0.998-0.999 at every length. They are ~10 % of the FLOPs at 10 s."""
        if precision != "int8":
            return []
        from ...precision.layers import weighted_layers

        weighted = set(weighted_layers(graph))
        return [node.name for node in graph.graph.node if node.op_type == "MatMul" and node.name not in weighted]

    # -- accuracy -------------------------------------------------------------------------------

    def compare(self, spec: EncoderSpec, reference: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
        """Per-frame cosine similarity (min and mean), relative L2 error ||c - r|| / ||r|| and the largest
        absolute difference of two feature sequences (flattened or [frames, dim])."""
        reference = np.asarray(reference, np.float64).reshape(-1)
        candidate = np.asarray(candidate, np.float64).reshape(-1)
        if reference.shape != candidate.shape or reference.size % spec.feature_dim:
            return {"length_mismatch": int(candidate.size - reference.size) or 1, "min_cosine": -1.0, "mean_cosine": -1.0,
                    "relative_error": 1e9, "max_abs_error": 1e9}
        bad = int(np.count_nonzero(~np.isfinite(candidate)))
        if bad:
            return {"non_finite": bad, "min_cosine": -1.0, "mean_cosine": -1.0, "relative_error": 1e9, "max_abs_error": 1e9}
        r = reference.reshape(-1, spec.feature_dim)
        c = candidate.reshape(-1, spec.feature_dim)
        norms = np.linalg.norm(r, axis=1) * np.linalg.norm(c, axis=1)
        dots = np.sum(r * c, axis=1)
        both_zero = (np.linalg.norm(r, axis=1) == 0) & (np.linalg.norm(c, axis=1) == 0)
        cosine = np.where(both_zero, 1.0, dots / np.maximum(norms, 1e-30))
        error = np.linalg.norm(candidate - reference)
        scale = np.linalg.norm(reference)
        return {
            "min_cosine": float(cosine.min()) if cosine.size else 1.0,
            "mean_cosine": float(cosine.mean()) if cosine.size else 1.0,
            "relative_error": float(error / scale) if scale > 0 else (0.0 if error == 0 else 1e9),
            "max_abs_error": float(np.abs(candidate - reference).max()) if candidate.size else 0.0,
        }

    # -- costs ----------------------------------------------------------------------------------

    def flops_per_second(self, spec: EncoderSpec, weights: Mapping[str, Any]) -> dict[str, float]:
        """Multiply-adds x2 per second of 16 kHz audio: the conv feature extractor, the transformer layers
        the graph runs (self-attention counted at a 10 s input, 500 frames), final_proj for v1."""
        c = spec.config
        rate, channels, conv = float(SAMPLE_RATE), 1, 0.0
        for width, kernel, stride in zip(c["conv_dim"], c["conv_kernel"], c["conv_stride"]):
            rate /= stride
            conv += 2.0 * kernel * channels * width * rate
            channels = width
        frames = float(SAMPLE_RATE) / spec.hop
        hidden, inner = c["hidden_size"], c["intermediate_size"]
        context = spec.frames_of(int(FLOP_COUNT_SECONDS * SAMPLE_RATE))
        projection = 2.0 * channels * hidden * frames
        position = 2.0 * c["num_conv_pos_embeddings"] * hidden * (hidden / c["num_conv_pos_embedding_groups"]) * frames
        layer = (8.0 * hidden * hidden + 4.0 * hidden * inner + 4.0 * context * hidden) * frames
        transformer = projection + position + spec.output_layer * layer
        final = 2.0 * hidden * c["classifier_proj_size"] * frames if spec.final_proj else 0.0
        return {"total": conv + transformer + final, "feature_extractor": conv, "transformer": transformer, "final_proj": final}

    def describe(self, spec: EncoderSpec) -> str:
        c = spec.config
        through = " through final_proj" if spec.final_proj else ""
        return (f"HuBERT content encoder ({c['hidden_size']} hidden, {c['num_hidden_layers']} layers), {spec.version} features: "
                f"layer {spec.output_layer}{through}, {spec.feature_dim}-dim, 16 kHz in")

    def profile_group(self, spec: EncoderSpec, name: str) -> str | None:
        """``feature_extractor``, ``feature_projection``, ``encoder.pos_conv_embed``, ``encoder.layers.N``, ``final_proj``."""
        match = _PROFILE_GROUP.search(name)
        if not match:
            return None
        group = match.group(1)
        return "encoder.layers.0" if group == "encoder.layer_norm" else group  # the pre-layer norm feeds layer 0

    # -- artifact and runtime -------------------------------------------------------------------

    @staticmethod
    def _described(spec: EncoderSpec) -> dict[str, Any]:
        return {"sample_rate": SAMPLE_RATE, "hop_length": spec.hop, "receptive_field": spec.receptive_field,
                "feature_dim": spec.feature_dim, "output_layer": spec.output_layer, "final_proj": spec.final_proj, "version": spec.version}

    def model_section(self, spec: EncoderSpec, input_names: list[str], fixed_inputs: Mapping[str, Any]) -> dict[str, Any]:
        return self._described(spec)

    MODEL_LIMITS = {"hop_length": 1_000_000, "receptive_field": 1_000_000, "feature_dim": 65_536, "output_layer": 65_536}

    def check_model(self, model: Mapping[str, Any], read: Any) -> None:
        read.integer(model.get("sample_rate"), "model.sample_rate", SAMPLE_RATE, SAMPLE_RATE)
        for key, high in self.MODEL_LIMITS.items():
            read.integer(model.get(key), f"model.{key}", 1, high)
        read.boolean(model.get("final_proj"), "model.final_proj")
        if model.get("version") not in ("v1", "v2"):
            raise read.fail("model.version", f"expected 'v1' or 'v2', got {model.get('version')!r:.40}")

    def check_signature(self, input_names: list[str], read: Any) -> None:
        if input_names != ["audio"]:
            raise read.fail("signature.inputs", f"a content encoder takes one input, 'audio'; got {input_names!r:.80}")

    def open(self, path: Path, manifest: Mapping[str, Any], runner: Any, load_time_s: float) -> Any:
        from .compiled import CompiledEncoder

        return CompiledEncoder(path, manifest, runner, load_time_s, component=self)
