"""For context: upstream RVC's own GAN training step beside our distillation step, on this machine.

    PYTHONPATH=. python benchmarks/upstream_train_step.py --rvc-root PATH/TO/Retrieval-based-Voice-Conversion-WebUI

Loads RVC's code from the checkout at run time (``infer/module/models.py``: ``SynthesizerTrnMs768NSFsid``
and ``MultiPeriodDiscriminatorV2``; ``train/losses.py``; ``train/mel_processing.py``) and runs the step of
its ``train/train.py`` at v2 40k, fp32, batch 1, 2 s of input with its 12800-sample segment: the
generator's forward (posterior encoder, flow, decoder over the segment), mel loss, one discriminator
step, the generator's adversarial + feature-matching + mel + KL losses, backward, AdamW on both. Random
weights, random inputs. If librosa is not installed, its mel filterbank is replaced by ours (the
filter's values do not change the step's cost). Then our distillation step (``rvc-compile
train-bench``'s variants "today" and "+teacher cache, warm", and with a discriminator) on the same
machine. Prints JSON; results in benchmarks/results/upstream_train_step.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _librosa_stub() -> None:
    """``librosa.filters.mel`` from our filterbank where librosa is missing (timing only)."""
    try:
        import librosa  # noqa: F401
        return
    except ImportError:
        pass
    import numpy as np

    from rvc_compile.verify.metrics import mel_filterbank

    def mel(sr, n_fft, n_mels, fmin=0.0, fmax=None, **_):
        bank = mel_filterbank(sr, n_fft)
        rows = np.linspace(0, bank.shape[0] - 1, n_mels).round().astype(int)
        return bank[rows]

    librosa = types.ModuleType("librosa")
    librosa.filters = types.SimpleNamespace(mel=mel)
    sys.modules["librosa"] = librosa
    sys.modules["librosa.filters"] = librosa.filters  # type: ignore[assignment]


def upstream_step_seconds(rvc_root: Path, repeats: int, threads: int) -> dict:
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(rvc_root))
    _librosa_stub()
    from infer.module import commons
    from infer.module import models as upstream
    from train.losses import discriminator_loss, feature_loss, generator_loss, kl_loss
    from train.mel_processing import mel_spectrogram_torch, spec_to_mel_torch

    from rvc_compile.components.synthesizer.spec import official_config

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = official_config("v2", "40k")
    net_g = upstream.SynthesizerTrnMs768NSFsid(*config, is_half=False)
    net_d = upstream.MultiPeriodDiscriminatorV2(False)
    optim_g = torch.optim.AdamW(net_g.parameters(), 1e-4, betas=(0.8, 0.99), eps=1e-9)
    optim_d = torch.optim.AdamW(net_d.parameters(), 1e-4, betas=(0.8, 0.99), eps=1e-9)
    sr, hop, n_fft, n_mels, segment = 40000, 400, 2048, 125, 12800
    frames = 200  # 2 s
    phone = torch.randn(1, frames, 768)
    pitch = torch.randint(1, 255, (1, frames))
    pitchf = 100 + 100 * torch.rand(1, frames)
    wave = 0.1 * torch.randn(1, 1, frames * hop)
    spec = torch.rand(1, n_fft // 2 + 1, frames)
    lengths, sid = torch.tensor([frames]), torch.tensor([0])

    def step() -> None:
        y_hat, ids_slice, x_mask, z_mask, (z, z_p, m_p, logs_p, m_q, logs_q) = net_g(phone, lengths, pitch, pitchf, spec, lengths, sid)
        mel = spec_to_mel_torch(spec, n_fft, n_mels, sr, 0.0, None)
        y_mel = commons.slice_segments(mel, ids_slice, segment // hop)
        y_hat_mel = mel_spectrogram_torch(y_hat.float().squeeze(1), n_fft, n_mels, sr, hop, n_fft, 0.0, None)
        real = commons.slice_segments(wave, ids_slice * hop, segment)
        y_d_hat_r, y_d_hat_g, _, _ = net_d(real, y_hat.detach())
        loss_disc, _, _ = discriminator_loss(y_d_hat_r, y_d_hat_g)
        optim_d.zero_grad()
        loss_disc.backward()
        optim_d.step()
        y_d_hat_r, y_d_hat_g, fmap_r, fmap_g = net_d(real, y_hat)
        loss = F.l1_loss(y_mel, y_hat_mel) * 45 + kl_loss(z_p, logs_q, m_p, logs_p, z_mask) + feature_loss(fmap_r, fmap_g) + generator_loss(y_d_hat_g)[0]
        optim_g.zero_grad()
        loss.backward()
        optim_g.step()

    net_g.train(), net_d.train()
    for _ in range(2):
        step()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - started)
    return {"seconds": [round(s, 3) for s in seconds], "median_s": round(statistics.median(seconds), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rvc-root", required=True, type=Path)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "upstream_train_step.json")
    args = parser.parse_args()

    import torch

    from rvc_compile.compress.discriminator import MultiPeriodDiscriminator, save_discriminator
    from rvc_compile.components.synthesizer.checkpoint import load_checkpoint
    from rvc_compile.components.synthesizer.synthetic import make_checkpoint
    from rvc_compile.compress.distill import DistillConfig, distill
    from rvc_compile.compress.prune import prune_model
    from rvc_compile.machine import cpu_info
    from rvc_compile.precision.calibration import load_calibration
    from rvc_compile.recipe.schema import Calibration

    upstream = upstream_step_seconds(args.rvc_root, args.repeats, args.threads)
    ours = {}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        checkpoint = load_checkpoint(make_checkpoint(work / "voice.pth", seed=7))
        cases = load_calibration(Calibration(source="generated", f0_source="synthetic", count=4, seconds=4.0), checkpoint.spec).cases
        pruned = prune_model(checkpoint.spec, checkpoint.state_dict, ratios={"decoder": 0.5}, cases=cases, round_to=8, measure=False)
        torch.manual_seed(0)
        d_path = save_discriminator(MultiPeriodDiscriminator("v2"), work / "D.pth")
        variants = {
            "today's loop": dict(teacher_cache=False, reuse_prefix=False, fused_optimizer=False),
            "all speed-ups, teacher cache warm": {},
            "all speed-ups, with the discriminator": dict(discriminator=d_path),
        }
        for name, switches in variants.items():
            config = DistillConfig(steps=args.repeats + 2, segment_frames=32, threads=args.threads, device="cpu", precision="fp32", **switches)
            if not switches:  # fill the cache first, untimed
                distill(checkpoint.spec, checkpoint.state_dict, pruned.spec, pruned.state_dict, cases, config, work / "fill", log=lambda _: None, cache_dir=work / "cache")
            result = distill(checkpoint.spec, checkpoint.state_dict, pruned.spec, pruned.state_dict, cases, config, work / name.replace(" ", "_"),
                             log=lambda _: None, cache_dir=work / "cache")
            ours[name] = {"ms_per_step": result.record["speed"]["ms_per_step"], "s_per_step": round(1 / result.record["speed"]["steps_per_s"], 3)}
    results = {"machine": {**cpu_info(), "threads": args.threads}, "upstream_gan_step": upstream, "our_distillation_step": ours}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
