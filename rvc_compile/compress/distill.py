"""Distillation fine-tuning: a pruned student learns to reproduce the original (teacher) model's output.

Teacher and student see the same inputs and the same random draws (the prior's and the NSF source's
noise are explicit inputs), so the student's target is exact and needs no training data beyond
content features and pitch: the calibration cases. Training runs on random crops (segments) of those
cases. Losses, all against the teacher's output for the same crop:
- log-mel L1 in dB, floored 80 dB below the teacher's peak: ``metrics.log_mel_distance_db`` in torch;
- multi-resolution STFT: spectral convergence + log-magnitude L1, as ``metrics.mrstft_distance``;
- optionally feature matching: L1 between the decoder's stage outputs (their widths are not pruned).

CPU by default, CUDA when present (``device: auto``), there with autocast mixed precision (bf16, or
fp16 with a gradient scaler); the NSF sine source and the losses stay fp32. Deterministic on CPU for a
given seed: every random draw comes from one seeded generator whose state is saved with the student,
the optimizer and the step in ``distill-state.pt``, so an interrupted run resumes exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

import numpy as np

from ..errors import RecipeError
from ..hashing import state_dict_sha256
from ..components.synthesizer.spec import ModelSpec

STATE_FILE = "distill-state.pt"
STATE_FORMAT = "rvc-compile-distill-state"
STATE_FORMAT_VERSION = 1
MEL_DYNAMIC_RANGE_DB = 80.0
HELD_OUT_NOISE_SEED = 1000  # held-out case i is run with noise seed:(1000 + i), for teacher and student alike


@dataclass
class DistillConfig:
    """How the pruned model is fine-tuned to reproduce the original one."""

    steps: int = 300  # 0: no fine-tuning
    learning_rate: float = 1e-4  # Adam; cosine decay to a tenth over the steps
    segment_frames: int = 32  # training crop length (100 frames per second)
    batch: int = 1
    seed: int = 0
    speaker: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when available
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: fp32 on CPU, bf16 (else fp16) on CUDA
    threads: int = 2  # CPU threads
    mel_weight: float = 1.0
    stft_weight: float = 1.0
    feature_weight: float = 0.0  # feature matching on the decoder's stage outputs
    train: Literal["pruned_blocks", "pruned_modules"] = "pruned_blocks"  # what learns: the blocks that were cut, or all of enc_p/flow/dec that were
    log_every: int = 10
    save_every: int = 100  # resumable state every N steps (and at the end)
    resume: bool = True  # continue from the state in the work folder if it belongs to this same run

    def check(self, where: str = "distillation") -> None:
        """The one validation of these settings (``distill`` and the prune recipe use it); RecipeError
        names ``where`` + the field (``distillation.steps``) in its message and its ``key``."""
        if self.steps < 0:
            raise RecipeError.at(f"{where}.steps", f"{self.steps} must be 0 or more")
        positive = {"segment_frames": self.segment_frames, "batch": self.batch, "threads": self.threads, "log_every": self.log_every, "save_every": self.save_every}
        for name, value in positive.items():
            if value < 1:
                raise RecipeError.at(f"{where}.{name}", f"{value} must be at least 1")
        if not self.learning_rate > 0:
            raise RecipeError.at(f"{where}.learning_rate", f"{self.learning_rate} must be positive")
        if min(self.mel_weight, self.stft_weight, self.feature_weight) < 0 or self.mel_weight + self.stft_weight + self.feature_weight == 0:
            raise RecipeError.at(where, "loss weights must be non-negative and not all zero")
        if self.speaker < 0:
            raise RecipeError.at(f"{where}.speaker", f"{self.speaker} must be 0 or more")


@dataclass
class DistillResult:
    state_dict: dict[str, Any]  # the student's weights, fp32 on the CPU
    record: dict[str, Any]  # steps, wall time, losses, device (JSON-able)
    completed: bool  # False when stopped early (``stop_after``)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- losses --------------------------------------------------------------------------------------

class SpectralLosses:
    """The log-mel and multi-resolution STFT distances of ``rvc_compile.verify.metrics``, differentiable, batched."""

    def __init__(self, sample_rate: int, device: Any):
        import torch

        from ..verify.metrics import MRSTFT_RESOLUTIONS, mel_filterbank

        self.sample_rate = sample_rate
        self.mel_fft, self.mel_hop = 2048, sample_rate // 100
        self.resolutions = MRSTFT_RESOLUTIONS
        self.mel_basis = torch.from_numpy(mel_filterbank(sample_rate, self.mel_fft)).float().to(device)
        sizes = {self.mel_fft} | {n_fft for n_fft, _ in self.resolutions}
        # np.hanning(n + 1)[:-1], as metrics.stft_magnitude uses: the periodic Hann window.
        self.windows = {n: torch.hann_window(n, periodic=True, device=device) for n in sizes}

    def power(self, audio: Any, n_fft: int, hop: int) -> Any:
        """|STFT|^2 [B, bins, frames], centered frames with reflect padding."""
        import torch

        spectrum = torch.stft(audio, n_fft, hop, window=self.windows[n_fft], center=True, pad_mode="reflect", return_complex=True)
        return spectrum.real.square() + spectrum.imag.square()

    def log_mel_db(self, audio: Any) -> Any:
        import torch

        mel = torch.matmul(self.mel_basis, self.power(audio, self.mel_fft, self.mel_hop))
        return 10.0 * torch.log10(mel.clamp_min(1e-20))

    def log_mel_l1_db(self, reference: Any, candidate: Any) -> Any:
        """Mean |log-mel difference| in dB, both floored at the reference's peak minus 80 dB (per example)."""
        import torch

        reference_db, candidate_db = self.log_mel_db(reference), self.log_mel_db(candidate)
        floor = reference_db.amax(dim=(1, 2), keepdim=True) - MEL_DYNAMIC_RANGE_DB
        return (torch.maximum(reference_db, floor) - torch.maximum(candidate_db, floor)).abs().mean()

    def mrstft(self, reference: Any, candidate: Any) -> Any:
        """Mean over resolutions of spectral convergence + log-magnitude L1 (nats), per example then averaged."""
        import torch

        total = 0.0
        for n_fft, hop in self.resolutions:
            ref = self.power(reference, n_fft, hop).clamp_min(1e-14).sqrt()
            cand = self.power(candidate, n_fft, hop).clamp_min(1e-14).sqrt()
            convergence = torch.linalg.vector_norm(ref - cand, dim=(1, 2)) / torch.linalg.vector_norm(ref, dim=(1, 2)).clamp_min(1e-7)
            floor = (ref.amax(dim=(1, 2), keepdim=True) * 1e-4).clamp_min(1e-7)
            log_magnitude = (torch.log(torch.maximum(ref, floor)) - torch.log(torch.maximum(cand, floor))).abs().mean(dim=(1, 2))
            total = total + (convergence + log_magnitude).mean()
        return total / len(self.resolutions)


# -- teacher and student forward -----------------------------------------------------------------

class _StageTaps:
    """Collects the decoder's stage outputs (inputs of ``ups[1:]`` and ``conv_post``) for feature matching."""

    def __init__(self, model: Any):
        self.outputs: list[Any] = []
        modules = list(model.dec.ups)[1:] + [model.dec.conv_post]
        self.handles = [m.register_forward_pre_hook(lambda module, args: self.outputs.append(args[0])) for m in modules]

    def take(self) -> list[Any]:
        outputs, self.outputs = self.outputs, []
        return outputs


def _synthesize(model: Any, batch: Mapping[str, Any], autocast: Any) -> Any:
    """Audio [B, samples] for a batch; the NSF source is made in fp32 outside autocast."""
    g = model.speaker_embedding(batch["speaker"])
    source = model.dec.m_source(batch["f0"], batch["source_noise"]) if model.spec.f0 else None
    with autocast():
        audio = model.synthesize(batch["features"], batch["f0"], g, batch["prior_noise"], source)
    return audio.float()


def _autocast_factory(device: Any, dtype: Any) -> Callable[[], Any]:
    import contextlib

    import torch

    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def resolve_device(config: DistillConfig) -> tuple[Any, Any]:
    """(torch device, autocast dtype or None for fp32)."""
    import torch

    if config.device == "cuda" and not torch.cuda.is_available():
        raise RecipeError("distillation.device: 'cuda' requested but torch sees no CUDA device (use 'auto' or 'cpu')")
    device = torch.device("cuda" if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()) else "cpu")
    precision = config.precision
    if precision == "auto":
        precision = "fp32" if device.type == "cpu" else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return device, dtype


# -- data ----------------------------------------------------------------------------------------

def _case_tensors(cases: list[Mapping[str, np.ndarray]], spec: ModelSpec, segment_frames: int) -> list[dict[str, Any]]:
    import torch

    if not cases:
        raise RecipeError("distillation: no calibration cases to train on (calibration.count must be at least 1)")
    out = []
    for index, case in enumerate(cases):
        features = np.asarray(case["features"], dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != spec.feature_dim:
            raise RecipeError(f"calibration case {index}: features must be [frames, {spec.feature_dim}], got {list(features.shape)}")
        if features.shape[0] < segment_frames:
            raise RecipeError(f"calibration case {index}: {features.shape[0]} frames, shorter than distillation.segment_frames {segment_frames}")
        item = {"features": torch.from_numpy(np.ascontiguousarray(features))}
        if spec.f0:
            item["f0"] = torch.from_numpy(np.ascontiguousarray(case["f0"], dtype=np.float32))
        out.append(item)
    return out


def _sample_batch(cases: list[dict[str, Any]], spec: ModelSpec, config: DistillConfig, generator: Any) -> dict[str, Any]:
    """Random crops and noise draws, all from ``generator`` (CPU), so they do not depend on the device."""
    import torch

    features, f0 = [], []
    for _ in range(config.batch):
        case = cases[int(torch.randint(len(cases), (1,), generator=generator))]
        frames = case["features"].shape[0]
        start = int(torch.randint(frames - config.segment_frames + 1, (1,), generator=generator))
        features.append(case["features"][start : start + config.segment_frames])
        if spec.f0:
            f0.append(case["f0"][start : start + config.segment_frames])
    frames = config.segment_frames
    batch = {
        "features": torch.stack(features),
        "f0": torch.stack(f0) if spec.f0 else None,
        "speaker": torch.tensor([config.speaker], dtype=torch.long),
        "prior_noise": torch.randn((config.batch, spec.inter_channels, frames), generator=generator),
        "source_noise": torch.randn((config.batch, frames * spec.hop_length), generator=generator) if spec.f0 else None,
    }
    return batch


# -- the run -------------------------------------------------------------------------------------

def run_fingerprint(teacher_spec: ModelSpec, student_spec: ModelSpec, student_state: Mapping[str, Any], cases: list[Mapping[str, np.ndarray]], config: DistillConfig) -> str:
    """What a saved state must match to be resumed: the models, the data and every setting that changes the result."""
    digest = hashlib.sha256()
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("log_every", "save_every", "resume", "threads", "device")}
    digest.update(json.dumps({"teacher": teacher_spec.to_dict(), "student": student_spec.to_dict(), "config": settings}, sort_keys=True).encode())
    digest.update(state_dict_sha256(student_state).encode())
    for case in cases:
        for name in ("features", "f0"):
            if case.get(name) is not None:
                digest.update(np.ascontiguousarray(case[name], dtype=np.float32).tobytes())
    return digest.hexdigest()


def trained_prefixes(spec: ModelSpec, train: str) -> list[str]:
    """Parameter-name prefixes that learn: every block that lost channels, or the top-level modules holding them.

    The blocks alone is the default: everything else stays bit-identical to the teacher, and Adam's
    fixed-size steps cannot disturb the finely scaled layers around them (``conv_post``, the source).
    """
    prefixes = set()
    for key, _ in spec.channels:
        if train == "pruned_modules":
            prefixes.add(key.split(".")[0] + ".")
        elif key.startswith("dec.resblocks."):
            prefixes.add(".".join(key.split(".")[:3]) + ".")  # dec.resblocks.B.
        elif key.startswith("enc_p.encoder.ffn_layers."):
            prefixes.add(".".join(key.split(".")[:4]) + ".")  # enc_p.encoder.ffn_layers.L.
        else:
            prefixes.add(".".join(key.split(".")[:4]) + ".")  # flow.flows.F.enc.
    return sorted(prefixes)


def learning_rate_at(step: int, config: DistillConfig) -> float:
    """Cosine decay from ``learning_rate`` to a tenth of it over ``steps``."""
    progress = step / max(config.steps, 1)
    return config.learning_rate * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def _format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def distill(
    teacher_spec: ModelSpec,
    teacher_state: Mapping[str, Any],
    student_spec: ModelSpec,
    student_state: Mapping[str, Any],
    cases: list[Mapping[str, np.ndarray]],
    config: DistillConfig,
    work_dir: Path,
    *,
    log: Callable[[str], None] = _stderr,
    stop_after: int | None = None,
) -> DistillResult:
    """Fine-tune the student towards the teacher on crops of ``cases``; state in ``work_dir``.

    ``stop_after``: run at most this many steps now (the state is saved, a later call resumes).
    """
    import torch

    from ..components.synthesizer.model import build_model

    config.check()
    if config.speaker >= teacher_spec.n_speakers:
        raise RecipeError(f"distillation.speaker: {config.speaker} out of range (the model has {teacher_spec.n_speakers} speakers)")
    device, amp_dtype = resolve_device(config)
    if device.type == "cpu":
        torch.set_num_threads(config.threads)
    autocast = _autocast_factory(device, amp_dtype)
    data = _case_tensors(list(cases), student_spec, config.segment_frames)
    fingerprint = run_fingerprint(teacher_spec, student_spec, student_state, list(cases), config)

    teacher = build_model(teacher_spec, dict(teacher_state)).to(device)
    student = build_model(student_spec, dict(student_state)).to(device)
    trained = trained_prefixes(student_spec, config.train)
    parameters = [p for name, p in student.named_parameters() if name.startswith(tuple(trained))]
    if not parameters:
        raise RecipeError("distillation: the student has no pruned layers to fine-tune (every pruning ratio is 0)")
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimizer = torch.optim.Adam(parameters, lr=config.learning_rate, betas=(0.8, 0.99))
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    generator = torch.Generator().manual_seed(config.seed)
    losses = SpectralLosses(student_spec.sampling_rate, device)
    taps = (_StageTaps(teacher), _StageTaps(student)) if config.feature_weight > 0 else None

    work_dir = Path(work_dir)
    state_path = work_dir / STATE_FILE
    step, history, wall_before = 0, [], 0.0
    if state_path.exists() and config.resume:
        saved = _load_state(state_path)
        if saved.get("fingerprint") != fingerprint:
            raise RecipeError(f"{state_path}: saved distillation state belongs to another run (other model, data or settings); delete it or set distillation.resume: false")
        student.load_state_dict({k: v.to(device) for k, v in saved["student"].items()})
        optimizer.load_state_dict(saved["optimizer"])
        if scaler is not None and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        generator.set_state(saved["data_rng"])
        torch.set_rng_state(saved["torch_rng"])
        step, history, wall_before = int(saved["step"]), list(saved["history"]), float(saved["wall_s"])
        log(f"distill: resuming at step {step}/{config.steps} from {state_path}")

    def save() -> None:
        work_dir.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": STATE_FORMAT, "format_version": STATE_FORMAT_VERSION, "fingerprint": fingerprint, "step": step,
            "student": {k: v.detach().cpu() for k, v in student.state_dict().items()},
            "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
            "data_rng": generator.get_state(), "torch_rng": torch.get_rng_state(),
            "history": history, "wall_s": wall_before + (time.perf_counter() - started),
        }
        tmp = state_path.with_name(state_path.name + ".tmp")
        torch.save(payload, tmp)
        tmp.replace(state_path)

    started = time.perf_counter()
    session_start_step = step
    window: list[dict[str, float]] = []
    end = config.steps if stop_after is None else min(config.steps, step + stop_after)
    teacher.eval()
    student.eval()  # no dropout or batch norm in the inference graph: eval and train modes compute the same
    while step < end:
        batch = {k: (v.to(device) if v is not None else None) for k, v in _sample_batch(data, student_spec, config, generator).items()}
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, config)
        with torch.no_grad():
            target = _synthesize(teacher, batch, autocast)
            target_features = taps[0].take() if taps else []
        output = _synthesize(student, batch, autocast)
        terms = {}
        if config.mel_weight > 0:
            terms["mel_db"] = losses.log_mel_l1_db(target, output)
        if config.stft_weight > 0:
            terms["mrstft"] = losses.mrstft(target, output)
        if taps:
            student_features = taps[1].take()
            terms["feature"] = sum((s.float() - t.float()).abs().mean() for s, t in zip(student_features, target_features)) / len(student_features)
        weights = {"mel_db": config.mel_weight, "mrstft": config.stft_weight, "feature": config.feature_weight}
        loss = sum(weights[name] * value for name, value in terms.items())
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        step += 1
        window.append({"loss": float(loss.detach()), **{name: float(value.detach()) for name, value in terms.items()}})
        if step % config.log_every == 0 or step == end:
            mean = {name: float(np.mean([w[name] for w in window])) for name in window[0]}
            history.append({"step": step, **{name: round(value, 5) for name, value in mean.items()}})
            window = []
            elapsed = time.perf_counter() - started
            rate = (step - session_start_step) / max(elapsed, 1e-9)
            parts = "  ".join(f"{name} {value:.4g}" for name, value in mean.items())
            log(f"distill step {step}/{config.steps}  {parts}  {rate:.2f} steps/s  ETA {_format_seconds((config.steps - step) / max(rate, 1e-9))}")
        if step % config.save_every == 0 or step == end:
            save()

    wall = wall_before + (time.perf_counter() - started)
    for handles in (taps or ()):
        for handle in handles.handles:
            handle.remove()
    record = {
        "steps": step,
        "steps_planned": config.steps,
        "wall_s": round(wall, 1),
        "device": str(device),
        "precision": {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp_dtype],
        "threads": config.threads if device.type == "cpu" else None,
        "trained": trained,
        "training_cases": len(data),
        "config": dataclasses.asdict(config),
        "loss_first": history[0] if history else None,
        "loss_last": history[-1] if history else None,
        "history": history,
    }
    state = {k: v.detach().to("cpu", torch.float32).clone() for k, v in student.state_dict().items()}
    return DistillResult(state_dict=state, record=record, completed=step >= config.steps)


def _load_state(path: Path) -> dict[str, Any]:
    import torch

    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file; the user needs the path
        raise RecipeError(f"{path}: unreadable distillation state ({type(exc).__name__}); delete it or set distillation.resume: false") from None
    if not isinstance(saved, dict) or saved.get("format") != STATE_FORMAT or saved.get("format_version") != STATE_FORMAT_VERSION:
        raise RecipeError(f"{path}: not a distillation state of this rvc-compile version; delete it or set distillation.resume: false")
    return saved


# -- held-out evaluation -------------------------------------------------------------------------

class HeldOut:
    """The teacher's output on held-out cases (fp32, CPU), and any model's distance to it."""

    def __init__(self, spec: ModelSpec, state_dict: Mapping[str, Any], cases: list[Mapping[str, np.ndarray]], speaker: int = 0):
        self.cases, self.speaker = list(cases), speaker
        self.references = [self._run(spec, state_dict, index) for index in range(len(self.cases))]

    def _run(self, spec: ModelSpec, state_dict: Mapping[str, Any], index: int, model: Any = None) -> np.ndarray:
        import torch

        from ..components.synthesizer.inputs import make_noise
        from ..components.synthesizer.model import build_model

        model = model or build_model(spec, dict(state_dict))
        case = self.cases[index]
        frames = case["features"].shape[0]
        noise = make_noise(f"seed:{HELD_OUT_NOISE_SEED + index}", frames, inter_channels=spec.inter_channels, hop_length=spec.hop_length, has_f0=spec.f0)
        inputs = [torch.from_numpy(np.ascontiguousarray(case["features"], dtype=np.float32))[None]]
        if spec.f0:
            inputs.append(torch.from_numpy(np.ascontiguousarray(case["f0"], dtype=np.float32))[None])
        inputs += [torch.tensor([self.speaker], dtype=torch.long), torch.from_numpy(noise["prior_noise"])]
        if spec.f0:
            inputs.append(torch.from_numpy(noise["source_noise"]))
        with torch.inference_mode():
            return model(*inputs)[0].numpy()

    def measure(self, spec: ModelSpec, state_dict: Mapping[str, Any]) -> dict[str, Any]:
        """Mean and per-case log-mel distance (dB), MR-STFT distance and SNR (dB) against the teacher."""
        from ..verify.metrics import log_mel_distance_db, mrstft_distance, snr_db
        from ..components.synthesizer.model import build_model

        model = build_model(spec, dict(state_dict))
        per_case = []
        for index, reference in enumerate(self.references):
            candidate = self._run(spec, state_dict, index, model)
            per_case.append({
                "frames": int(self.cases[index]["features"].shape[0]),
                "log_mel_db": log_mel_distance_db(reference, candidate, spec.sampling_rate),
                "mrstft": mrstft_distance(reference, candidate),
                "snr_db": snr if math.isfinite(snr := snr_db(reference, candidate)) else None,  # None: identical
            })
        snrs = [c["snr_db"] for c in per_case if c["snr_db"] is not None]
        return {
            "cases": len(per_case),
            "log_mel_db": float(np.mean([c["log_mel_db"] for c in per_case])),
            "mrstft": float(np.mean([c["mrstft"] for c in per_case])),
            "snr_db": float(np.mean(snrs)) if snrs else None,
            "per_case": per_case,
        }
