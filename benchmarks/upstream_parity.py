"""Parity of our synthesizer with the upstream RVC implementation, on the same checkpoints (docs/PARITY.md).

    python benchmarks/upstream_parity.py --rvc-root PATH/TO/Retrieval-based-Voice-Conversion-WebUI

Needs a checkout of RVC (its ``infer/module/{models,attentions,modules,commons,transforms}.py``; scipy
installed). For every version/rate/pitch combination it writes an official-format checkpoint with random
weights, loads it into upstream's ``SynthesizerTrnMs{256,768}NSFsid[_nono]`` (weight norm as stored) and
through our loader, runs both with zero noise (upstream's ``randn_like`` patched to zeros; its sine
source draws no other randomness with one harmonic) on real-feature inputs at several lengths, with the
coarse pitch computed as RVC's pipeline does, and prints the relative L2 error of our output.

Real-time blocks: where the checkout's ``infer`` takes ``skip_head``/``return_length`` (RVC's real-time
path, ``rtrvc.py``), every small model is also run at 333 frames with 250 frames skipped, against our
model with ``skip_frames=250`` (what a ``stream:`` recipe section builds).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COMBINATIONS = [
    ("v2", "40k", True, "small"), ("v2", "48k", True, "small"), ("v2", "32k", True, "small"), ("v1", "32k", True, "small"),
    ("v1", "40k", True, "small"), ("v1", "48k", True, "small"), ("v2", "40k", False, "small"), ("v1", "48k", False, "small"),
    ("v2", "40k", True, "full"),
]
LENGTHS = (7, 64, 333, 1500)
BLOCK = (333, 250)  # frames in, frames skipped: a real-time block (renders the last 83 frames)


def coarse_pitch_like_rvc(f0: np.ndarray) -> np.ndarray:
    """RVC's pipeline (infer/vc/pipeline.py, get_f0): mel scale, 50-1100 Hz onto 1..255, np.rint."""
    f0_mel_min, f0_mel_max = 1127 * np.log(1 + 50 / 700), 1127 * np.log(1 + 1100 / 700)
    f0_mel = 1127 * np.log(1 + f0 / 700)
    f0_mel[f0_mel > 0] = (f0_mel[f0_mel > 0] - f0_mel_min) * 254 / (f0_mel_max - f0_mel_min) + 1
    f0_mel[f0_mel <= 1] = 1
    f0_mel[f0_mel > 255] = 255
    return np.rint(f0_mel).astype(np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rvc-root", required=True, type=Path, help="a checkout of RVC (holds infer/module/models.py)")
    args = parser.parse_args()
    sys.path.insert(0, str(args.rvc_root))
    import torch
    from infer.module import models as upstream  # noqa: E402  (RVC's own code, from the given checkout)

    from rvc_compile.components.synthesizer.checkpoint import load_checkpoint
    from rvc_compile.components.synthesizer.examples import example_case
    from rvc_compile.components.synthesizer.model import build_model
    from rvc_compile.components.synthesizer.spec import with_skip
    from rvc_compile.components.synthesizer.synthetic import make_checkpoint

    classes = {
        ("v1", True): upstream.SynthesizerTrnMs256NSFsid, ("v2", True): upstream.SynthesizerTrnMs768NSFsid,
        ("v1", False): upstream.SynthesizerTrnMs256NSFsid_nono, ("v2", False): upstream.SynthesizerTrnMs768NSFsid_nono,
    }
    worst = 0.0
    print(f"{'model':<22}{'frames':>8}{'relative L2':>14}")
    with tempfile.TemporaryDirectory() as scratch:
        for version, rate, f0_flag, size in COMBINATIONS:
            path = Path(scratch) / f"{version}_{rate}_{int(f0_flag)}_{size}.pth"
            make_checkpoint(path, version=version, sample_rate=rate, f0=f0_flag, size=size, seed=3)
            raw = torch.load(path, weights_only=True)
            theirs = classes[(version, f0_flag)](*raw["config"], is_half=False)
            del theirs.enc_q
            theirs.load_state_dict({k: v.float() for k, v in raw["weight"].items()}, strict=True)
            theirs.eval()
            checkpoint = load_checkpoint(path)
            hop = checkpoint.spec.hop_length
            import inspect

            blocks = "skip_head" in inspect.signature(theirs.infer).parameters and size == "small"
            runs = [(frames, 0) for frames in (LENGTHS if size == "small" else LENGTHS[:3])] + ([BLOCK] if blocks else [])
            for frames, skip in runs:
                ours = build_model(with_skip(checkpoint.spec, skip, source="parity"), checkpoint.state_dict)
                extra = {"skip_head": torch.tensor(skip), "return_length": torch.tensor(frames - skip), "return_length2": torch.tensor(frames - skip)} if skip else {}
                case = example_case(checkpoint.spec.feature_dim, frames, seed=frames)
                features, f0 = torch.from_numpy(case["features"])[None], case["f0"]
                speaker = torch.tensor([1])
                original = torch.randn_like
                torch.randn_like = lambda x, *a, **k: torch.zeros_like(x)  # zero noise, as our "zero" mode
                try:
                    with torch.no_grad():
                        if f0_flag:
                            pitch = torch.from_numpy(coarse_pitch_like_rvc(f0.copy()))[None]
                            reference = theirs.infer(features, torch.tensor([frames]), pitch, torch.from_numpy(f0)[None], speaker, **extra)[0]
                        else:
                            reference = theirs.infer(features, torch.tensor([frames]), speaker, **extra)[0]
                finally:
                    torch.randn_like = original
                inputs = [features] + ([torch.from_numpy(f0)[None]] if f0_flag else [])
                inputs += [speaker, torch.zeros(1, checkpoint.spec.inter_channels, frames)]
                inputs += [torch.zeros(1, frames * hop)] if f0_flag else []
                with torch.no_grad():
                    mine = ours(*inputs).reshape(-1).numpy()
                reference = reference.reshape(-1).numpy()
                error = float(np.linalg.norm(mine - reference) / np.linalg.norm(reference))
                worst = max(worst, error)
                label = f"{version} {rate} f0={int(f0_flag)} {size}"
                print(f"{label:<22}{frames:>8}{error:>14.2e}" + (f"  (block: {skip} skipped, {frames - skip} rendered)" if skip else ""), flush=True)
    print(f"worst relative L2 error: {worst:.2e} (target < 1e-4)")
    sys.exit(0 if worst < 1e-4 else 1)


if __name__ == "__main__":
    main()
