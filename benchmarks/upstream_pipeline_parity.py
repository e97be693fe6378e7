"""Parity of our conversion pipeline with upstream RVC's ``Pipeline.pipeline``, step by step (docs/PARITY.md).

    python benchmarks/upstream_pipeline_parity.py --rvc-root PATH/TO/Retrieval-based-Voice-Conversion-WebUI

``--rvc-root``: a checkout of RVC with ``infer/modules/vc/pipeline.py``, ``infer/lib/rmvpe.py`` and
``infer/lib/infer_pack/models.py`` (commit c08426a, whose pipeline our ``convert.pipeline`` follows; later
commits moved the files and interpolate unvoiced f0). Needs faiss, librosa, scipy, pyworld, parselmouth
installed (upstream imports them; torchcrepe, used only by its "crepe" method, is stubbed if missing).

Both sides run on the SAME weights, all random and written by our code:
- the voice: ``make_checkpoint`` (v2 40k, pitch, small by default), loaded into upstream's
  ``SynthesizerTrnMs{768,256}NSFsid`` with ``strict=True`` (``enc_q`` deleted) and by our loader;
- the content encoder: a ``write_encoder_folder`` folder (``base`` for v2: 768-dim, ``tiny-v1`` for v1);
  upstream gets transformers' ``HubertModel`` (all 12 layers) loaded from the folder's tensors behind a
  small adapter with fairseq's ``extract_features(source, padding_mask, output_layer)`` and
  ``final_proj``; ours is our own cut encoder (``convert.eager``). The encoder itself is checked against
  transformers by tests/test_encoder.py; here it is the pipeline around it that is compared;
- RMVPE: ``write_rmvpe`` (official width), loaded by upstream's own ``infer/lib/rmvpe.py`` ``RMVPE`` (found
  via ``$rmvpe_root/rmvpe.pt``, as upstream's ``get_f0`` does) and by ours;
- the retrieval index: RVC's recipe (``IVF<n>,Flat``, nprobe 1, trained then added) over the content
  features of two other speech clips, given as a file to both.

Zero noise: upstream's ``torch.randn_like`` is patched to zeros during its run (the prior's noise and the
sine source's noise; with one harmonic its ``torch.rand`` initial phase is zeroed by upstream itself);
ours runs with ``noise="zero"``.

Hooks record, on both sides: the f0 track after the pitch shift (the whole padded input), the content
features of every segment, the features the synthesizer gets (after retrieval blend, 2x repeat and
protect), every segment's trimmed audio, and the final output. Upstream returns int16; ours (float32) is
converted the way upstream converts its float output (``(audio * float32 scale).astype(int16)``: after
our peak limit, that scale is 32768).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATA = ROOT / "calibration" / "data"
SPEECH = "arctic_a0001.wav"  # the converted clip
INDEX_CLIPS = ("LJ001-0006.wav", "libritts_6294_86679_000035_000004.wav")  # the index's vectors (other speakers)

# name, description, settings, seconds of input (None: the clip once; else the clip tiled to at least this)
CASES = [
    ("a", "no index, protect 0.5, rms_mix 1", dict(pitch_shift=0, index_rate=0.0, protect=0.5, rms_mix_rate=1.0), None),
    ("b", "index 0.75, protect 0.33, rms_mix 0.25, +3", dict(pitch_shift=3, index_rate=0.75, protect=0.33, rms_mix_rate=0.25), None),
    ("c", "clip tiled to 47 s (2 segments), index 0.5, protect 0.2, rms_mix 0.5, -2", dict(pitch_shift=-2, index_rate=0.5, protect=0.2, rms_mix_rate=0.5), 45.0),
]


# -- upstream side -------------------------------------------------------------------------------------

class FairseqHubertAdapter:
    """fairseq's HuBERT inference API (what RVC's ``vc`` calls) over transformers' ``HubertModel`` loaded
    from a ``write_encoder_folder`` folder: ``extract_features(source, padding_mask, output_layer)`` ->
    (hidden_states[output_layer], padding_mask), and ``final_proj``. Records what it returns."""

    def __init__(self, folder: Path):
        import json

        import torch
        from safetensors.torch import load_file
        from transformers import HubertConfig, HubertModel

        config = json.loads((folder / "config.json").read_text())
        config.pop("architectures", None)
        self.hubert = HubertModel(HubertConfig(**config)).eval()
        state = load_file(str(folder / "model.safetensors"))
        proj = {name[len("final_proj."):]: state.pop(name) for name in list(state) if name.startswith("final_proj.")}
        state.pop("masked_spec_embed", None)
        missing, unexpected = self.hubert.load_state_dict(state, strict=False)
        if unexpected or [name for name in missing if name != "masked_spec_embed"]:
            raise SystemExit(f"encoder folder does not match HubertModel: missing {missing}, unexpected {unexpected}")
        self.proj = torch.nn.Linear(proj["weight"].shape[1], proj["weight"].shape[0]).eval()
        self.proj.load_state_dict(proj)
        self.records: list[np.ndarray] = []
        self.version = "v2"

    def extract_features(self, source, padding_mask=None, output_layer=None):
        if padding_mask is not None and bool(padding_mask.any()):
            raise SystemExit("adapter: RVC passes an all-False padding mask; got a real one")
        out = self.hubert(source, output_hidden_states=True)
        features = out.hidden_states[output_layer]
        if self.version == "v2":
            self.records.append(features[0].detach().numpy().copy())
        return features, padding_mask

    def final_proj(self, features):
        projected = self.proj(features)
        self.records.append(projected[0].detach().numpy().copy())
        return projected


def import_upstream(rvc_root: Path):
    """RVC's pipeline module and synthesizer classes from the checkout (stubbing torchcrepe if missing)."""
    sys.path.insert(0, str(rvc_root))
    try:
        import torchcrepe  # noqa: F401
    except ImportError:
        sys.modules["torchcrepe"] = types.ModuleType("torchcrepe")  # only its "crepe" f0 method uses it
    from infer.lib.infer_pack import models
    from infer.modules.vc import pipeline

    return pipeline, models


def run_upstream(pipeline_mod, models, checkpoint: Path, encoder: FairseqHubertAdapter, audio: np.ndarray,
                 settings: dict, index: Path | None) -> dict:
    import torch

    cpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    version, if_f0 = cpt.get("version", "v1"), cpt.get("f0", 1)
    tgt_sr = cpt["config"][-1]
    cpt["config"][-3] = cpt["weight"]["emb_g.weight"].shape[0]  # n_spk, as upstream's get_vc
    cls = {("v1", 1): models.SynthesizerTrnMs256NSFsid, ("v2", 1): models.SynthesizerTrnMs768NSFsid}[(version, if_f0)]
    net_g = cls(*cpt["config"], is_half=False)
    del net_g.enc_q
    net_g.load_state_dict({k: v.float() for k, v in cpt["weight"].items()}, strict=True)
    net_g.eval().float()
    encoder.version = version
    encoder.records = []

    config = types.SimpleNamespace(x_pad=1, x_query=6, x_center=38, x_max=41, is_half=False, device="cpu")
    pipe = pipeline_mod.Pipeline(tgt_sr, config)
    rec: dict = {"features": encoder.records, "synth_features": [], "synth_f0": [], "segments": []}

    get_f0 = pipe.get_f0

    def recording_get_f0(*args, **kwargs):
        pitch, pitchf = get_f0(*args, **kwargs)
        rec["f0_full"] = np.asarray(pitchf).copy()
        rec["f0_input"] = np.asarray(args[1]).copy()  # the padded, high-passed input
        return pitch, pitchf

    pipe.get_f0 = recording_get_f0
    infer = net_g.infer

    def recording_infer(feats, p_len, pitch, pitchf, sid, *rest, **kw):
        rec["synth_features"].append(feats[0].detach().numpy().copy())
        rec["synth_f0"].append(pitchf[0].detach().numpy().copy())
        return infer(feats, p_len, pitch, pitchf, sid, *rest, **kw)

    net_g.infer = recording_infer
    vc = pipe.vc

    def recording_vc(*args, **kwargs):
        out = vc(*args, **kwargs)
        rec["segments"].append(out[pipe.t_pad_tgt: -pipe.t_pad_tgt].copy())
        return out

    pipe.vc = recording_vc
    original_randn_like = torch.randn_like
    torch.randn_like = lambda x, *a, **k: torch.zeros_like(x)  # zero noise
    try:
        out = pipe.pipeline(
            encoder, net_g, 0, audio.copy(), "input.wav", [0, 0, 0], settings["pitch_shift"], "rmvpe",
            str(index) if index is not None else "", settings["index_rate"], if_f0, 3, tgt_sr, 0,
            settings["rms_mix_rate"], version, settings["protect"], f0_file=None,
        )
    finally:
        torch.randn_like = original_randn_like
    rec["audio_int16"] = out
    rec["rmvpe"] = pipe.model_rmvpe
    p_len = (audio.shape[0] + 2 * pipe.t_pad) // pipe.window
    rec["f0"] = rec.pop("f0_full")[:p_len].astype(np.float32)
    return rec


# -- our side ------------------------------------------------------------------------------------------

def run_ours(engines, audio: np.ndarray, settings: dict) -> dict:
    from rvc_compile.convert.pipeline import VoicePipeline
    from rvc_compile.runtime.pipeline import ConvertOptions, convert_audio

    rec: dict = {"features": [], "synth_features": [], "synth_f0": [], "segments": []}
    encode = engines.encoder.encode
    engines.encoder.encode = lambda a: rec["features"].append(np.asarray(encode(a)).copy()) or rec["features"][-1]
    voice = engines.synthesizer
    infer = type(voice).infer

    def recording_infer(features, f0=None, *args, **kwargs):
        rec["synth_features"].append(np.asarray(features).copy())
        rec["synth_f0"].append(np.asarray(f0).copy())
        return infer(voice, features, f0, *args, **kwargs)

    voice.infer = recording_infer
    pitch, segment = VoicePipeline._pitch, VoicePipeline._segment

    def recording_pitch(self, *args):
        rec["f0"] = pitch(self, *args)
        return rec["f0"]

    def recording_segment(self, *args):
        rec["segments"].append(segment(self, *args))
        return rec["segments"][-1]

    VoicePipeline._pitch, VoicePipeline._segment = recording_pitch, recording_segment
    try:
        options = ConvertOptions(f0_method="rmvpe", filter_radius=3, **settings)
        out = convert_audio(engines, audio, 16000, options, noise="zero")
    finally:
        VoicePipeline._pitch, VoicePipeline._segment = pitch, segment
        engines.encoder.encode = encode
        del voice.infer
    rec["audio"] = out
    rec["audio_int16"] = (np.asarray(out, dtype=np.float32) * np.float32(32768)).astype(np.int16)
    return rec


# -- comparison ----------------------------------------------------------------------------------------

def rel_l2(ours, theirs) -> float:
    ours = np.concatenate([np.asarray(x, dtype=np.float64).reshape(-1) for x in ours])
    theirs = np.concatenate([np.asarray(x, dtype=np.float64).reshape(-1) for x in theirs])
    if ours.shape != theirs.shape:
        raise SystemExit(f"shape mismatch: ours {ours.shape}, upstream {theirs.shape}")
    return float(np.linalg.norm(ours - theirs) / max(np.linalg.norm(theirs), 1e-30))


def split_differences(theirs: dict, engines, rmvpe_path: Path, settings: dict) -> dict:
    """Where the differences come from: (1) RMVPE's log-mel (ours numpy float64 -> float32, upstream's torch
    float32 STFT): the relative L2 of the two mels, and the f0 our network + decoding give from UPSTREAM's
    mel against upstream's f0; (2) our synthesizer alone on upstream's synthesizer inputs (features and
    f0 as upstream's ``vc`` fed them), against upstream's trimmed segment audio."""
    import torch

    from rvc_compile.components.pitch.host import decode, log_mel
    from rvc_compile.convert.eager import _loaded

    x = theirs["f0_input"]
    with torch.no_grad():
        mel_theirs = theirs["rmvpe"].mel_extractor(torch.from_numpy(x).float().unsqueeze(0), center=True)[0].numpy()
    mel_ours = log_mel(x.astype(np.float32))
    component, loaded = _loaded("rmvpe", rmvpe_path)
    model = component.build_model(loaded.spec, loaded.weights)
    with torch.inference_mode():
        salience = model(torch.from_numpy(np.ascontiguousarray(mel_theirs[None], dtype=np.float32))).numpy()
    f0 = decode(salience.reshape(mel_theirs.shape[-1], -1)).astype(np.float64)
    f0 *= 2 ** (settings["pitch_shift"] / 12)
    f0 = f0[: theirs["f0"].shape[0]].astype(np.float32)
    voice = engines.synthesizer
    trim = int(voice.sample_rate)  # t_pad_tgt: x_pad (1 s) at the voice's rate
    alone = [voice.infer(f, p, noise="zero")[trim:-trim] for f, p in zip(theirs["synth_features"], theirs["synth_f0"])]
    return {
        "mel_rel": rel_l2([mel_ours], [mel_theirs]),
        "f0_same_mel_max_hz": float(np.abs(f0.astype(np.float64) - theirs["f0"]).max()),
        "synth_alone_rel": rel_l2(alone, theirs["segments"]),
    }


def compare(ours: dict, theirs: dict) -> dict:
    lengths = [len(x) for x in ours["segments"]], [len(x) for x in theirs["segments"]]
    if lengths[0] != lengths[1]:  # a different cut point changes the segments' lengths
        raise SystemExit(f"segment lengths (the cut points): ours {lengths[0]}, upstream {lengths[1]}")
    f0_o, f0_t = ours["f0"], theirs["f0"]
    if f0_o.shape != f0_t.shape:
        raise SystemExit(f"f0 frames: ours {f0_o.shape}, upstream {f0_t.shape}")
    a, b = ours["audio_int16"].astype(np.int64), theirs["audio_int16"].astype(np.int64)
    if a.shape != b.shape:
        raise SystemExit(f"output samples: ours {a.shape}, upstream {b.shape}")
    return {
        "segments": len(ours["segments"]),
        "segment_lengths": lengths[1],
        "unvoiced": int((f0_t <= 0).sum()),
        "frames": int(f0_t.shape[0]),
        "f0_max_hz": float(np.abs(f0_o.astype(np.float64) - f0_t).max()),
        "voicing_mismatch": int(((f0_o > 0) != (f0_t > 0)).sum()),
        "content_rel": rel_l2(ours["features"], theirs["features"]),
        "synth_features_rel": rel_l2(ours["synth_features"], theirs["synth_features"]),
        "synth_f0_max_hz": float(max(np.abs(x.astype(np.float64) - y).max() for x, y in zip(ours["synth_f0"], theirs["synth_f0"]))),
        "segments_rel": rel_l2(ours["segments"], theirs["segments"]),
        "audio_rel": rel_l2([a], [b]),
        "lsb_max": int(np.abs(a - b).max()),
        "lsb_mean": float(np.abs(a - b).mean()),
        "samples": int(b.shape[0]),
    }


def write_index(path: Path, vectors: np.ndarray) -> Path:
    """RVC's train_index recipe: IVF with min(16 sqrt(N), N // 39) lists, Flat, nprobe 1, trained then added."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n_ivf = max(1, min(int(16 * np.sqrt(vectors.shape[0])), vectors.shape[0] // 39))
    index = faiss.index_factory(vectors.shape[1], f"IVF{n_ivf},Flat")
    faiss.extract_index_ivf(index).nprobe = 1
    index.train(vectors)
    index.add(vectors)
    faiss.write_index(index, str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rvc-root", required=True, type=Path, help="a checkout of RVC (holds infer/modules/vc/pipeline.py)")
    parser.add_argument("--version", choices=("v2", "v1"), default="v2", help="v2: 768-dim voice and hubert-base-size encoder; v1: 256-dim voice, tiny-v1 encoder")
    parser.add_argument("--cases", default="abc", help="which cases to run (letters)")
    parser.add_argument("--upstream-commit", default="", help="the checkout's commit, for the printout when --rvc-root is an exported tree (git archive), not a git checkout")
    parser.add_argument("--rmvpe-width", type=int, default=None, help="RMVPE width (default: the official 16; upstream's class only loads 16)")
    args = parser.parse_args()

    import soundfile as sf
    import torch

    from rvc_compile.components.encoder.synthetic import write_encoder_folder
    from rvc_compile.components.pitch.synthetic import write_rmvpe
    from rvc_compile.components.synthesizer.synthetic import make_checkpoint
    from rvc_compile.convert.audio import prescale, resample
    from rvc_compile.convert.eager import eager_engines

    pipeline_mod, models = import_upstream(args.rvc_root.resolve())
    try:
        commit = subprocess.run(["git", "-C", str(args.rvc_root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    commit = commit or args.upstream_commit
    print(f"upstream: {args.rvc_root} {commit or '(not a git checkout)'}; torch {torch.__version__}, {torch.get_num_threads()} threads")

    def speech(name: str) -> np.ndarray:
        data, rate = sf.read(str(DATA / name), dtype="float32", always_2d=True)
        return resample(data.mean(axis=1), rate, 16000)

    results = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        started = time.perf_counter()
        checkpoint = make_checkpoint(scratch / "voice.pth", version=args.version, sample_rate="40k", f0=True, size="small", seed=3)
        encoder_folder = write_encoder_folder(scratch / "encoder", "base" if args.version == "v2" else "tiny-v1", seed=1, weight_norm="parametrizations")
        write_rmvpe(scratch / "rmvpe.pt", seed=2, width=args.rmvpe_width)
        os.environ["rmvpe_root"] = str(scratch)
        plain = eager_engines(checkpoint, encoder_folder, rmvpe=scratch / "rmvpe.pt")
        vectors = np.concatenate([plain.encoder(speech(name)) for name in INDEX_CLIPS])
        index_path = write_index(scratch / "added_IVF_Flat_voice.index", vectors)
        indexed = eager_engines(checkpoint, encoder_folder, rmvpe=scratch / "rmvpe.pt", index=index_path)
        adapter = FairseqHubertAdapter(encoder_folder)
        print(f"setup: {time.perf_counter() - started:.1f} s; index: {vectors.shape[0]} vectors of {vectors.shape[1]}", flush=True)

        clip = speech(SPEECH)
        for name, description, settings, seconds in CASES:
            if name not in args.cases:
                continue
            audio = clip if seconds is None else np.tile(clip, int(np.ceil(seconds * 16000 / clip.shape[0])))
            audio = prescale(audio)  # vc_single's input scaling (a no-op below 0.95 peak)
            use_index = settings["index_rate"] != 0
            started = time.perf_counter()
            theirs = run_upstream(pipeline_mod, models, checkpoint, adapter, audio, settings, index_path if use_index else None)
            upstream_s = time.perf_counter() - started
            started = time.perf_counter()
            ours = run_ours(indexed if use_index else plain, audio, settings)
            ours_s = time.perf_counter() - started
            result = compare(ours, theirs)
            result.update(split_differences(theirs, indexed, scratch / "rmvpe.pt", settings))
            result.update(case=name, description=description, seconds=audio.shape[0] / 16000, upstream_s=upstream_s, ours_s=ours_s)
            results.append(result)
            print(f"case {name} ({description}): {result['seconds']:.1f} s input, {result['segments']} segment(s) of {result['segment_lengths']} samples (same cuts on both sides), "
                  f"{result['unvoiced']}/{result['frames']} f0 frames unvoiced, "
                  f"upstream {upstream_s:.0f} s, ours {ours_s:.0f} s", flush=True)

    print()
    header = ("case", "f0 max |Δ| Hz", "voicing diff", "content rel L2", "synth features rel L2", "segments rel L2",
              "audio rel L2", "max int16 LSB", "mean LSB", "mel rel L2", "f0 max |Δ| Hz, same mel", "synth alone rel L2")
    print(" | ".join(header))
    for r in results:
        print(" | ".join([
            f"({r['case']}) {r['description']}", f"{r['f0_max_hz']:.2e}", f"{r['voicing_mismatch']}/{r['frames']}",
            f"{r['content_rel']:.2e}", f"{r['synth_features_rel']:.2e}", f"{r['segments_rel']:.2e}",
            f"{r['audio_rel']:.2e}", f"{r['lsb_max']}", f"{r['lsb_mean']:.3f}",
            f"{r['mel_rel']:.2e}", f"{r['f0_same_mel_max_hz']:.2e}", f"{r['synth_alone_rel']:.2e}",
        ]))
    worst = max(r["audio_rel"] for r in results)
    print(f"worst audio relative L2: {worst:.2e} (target < 1e-4)")
    sys.exit(0 if worst < 1e-4 else 1)


if __name__ == "__main__":
    main()
