"""Distillation fine-tuning: a pruned student learns to reproduce the original (teacher) model's output.

Teacher and student see the same inputs and the same random draws (the prior's and the NSF source's
noise are explicit inputs), so the student's target is exact and needs no training data beyond
content features and pitch: the calibration cases. Training runs on random crops (segments) of those
cases. Losses, all against the teacher's output for the same crop:
- log-mel L1 in dB, floored 80 dB below the teacher's peak: ``metrics.log_mel_distance_db`` in torch;
- multi-resolution STFT: spectral convergence + log-magnitude L1, as ``metrics.mrstft_distance``;
- optionally feature matching: L1 between the decoder's stage outputs (their widths are not pruned).

CPU by default, CUDA when present (``device: auto``), there with autocast mixed precision (bf16, or
fp16 with a gradient scaler); the NSF sine source and the losses stay fp32. Mixed precision on a CPU
only where it runs natively (AVX-512 BF16 or AMX); elsewhere it is refused with the reason.
Deterministic for a given seed: step s draws its crops and noise from a generator seeded by
(seed, s) alone, so a step's batch, and the teacher's output for it, are known without replaying the
steps before it. The student, the optimizer and the step are saved in ``distill-state.pt``, so an
interrupted run resumes exactly.

The step, and what makes it fast without changing its maths (docs/TRAINING.md has the measurements):
- the teacher's outputs (``TeacherTargets``) are computed in inference mode, in chunks of steps, and
  kept in the build cache keyed by the teacher's weights, the data, the step seeds and the settings
  that shape a batch: a resumed run and every run of a prune-ratio sweep read them back instead of
  running the teacher again (the loss curve is bit-identical with and without the cache);
- when everything before the decoder is the teacher's own (the encoder, flow and speaker embedding
  neither pruned nor trained), the student starts from the teacher's decoder input instead of
  recomputing it (``reuse_prefix``);
- a fused Adam, and one host sync per log line instead of one per step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Optional

import numpy as np

from ..errors import RecipeError
from ..hashing import state_dict_sha256
from ..components.synthesizer.spec import ModelSpec

STATE_FILE = "distill-state.pt"
STATE_FORMAT = "rvc-compile-distill-state"
STATE_FORMAT_VERSION = 2  # 2: per-step seeds (no generator state)
MEL_DYNAMIC_RANGE_DB = 80.0
HELD_OUT_NOISE_SEED = 1000  # held-out case i is run with noise seed:(1000 + i), for teacher and student alike


@dataclass
class DistillConfig:
    """How the pruned model is fine-tuned to reproduce the original one."""

    steps: int = 300  # 0: no fine-tuning
    learning_rate: float = 1e-4  # Adam; cosine decay to a tenth over the steps
    segment_frames: int = 32  # training crop length (100 frames per second)
    batch: int = 1
    crops: int = 0  # 0: fresh crops every step; N: a fixed set of N crops cycled in shuffled epochs (the teacher runs once per crop)
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
    # RVC's adversarial losses with the voice's own discriminator (D_*.pth of its training folder), trained alongside.
    discriminator: Optional[Path] = None
    adversarial_weight: float = 0.1  # times (generator loss + feature matching); RVC's mel weight 45 on ln-mel is ~10x ours on dB
    discriminator_learning_rate: float = 1e-4  # AdamW, betas (0.8, 0.99), as RVC
    # Speed-ups that keep the maths (each can be turned off; `rvc-compile train-bench` measures them).
    teacher_cache: bool = True  # the teacher's outputs in the build cache, reused on resume and across runs
    reuse_prefix: bool = True  # the student starts from the teacher's decoder input where everything before it is the teacher's
    fused_optimizer: bool = True  # torch's fused Adam (one kernel over all parameters)

    def check(self, where: str = "distillation") -> None:
        """The one validation of these settings (``distill`` and the prune recipe use it); RecipeError
        names ``where`` + the field (``distillation.steps``) in its message and its ``key``."""
        if self.steps < 0:
            raise RecipeError.at(f"{where}.steps", f"{self.steps} must be 0 or more")
        if self.crops < 0:
            raise RecipeError.at(f"{where}.crops", f"{self.crops} must be 0 (fresh crops every step) or more")
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
        if self.adversarial_weight < 0:
            raise RecipeError.at(f"{where}.adversarial_weight", f"{self.adversarial_weight} must be 0 or more")
        if not self.discriminator_learning_rate > 0:
            raise RecipeError.at(f"{where}.discriminator_learning_rate", f"{self.discriminator_learning_rate} must be positive")


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
    if device.type == "cpu" and precision != "fp32":
        refuse_emulated_precision(precision)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return device, dtype


def refuse_emulated_precision(precision: str) -> None:
    """Mixed precision on a CPU only where its kernels run natively; RecipeError with the reason otherwise."""
    from ..machine import machine_isa

    isa = machine_isa()
    if precision == "fp16":
        raise RecipeError(
            "distillation.precision: fp16 training on a CPU has no native kernels in torch (fp16 autocast on CPU "
            "is emulated); use fp32, or bf16 on a CPU with AVX-512 BF16 or AMX"
        )
    if precision == "bf16" and not isa.native_bf16:
        raise RecipeError(
            f"distillation.precision: bf16 on this CPU ({isa.name}: no AVX-512 BF16 or AMX) is emulated: an RVC "
            "training step measured 12x slower under bf16 autocast on such a CPU; use fp32"
        )


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


def step_generator(seed: int, step: int) -> Any:
    """The CPU generator of step ``step``'s draws: seeded by (seed, step) alone."""
    import torch

    digest = hashlib.sha256(f"rvc-compile-distill:{seed}:{step}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


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
        "speaker": torch.full((config.batch,), config.speaker, dtype=torch.long),
        "prior_noise": torch.randn((config.batch, spec.inter_channels, frames), generator=generator),
        "source_noise": torch.randn((config.batch, frames * spec.hop_length), generator=generator) if spec.f0 else None,
    }
    return batch


# -- the teacher's outputs -----------------------------------------------------------------------

TEACHER_STAGE = "distill-teacher"
TEACHER_FILE = "targets.npz"
TEACHER_FORMAT = 2
TEACHER_CHUNK_STEPS = 50  # items (steps, or crops of a fixed set) per cache entry: a resumed run recomputes at most one chunk
PREFIX_MODULES = ("enc_p.", "flow.", "emb_g.")  # everything the decoder's input depends on


class TeacherTargets:
    """The teacher's output audio for every training item (and its decoder input ``z`` when the student
    reuses it), computed in inference mode a chunk of ``TEACHER_CHUNK_STEPS`` items at a time.

    An item is one step's batch (``crops: 0``: fresh crops every step) or one crop of a fixed set
    (``crops: N``: N crops, batch 1 each, cycled in shuffled epochs; a step stacks ``batch`` of them).
    With a ``store`` each chunk is a build-cache entry (stage ``distill-teacher``) keyed by the teacher's
    spec and weights, the training data's content, the seed, the chunk and every setting that shapes an
    item (crop length, batch size, crop set, speaker), the device and torch's version; an entry whose
    content does not match (another teacher's, a damaged file) is discarded with a log line and
    recomputed. Without a store the teacher runs for each step's items only, as before the cache. Either
    way the numbers are the same: each item's targets come from the same call on the same inputs.
    """

    def __init__(self, teacher: Any, teacher_spec: ModelSpec, teacher_sha: str, data: list[dict[str, Any]], data_sha: str,
                 config: DistillConfig, device: Any, autocast: Callable[[], Any], precision: str, keep_z: bool,
                 store: Any = None, log: Callable[[str], None] = _stderr):
        self.teacher, self.spec, self.teacher_sha, self.data, self.data_sha = teacher, teacher_spec, teacher_sha, data, data_sha
        self.config, self.device, self.autocast, self.keep_z, self.store, self.log = config, device, autocast, keep_z, store, log
        self.precision = precision
        self.pool = config.crops
        self.item_count = config.steps if self.pool == 0 else self.pool
        self.item_config = config if self.pool == 0 else dataclasses.replace(config, batch=1)
        self.chunks: dict[int, dict[str, np.ndarray]] = {}
        self.hits = self.misses = 0
        self.compute_s = 0.0
        self._z: list[Any] = []
        self._hook = teacher.dec.register_forward_pre_hook(lambda module, args: self._z.append(args[0])) if keep_z else None

    def close(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def items_of(self, step: int) -> list[int]:
        """The items step ``step`` trains on: the step itself, or ``batch`` crops of the shuffled epoch."""
        if self.pool == 0:
            return [step]
        import torch

        items = []
        for position in range(step * self.config.batch, (step + 1) * self.config.batch):
            epoch, index = divmod(position, self.pool)
            order = torch.randperm(self.pool, generator=step_generator(self.config.seed, -1 - epoch))
            items.append(int(order[index]))
        return items

    def item_batch(self, item: int) -> dict[str, Any]:
        """Item ``item``'s inputs on the CPU: crops and noise from ``step_generator(seed, item)``."""
        return _sample_batch(self.data, self.spec, self.item_config, step_generator(self.config.seed, item))

    def batch(self, step: int) -> dict[str, Any]:
        """Step ``step``'s batch on the CPU."""
        import torch

        parts = [self.item_batch(item) for item in self.items_of(step)]
        if len(parts) == 1:
            return parts[0]
        return {k: (torch.cat([part[k] for part in parts]) if parts[0][k] is not None else None) for k in parts[0]}

    def get(self, step: int) -> tuple[Any, Any]:
        """(target audio [B, samples], the teacher's decoder input [B, inter, frames] or None) on the device."""
        import torch

        items = self.items_of(step)
        if self.store is None:  # nothing to keep: the teacher runs for this step's items only, as it always did
            arrays = {}
            for item in items:
                arrays.update(self._compute(item, item + 1))
            self.misses += 1
        else:
            arrays = {}
            for item in items:
                index = item // TEACHER_CHUNK_STEPS
                if index not in self.chunks:
                    if self.pool == 0:
                        self.chunks.clear()  # steps go forward: the last chunk is the only one needed again
                    self.chunks[index] = self._load(index)
                arrays[f"item{item}.audio"] = self.chunks[index][f"item{item}.audio"]
                if self.keep_z:
                    arrays[f"item{item}.z"] = self.chunks[index][f"item{item}.z"]
        audio = torch.from_numpy(np.concatenate([arrays[f"item{item}.audio"] for item in items])).to(self.device)
        z = torch.from_numpy(np.concatenate([arrays[f"item{item}.z"] for item in items])).to(self.device) if self.keep_z else None
        return audio, z

    def _compute(self, first: int, end: int) -> dict[str, np.ndarray]:
        """The targets of items ``first`` .. ``end - 1``."""
        import torch

        started = time.perf_counter()
        arrays = {}
        for item in range(first, end):
            batch = {k: (v.to(self.device) if v is not None else None) for k, v in self.item_batch(item).items()}
            self._z.clear()
            with torch.inference_mode():
                arrays[f"item{item}.audio"] = _synthesize(self.teacher, batch, self.autocast).cpu().numpy()
            if self.keep_z:
                arrays[f"item{item}.z"] = self._z[0].float().cpu().numpy()
                self._z.clear()
        seconds = time.perf_counter() - started
        self.compute_s += seconds
        if self.store is not None:
            what = "steps" if self.pool == 0 else "crops"
            self.log(f"distill: the teacher's outputs for {what} {first + 1}-{end} took {seconds:.1f} s (kept in the build cache)")
        return arrays

    def _range(self, index: int) -> tuple[int, int]:
        first = index * TEACHER_CHUNK_STEPS
        return first, min(first + TEACHER_CHUNK_STEPS, self.item_count)

    def key(self, index: int) -> Any:
        import torch

        from ..cache.store import cpu_device, stage_key

        device = cpu_device() if self.device.type == "cpu" else {"kind": "cuda", "name": torch.cuda.get_device_name(self.device)}
        config = self.config
        first, end = self._range(index)
        params = {
            "format": TEACHER_FORMAT, "teacher_spec": self.spec.to_dict(), "chunk": index, "chunk_items": TEACHER_CHUNK_STEPS,
            "items": end - first, "crops": self.pool, "seed": config.seed, "segment_frames": config.segment_frames,
            "batch": self.item_config.batch, "speaker": config.speaker, "z": self.keep_z, "precision": self.precision,
        }
        return stage_key(TEACHER_STAGE, inputs={"teacher": self.teacher_sha, "data": self.data_sha}, params=params,
                         libraries={"torch": torch.__version__}, device=device)

    def _check(self, arrays: Mapping[str, np.ndarray], index: int) -> str | None:
        samples = self.config.segment_frames * self.spec.hop_length
        batch = self.item_config.batch
        for item in range(*self._range(index)):
            audio = arrays.get(f"item{item}.audio")
            if audio is None or audio.dtype != np.float32 or audio.shape != (batch, samples) or not np.isfinite(audio).all():
                return f"item {item}'s target audio is missing or not [{batch}, {samples}] finite float32"
            if self.keep_z:
                z = arrays.get(f"item{item}.z")
                if z is None or z.shape != (batch, self.spec.inter_channels, self.config.segment_frames):
                    return f"item {item}'s decoder input is missing or of another shape"
        return None

    def _load(self, index: int) -> dict[str, np.ndarray]:
        first, end = self._range(index)
        made: list[dict[str, np.ndarray]] = []
        read: list[dict[str, np.ndarray]] = []

        def produce(folder: Path) -> dict[str, Any]:
            arrays = self._compute(first, end)
            with open(folder / TEACHER_FILE, "wb") as handle:
                np.savez(handle, teacher=np.array(self.teacher_sha), **arrays)
            made.append(arrays)
            return {"teacher": self.teacher_sha, "items": end - first}

        def check(entry: Any) -> str | None:
            try:
                with np.load(entry.file(TEACHER_FILE), allow_pickle=False) as data:
                    arrays = {name: data[name] for name in data.files}
            except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
                return f"{TEACHER_FILE} unreadable ({type(exc).__name__})"
            if str(arrays.pop("teacher", "")) != self.teacher_sha:
                return f"{TEACHER_FILE} holds another teacher's outputs"
            problem = self._check(arrays, index)
            if problem is None:
                read.append(arrays)
            return problem

        entry, hit = self.store.get_or_create(self.key(index), produce, check=check)
        entry.release()
        for discarded, reason in self.store.discarded:
            self.log(f"teacher cache entry {discarded[:12]} ({self.store.entry_dir(discarded)}) failed its check ({reason}); deleted, recomputing")
        self.store.discarded.clear()
        if hit:
            self.hits += 1
            return read[-1]
        self.misses += 1
        return made[-1]


def shares_prefix(teacher: Any, student: Any, trained: list[str]) -> bool:
    """Whether the student's decoder input is the teacher's: every weight before the decoder equal, none trained."""
    import torch

    if teacher.spec.skip_frames or student.spec.skip_frames:
        return False
    if any(prefix.startswith(PREFIX_MODULES) for prefix in trained):
        return False
    teacher_state, student_state = teacher.state_dict(), student.state_dict()
    names = [name for name in teacher_state if name.startswith(PREFIX_MODULES)]
    if sorted(names) != sorted(name for name in student_state if name.startswith(PREFIX_MODULES)):
        return False
    return all(teacher_state[n].shape == student_state[n].shape and torch.equal(teacher_state[n], student_state[n]) for n in names)


def _decode(model: Any, batch: Mapping[str, Any], z: Any, autocast: Any) -> Any:
    """Audio [B, samples] from the decoder input ``z`` (the rest of ``_synthesize``)."""
    g = model.speaker_embedding(batch["speaker"])
    source = model.dec.m_source(batch["f0"], batch["source_noise"]) if model.spec.f0 else None
    with autocast():
        audio = model.dec(z, g, source).squeeze(1)
    return audio.float()


def _peak_memory_mb(device: Any) -> float:
    import resource

    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# -- the run -------------------------------------------------------------------------------------

PART_NAMES = ("targets", "student_forward", "discriminator", "loss", "backward", "optimizer")  # the parts of a step that are timed


def run_fingerprint(teacher_spec: ModelSpec, student_spec: ModelSpec, student_state: Mapping[str, Any], cases: list[Mapping[str, np.ndarray]], config: DistillConfig) -> str:
    """What a saved state must match to be resumed: the models, the data and every setting that changes the result."""
    digest = hashlib.sha256()
    not_maths = ("log_every", "save_every", "resume", "threads", "device", "teacher_cache", "reuse_prefix")
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in not_maths and k != "discriminator"}
    if config.discriminator is not None:  # the file's content, not its path
        from ..artifact.manifest import sha256_file

        settings["discriminator"] = sha256_file(Path(config.discriminator))
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
    cache_dir: Path | None = None,
) -> DistillResult:
    """Fine-tune the student towards the teacher on crops of ``cases``; state in ``work_dir``.

    ``stop_after``: run at most this many steps now (the state is saved, a later call resumes).
    ``cache_dir``: the build cache that keeps the teacher's outputs (``config.teacher_cache``); None
    keeps them in memory only.
    """
    import torch

    from ..components.synthesizer.model import build_model
    from ..precision.calibration import content_sha256
    from .discriminator import discriminator_loss, feature_loss, generator_loss

    config.check()
    if config.speaker >= teacher_spec.n_speakers:
        raise RecipeError(f"distillation.speaker: {config.speaker} out of range (the model has {teacher_spec.n_speakers} speakers)")
    device, amp_dtype = resolve_device(config)
    precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp_dtype]
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
    fused = config.fused_optimizer and (device.type in ("cpu", "cuda"))
    optimizer = torch.optim.Adam(parameters, lr=config.learning_rate, betas=(0.8, 0.99), **({"fused": True} if fused else {}))
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    losses = SpectralLosses(student_spec.sampling_rate, device)
    taps = (_StageTaps(teacher), _StageTaps(student)) if config.feature_weight > 0 else None
    reuse_prefix = config.reuse_prefix and shares_prefix(teacher, student, trained)
    store = None
    if config.teacher_cache and cache_dir is not None and taps is None:
        from ..cache.store import Store

        store = Store(Path(cache_dir))
    elif config.teacher_cache and taps is not None and cache_dir is not None:
        log("distill: feature matching needs the teacher's stage outputs every step; the teacher runs live (no teacher cache)")
    targets = TeacherTargets(
        teacher, teacher_spec, state_dict_sha256(teacher_state), data, content_sha256([{k: case[k] for k in ('features', 'f0') if case.get(k) is not None} for case in cases]), config, device, autocast, precision,
        keep_z=reuse_prefix, store=store, log=log,
    ) if taps is None else None
    # Feature matching runs the teacher live on the same items (the sampler only, no teacher hook).
    live_items = TeacherTargets(teacher, teacher_spec, "", data, "", config, device, autocast, precision, keep_z=False) if taps is not None else None

    discriminator = optimizer_d = None
    if config.discriminator is not None:
        from .discriminator import load_discriminator

        discriminator = load_discriminator(config.discriminator, student_spec.version).to(device)
        optimizer_d = torch.optim.AdamW(discriminator.parameters(), lr=config.discriminator_learning_rate, betas=(0.8, 0.99), eps=1e-9)

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
        if discriminator is not None:
            discriminator.load_state_dict({k: v.to(device) for k, v in saved["discriminator"].items()})
            optimizer_d.load_state_dict(saved["optimizer_d"])
        torch.set_rng_state(saved["torch_rng"])
        step, history, wall_before = int(saved["step"]), list(saved["history"]), float(saved["wall_s"])
        log(f"distill: resuming at step {step}/{config.steps} from {state_path}")

    def save() -> None:
        work_dir.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": STATE_FORMAT, "format_version": STATE_FORMAT_VERSION, "fingerprint": fingerprint, "step": step,
            "student": {k: v.detach().cpu() for k, v in student.state_dict().items()},
            "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
            "torch_rng": torch.get_rng_state(),
            "discriminator": {k: v.detach().cpu() for k, v in discriminator.state_dict().items()} if discriminator is not None else None,
            "optimizer_d": optimizer_d.state_dict() if optimizer_d is not None else None,
            "history": history, "wall_s": wall_before + (time.perf_counter() - started),
        }
        tmp = state_path.with_name(state_path.name + ".tmp")
        torch.save(payload, tmp)
        tmp.replace(state_path)

    started = time.perf_counter()
    session_start_step = step
    window: list[dict[str, Any]] = []
    parts = {name: 0.0 for name in PART_NAMES}
    end = config.steps if stop_after is None else min(config.steps, step + stop_after)
    weights = {"mel_db": config.mel_weight, "mrstft": config.stft_weight, "feature": config.feature_weight,
               "adversarial": config.adversarial_weight, "discriminator": 0.0}  # the discriminator's own loss is logged, not trained on
    teacher.eval()
    student.eval()  # no dropout or batch norm in the inference graph: eval and train modes compute the same
    try:
        while step < end:
            t0 = time.perf_counter()
            if targets is not None:
                target, z = targets.get(step)
                batch = {k: (v.to(device) if v is not None else None) for k, v in targets.batch(step).items()}
                target_features: list[Any] = []
            else:  # feature matching: the teacher runs live, with its stage taps
                batch = {k: (v.to(device) if v is not None else None) for k, v in live_items.batch(step).items()}
                with torch.inference_mode():
                    target = _synthesize(teacher, batch, autocast)
                    target_features = [t.clone() for t in taps[0].take()]
                z = None
            for group in optimizer.param_groups:
                group["lr"] = learning_rate_at(step, config)
            t1 = time.perf_counter()
            output = _decode(student, batch, z, autocast) if z is not None else _synthesize(student, batch, autocast)
            t2 = time.perf_counter()
            terms = {}
            if discriminator is not None:
                # RVC's order: one discriminator step on (teacher, student) outputs, then the student's
                # adversarial and feature-matching losses against the updated discriminator.
                discriminator.requires_grad_(True)
                with autocast():
                    real, _ = discriminator(target)
                    fake, _ = discriminator(output.detach())
                loss_d = discriminator_loss(real, fake)
                optimizer_d.zero_grad(set_to_none=True)
                loss_d.backward()
                optimizer_d.step()
                discriminator.requires_grad_(False)
                with autocast():
                    with torch.no_grad():
                        _, maps_real = discriminator(target)
                    scores, maps_fake = discriminator(output)
                terms["adversarial"] = generator_loss(scores) + feature_loss(maps_real, maps_fake)
                terms["discriminator"] = loss_d.detach()
            t_d = time.perf_counter()
            if config.mel_weight > 0:
                terms["mel_db"] = losses.log_mel_l1_db(target, output)
            if config.stft_weight > 0:
                terms["mrstft"] = losses.mrstft(target, output)
            if taps:
                student_features = taps[1].take()
                terms["feature"] = sum((s.float() - t.float()).abs().mean() for s, t in zip(student_features, target_features)) / len(student_features)
            loss = sum(weights[name] * value for name, value in terms.items())
            t3 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
            else:
                loss.backward()
            t4 = time.perf_counter()
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            t5 = time.perf_counter()
            for name, seconds in zip(PART_NAMES, (t1 - t0, t2 - t1, t_d - t2, t3 - t_d, t4 - t3, t5 - t4)):
                parts[name] += seconds
            step += 1
            # Kept on the device: one host sync per log line, not per step.
            window.append({"loss": loss.detach(), **{name: value.detach() for name, value in terms.items()}})
            if step % config.log_every == 0 or step == end:
                names = list(window[0])
                means = torch.stack([torch.stack([w[name].float() for w in window]).mean() for name in names]).tolist()
                mean = dict(zip(names, means))
                history.append({"step": step, **{name: round(value, 5) for name, value in mean.items()}})
                window = []
                elapsed = time.perf_counter() - started
                rate = (step - session_start_step) / max(elapsed, 1e-9)
                text = "  ".join(f"{name} {value:.4g}" for name, value in mean.items())
                log(f"distill step {step}/{config.steps}  {text}  {rate:.2f} steps/s  ETA {_format_seconds((config.steps - step) / max(rate, 1e-9))}")
            if step % config.save_every == 0 or step == end:
                save()
    finally:
        if targets is not None:
            targets.close()
        for handles in (taps or ()):
            for handle in handles.handles:
                handle.remove()

    wall = wall_before + (time.perf_counter() - started)
    session_steps = step - session_start_step
    session_s = time.perf_counter() - started
    record = {
        "steps": step,
        "steps_planned": config.steps,
        "wall_s": round(wall, 1),
        "device": str(device),
        "precision": precision,
        "threads": config.threads if device.type == "cpu" else None,
        "trained": trained,
        "training_cases": len(data),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(config).items()},
        "discriminator": None if discriminator is None else {"file": Path(config.discriminator).name, "version": discriminator.version},
        "speed": {
            "steps_this_run": session_steps,
            "steps_per_s": round(session_steps / session_s, 4) if session_steps else None,
            # Host time per step of each part; on CUDA the parts are asynchronous and only the total is exact.
            "ms_per_step": {name: round(1000 * seconds / session_steps, 2) for name, seconds in parts.items()} if session_steps else None,
            "peak_memory_mb": round(_peak_memory_mb(device), 1),
            "reuse_prefix": reuse_prefix,
            "fused_optimizer": fused,
            "teacher_cache": None if targets is None else {
                "store": str(cache_dir) if store is not None else None, "chunks_read": targets.hits, "chunks_computed": targets.misses,
                "teacher_s": round(targets.compute_s, 2),
            },
        },
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
