"""RMVPE as a component: RVC's ``rmvpe.pt`` -> a graph from log-mel to pitch salience.

Graph: ``mel`` float32 [1, 128, frames] (100 frames/s: 16 kHz audio, hop 160) -> ``salience`` float32
[1, frames, 360], RVC's ``mel2hidden`` included (the frame axis zero-padded to a multiple of 32 and
the output cut back), so any length runs. The log-mel and the decoding to Hz run on the host (``host``,
numpy); ``runtime.load`` returns an ``estimator.CompiledPitch`` whose ``estimate(audio16k)`` gives f0.

Inputs for checks, golden cases, timing and int8 calibration are crops of real speech's log-mel
(``speech``). Accuracy is what the salience decodes to: the mean pitch difference in cents over frames
voiced in both (the synthesizer's f0 statistic), the share of frames whose voiced/unvoiced call differs,
and the largest salience difference. numpy only at the top: torch is imported by the build-side methods.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ...errors import CalibrationError, CheckpointError, InputError, RecipeError
from ..base import Arrays, Component, LoadedSource, Signature, TensorSpec
from .spec import CLASSES, FRAMES_PER_SECOND, HOP, MELS, SAMPLE_RATE, RmvpeSpec

INPUT = "mel"
RVC_LOGS_WAVS = "1_16k_wavs"  # RVC's preprocessing writes every training slice here, at 16 kHz


def _cents_and_voicing(reference: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
    from .host import decode

    f0_reference, f0_candidate = decode(reference), decode(candidate)
    voiced_reference, voiced_candidate = f0_reference > 0, f0_candidate > 0
    both = voiced_reference & voiced_candidate
    cents = None
    if both.any():
        cents = float(np.mean(1200.0 * np.abs(np.log2(f0_candidate[both] / f0_reference[both]))))
    return {
        "f0_cents": cents,
        "voicing_mismatch": float(np.mean(voiced_reference != voiced_candidate)) if f0_reference.size else 0.0,
        "voiced_frames": int(both.sum()),
    }


class RmvpeComponent(Component):
    KIND = "rmvpe"
    OUTPUT = "salience"
    BUDGET_KEYS = {
        "max_f0_cents": ("f0_cents", "max"),
        "max_voicing_error": ("voicing_mismatch", "max"),
        "max_abs_error": ("max_abs_error", "max"),
    }
    # fp32 graphs must also match the reference to 1e-4 relative L2 at every checked length (verify.parity),
    # far tighter than these. Measured on synthetic.write_rmvpe's full-size informative random-weight model
    # over the bundled speech (0.3-4 s crops): fp32 ONNX Runtime ~0.001 cents, no voicing flips, max abs
    # 1.1e-4 (relative L2 3e-5). OpenVINO int8 with the shipped recipe's policy (the U-Net's two
    # full-resolution levels fp32): 11-20 cents mean, up to 2.6% voicing flips; all-int8: 23-36 cents, up
    # to 3.9%, over this budget. fp16 and bf16 are not measured. Narrow test networks (width 2-4) are far
    # more fragile in int8 (30-75 cents): their tests set their own budgets.
    DEFAULT_BUDGETS = {
        "fp32": {"max_f0_cents": 1.0, "max_voicing_error": 0.005, "max_abs_error": 0.001},
        "fp16": {"max_f0_cents": 5.0, "max_voicing_error": 0.02, "max_abs_error": 0.05},
        "bf16": {"max_f0_cents": 15.0, "max_voicing_error": 0.04, "max_abs_error": 0.2},
        "int8": {"max_f0_cents": 25.0, "max_voicing_error": 0.05, "max_abs_error": None},
        "auto": {"max_f0_cents": 5.0, "max_voicing_error": 0.02, "max_abs_error": 0.05},
    }

    # -- source and model -----------------------------------------------------------------------

    def load(self, source: Any) -> LoadedSource:
        from .checkpoint import load_rmvpe

        for key in ("config", "sample_rate", "features"):
            if getattr(source, key, None) is not None:
                raise RecipeError(f"source.{key}: not used by rmvpe sources (an rmvpe.pt holds everything)")
        checkpoint = load_rmvpe(source.checkpoint)
        if source.sha256 and source.sha256 != checkpoint.sha256:
            raise CheckpointError(f"{checkpoint.path}: sha256 {checkpoint.sha256} does not match the recipe's pin source.sha256 {source.sha256}")
        return LoadedSource(
            path=checkpoint.path, sha256=checkpoint.sha256, spec=checkpoint.spec, weights=checkpoint.state_dict,
            description={"layout": checkpoint.layout, "stored_dtype": checkpoint.stored_dtype}, cache_inputs={"checkpoint": checkpoint.sha256},
        )

    def spec_from_dict(self, data: Mapping[str, Any], source: str) -> RmvpeSpec:
        return RmvpeSpec.from_dict(dict(data), source=source)

    def build_model(self, spec: RmvpeSpec, weights: Mapping[str, Any] | None) -> Any:
        from .model import build_model

        return build_model(spec, weights)

    def input_names(self, spec: RmvpeSpec) -> list[str]:
        return [INPUT]

    def check_capture(self, spec: RmvpeSpec, capture: Any, shapes: Any) -> None:
        # torch.export specialises the BiGRU's length when it is the padded frame count (a function of the
        # symbolic one): the dynamo exporter fails on a dynamic graph. TorchScript emits ONNX's GRU op.
        if capture.exporter == "dynamo" and shapes.mode == "dynamic":
            raise RecipeError("capture.exporter: dynamo cannot export RMVPE's BiGRU over a dynamic frame axis (torch specialises "
                              "the padded length); set capture.exporter: torchscript (ONNX's GRU op), or shapes.mode: static")

    # -- graph and inputs -----------------------------------------------------------------------

    def frames_per_second(self, spec: RmvpeSpec) -> float:
        return FRAMES_PER_SECOND

    def signature(self, spec: RmvpeSpec, input_names: list[str]) -> Signature:
        return Signature(
            inputs=(TensorSpec(INPUT, "float32", (1, MELS, "frames")),),
            outputs=(TensorSpec(self.OUTPUT, "float32", (1, "frames", CLASSES)),),
            frames_per_second=FRAMES_PER_SECOND,
        )

    def output_samples(self, spec: RmvpeSpec, frames: int) -> int:
        return frames * CLASSES

    def example_inputs(self, spec: RmvpeSpec, frames: int, seed: int, *, noise: str | None = None, speaker: int = 0) -> Arrays:
        """A seeded crop of the bundled speech clips' log-mel (``noise`` and ``speaker`` do not apply)."""
        from .speech import bundled_clips, mel_crop, speech_mels

        return {INPUT: mel_crop(speech_mels(bundled_clips()), frames, seed)}

    def calibration_feeds(self, spec: RmvpeSpec, recipe: Any, names: list[str], *, static: int | None, speaker: int,
                          cache_dir: Path | None, log: Callable[[str], None]) -> tuple[list[Arrays], str, str]:
        """Crops of real speech's log-mel: the bundled clips or ``calibration.speech`` (source generated),
        or the training slices of an RVC experiment folder (rvc-logs: ``<path>/1_16k_wavs/*.wav``)."""
        from .speech import bundled_clips, feeds_digest, mel_crop, speech_mels

        config = recipe.calibration
        shapes = recipe.shapes
        frames = static or min(max(int(round(config.seconds * FRAMES_PER_SECOND)), shapes.min_frames), shapes.max_frames)
        if config.source == "generated":
            clips = list(config.speech) or bundled_clips()
            what = f"{len(clips)} speech clip{'s' if len(clips) != 1 else ''}" + ("" if config.speech else " (bundled)")
        elif config.source == "rvc-logs":
            folder = Path(config.path) / RVC_LOGS_WAVS
            if not folder.is_dir():
                raise CalibrationError(f"{folder}: no such folder (calibration.path must be an RVC experiment folder, logs/NAME, with {RVC_LOGS_WAVS}/)")
            wavs = sorted(folder.glob("*.wav"))
            if not wavs:
                raise CalibrationError(f"{folder}: no .wav files (calibration.path)")
            step = max(1, len(wavs) // config.count)
            clips = wavs[::step][: config.count]
            what = f"{len(clips)} of {len(wavs)} training slices in {folder}"
        else:
            raise CalibrationError(f"calibration.source {config.source!r}: rmvpe calibrates on speech (generated: the bundled clips or calibration.speech; rvc-logs: an RVC training folder)")
        try:
            mels = speech_mels(clips)
        except InputError as exc:
            raise CalibrationError(f"{exc} (calibration)") from None
        if config.source == "generated":
            feeds = [{INPUT: mel_crop(mels, frames, config.seed * 1000 + index)} for index in range(config.count)]
        else:  # one crop per file, from its middle (tiled when the slice is shorter)
            feeds = [{INPUT: mel_crop([mel], frames, 0) if mel.shape[1] < frames else
                      np.ascontiguousarray(mel[None, :, (mel.shape[1] - frames) // 2:(mel.shape[1] - frames) // 2 + frames])} for mel in mels]
        log(f"calibration: {len(feeds)} x {frames} frames of log-mel from {what}")
        return feeds, feeds_digest(feeds), f"{config.source}: {len(feeds)} x {frames / FRAMES_PER_SECOND:g} s of speech log-mel from {what}"

    # -- accuracy -------------------------------------------------------------------------------

    def compare(self, spec: RmvpeSpec, reference: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
        """Decoded pitch (threshold 0.03) and salience of ``candidate`` against ``reference`` (flat [T * 360])."""
        reference = np.asarray(reference, dtype=np.float32).reshape(-1)
        candidate = np.asarray(candidate, dtype=np.float32).reshape(-1)
        result: dict[str, Any] = {"length_mismatch": int(candidate.size - reference.size)}
        non_finite = int(np.count_nonzero(~np.isfinite(candidate)))
        result["non_finite"] = non_finite
        if result["length_mismatch"] or non_finite or reference.size % CLASSES or reference.size == 0:
            result.update(f0_cents=None, voicing_mismatch=1.0, voiced_frames=0, max_abs_error=1e9)
            return result
        result.update(_cents_and_voicing(reference.reshape(-1, CLASSES), candidate.reshape(-1, CLASSES)))
        result["max_abs_error"] = float(np.max(np.abs(candidate.astype(np.float64) - reference)))
        return result

    # -- costs ----------------------------------------------------------------------------------

    def flops_per_second(self, spec: RmvpeSpec, weights: Mapping[str, Any]) -> dict[str, float]:
        """Convolutions counted by torch on the meta device (the U-Net and ``cnn``, per second of padded
        frames), plus the BiGRU and the output layer from their sizes."""
        import torch

        from ...measure.flops import torch_flops
        from .model import Rmvpe

        frames = 32 * spec.frame_multiple
        with torch.device("meta"):
            model = Rmvpe(spec).eval()
            x = torch.empty(1, 1, frames, MELS)
        total, by_module = torch_flops(torch.nn.Sequential(model.unet, model.cnn), [x])
        per_second = FRAMES_PER_SECOND / frames
        gru = 2 * 2 * spec.gru_layers * 3 * (3 * MELS * spec.gru_hidden + spec.gru_hidden**2) * FRAMES_PER_SECOND
        output = 2 * 2 * spec.gru_hidden * CLASSES * FRAMES_PER_SECOND
        unet = by_module.get("0", total) * per_second
        cnn = by_module.get("1", 0.0) * per_second
        return {"total": unet + cnn + gru + output, "unet": unet, "cnn": cnn, "gru": gru, "output": output}

    def describe(self, spec: RmvpeSpec) -> str:
        size = "official size" if spec.official else f"channels {spec.channels}, GRU {spec.gru_hidden}"
        return f"RMVPE pitch estimator ({size}), 16 kHz, 100 frames/s"

    def profile_group(self, spec: RmvpeSpec, name: str) -> str | None:
        """encoder.N, intermediate, decoder.N, cnn, gru, output (from a weight, node or module path)."""
        import re

        text = name.replace("/", ".")
        for pattern, group in ((r"unet\.encoder\.bn", "encoder.0"), (r"unet\.encoder\.layers\.(\d+)", "encoder.{0}"),
                               (r"unet\.intermediate", "intermediate"), (r"unet\.decoder\.layers\.(\d+)", "decoder.{0}"),
                               (r"(?<![\w.])cnn(?![\w])", "cnn"), (r"fc\.0|\bgru\b", "gru"), (r"fc\.1", "output")):
            match = re.search(pattern, text)
            if match:
                return group.format(*match.groups())
        return None

    # -- artifact and runtime -------------------------------------------------------------------

    def model_section(self, spec: RmvpeSpec, input_names: list[str], fixed_inputs: Mapping[str, Any]) -> dict[str, Any]:
        return {"sample_rate": SAMPLE_RATE, "hop_length": HOP, "mels": MELS, "classes": CLASSES}

    def check_model(self, model: Mapping[str, Any], read: Any) -> None:
        # The host side (log-mel, decoding) is fixed: an artifact that says otherwise is not one we made.
        for key, value in (("sample_rate", SAMPLE_RATE), ("hop_length", HOP), ("mels", MELS), ("classes", CLASSES)):
            if read.integer(model.get(key), f"model.{key}", 1, 1_000_000) != value:
                raise read.fail(f"model.{key}", f"is {model.get(key)}; RMVPE's host side computes {value}")

    def check_signature(self, input_names: list[str], read: Any) -> None:
        if input_names != [INPUT]:
            raise read.fail("signature.inputs", f"must be exactly [{INPUT!r}] for an rmvpe graph, got {input_names}")

    def open(self, path: Path, manifest: Mapping[str, Any], runner: Any, load_time_s: float) -> Any:
        from .estimator import CompiledPitch

        return CompiledPitch(path, manifest, runner, load_time_s, component=self)
