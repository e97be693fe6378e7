"""How the two apps feed an RVC ONNX file, written from their source code (docs/EXPORT.md has the
citations): numpy + onnxruntime only, no rvc-compile code, so a test or benchmark that passes through
here says the file runs in the app.

- VC Client (w-okada/voice-changer, ``server/voice_changer/RVC/``): reads ``metadata_props["metadata"]``
  (``RVCModelSlotGenerator._setInfoByONNX``), feeds by name ``feats`` (float16 unless the first input is
  ``tensor(float)``), ``p_len``, ``pitch``, ``pitchf`` (always float32), ``sid`` (no-f0 models: ``feats``,
  ``p_len``, ``sid``), asks for ``["audio"]`` and for version 2.1 takes ``audio1[0]`` as 1-D audio clipped
  in the graph (``OnnxRVCInferencer.infer``).
- RVC WebUI ``OnnxRVC`` (``infer/lib/infer_pack/onnx_inference.py``, branch 20240604): feeds six inputs by
  position (``get_inputs()[i].name``): content features, their length, coarse pitch, pitchf, speaker,
  ``rnd`` [1, 192, T] standard normal; reads ``run(None, ...)[0]`` ([1, 1, N], not clipped).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

F0_MIN, F0_MAX = 50.0, 1100.0
MEL_MIN, MEL_MAX = 1127.0 * np.log(1.0 + F0_MIN / 700.0), 1127.0 * np.log(1.0 + F0_MAX / 700.0)
VC_REQUIRED = ("embChannels", "f0", "samplingRate", "version")  # a missing one sends VC Client down its legacy path


def coarse_pitch(pitchf: np.ndarray) -> np.ndarray:
    """Both apps' coarse pitch: mel scale, 50..1100 Hz onto 1..255, rounded (Pipeline.py, onnx_inference.py)."""
    mel = 1127.0 * np.log(1.0 + pitchf / 700.0)
    voiced = mel > 0
    mel[voiced] = (mel[voiced] - MEL_MIN) * 254.0 / (MEL_MAX - MEL_MIN) + 1.0
    mel[mel <= 1] = 1.0
    mel[mel > 255] = 255.0
    return np.rint(mel).astype(np.int64)


def _session(path: str) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def example(frames: int, channels: int, seed: int = 0, voiced_hz: float = 180.0) -> dict[str, np.ndarray]:
    """Content features at 100 frames/s and an f0 contour with an unvoiced gap, as the apps make them."""
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((1, frames // 2, channels)).astype(np.float32)
    feats = np.repeat(feats, 2, axis=1)[:, :frames]  # 50 -> 100 frames/s, as both apps do
    if feats.shape[1] < frames:
        feats = np.concatenate([feats, feats[:, -1:]], axis=1)
    pitchf = (voiced_hz * (1.0 + 0.05 * np.sin(np.arange(frames) / 7.0))).astype(np.float32)[None]
    pitchf[:, frames // 3 : frames // 3 + 6] = 0.0  # VC Client leaves unvoiced frames at 0 Hz
    return {"feats": feats, "pitchf": pitchf}


def vc_client_metadata(session: Any) -> dict[str, Any]:
    metadata = json.loads(session.get_modelmeta().custom_metadata_map["metadata"])
    missing = [key for key in VC_REQUIRED if key not in metadata]
    if missing:
        raise AssertionError(f"VC Client would take its legacy path: metadata lacks {missing}")
    return metadata


def vc_client_infer(session: Any, feats: np.ndarray, pitchf: np.ndarray | None, sid: int = 0) -> np.ndarray:
    """``OnnxRVCInferencer.infer`` / ``OnnxRVCInferencerNono.infer``, version 2.1."""
    half = session.get_inputs()[0].type != "tensor(float)"
    frames = feats.shape[1]
    feed = {"feats": feats.astype(np.float16 if half else np.float32), "p_len": np.array([frames], dtype=np.int64), "sid": np.array([sid], dtype=np.int64)}
    if pitchf is not None:
        feed.update(pitch=coarse_pitch(pitchf.astype(np.float64)), pitchf=pitchf.astype(np.float32))
    audio = session.run(["audio"], feed)
    return np.asarray(audio[0])  # version 2.1: 1-D, clipped in the graph


def rvc_onnx_infer(session: Any, phone: np.ndarray, pitchf: np.ndarray, sid: int = 0, seed: int = 0) -> np.ndarray:
    """``OnnxRVC.forward``: six inputs by position; ``rnd`` drawn as ``np.random.randn(1, 192, T)``."""
    frames = phone.shape[1]
    rnd = np.random.default_rng(seed).standard_normal((1, 192, frames)).astype(np.float32)
    values = [phone.astype(np.float32), np.array([frames], dtype=np.int64), coarse_pitch(pitchf.astype(np.float64)),
              pitchf.astype(np.float32), np.array([sid], dtype=np.int64), rnd]
    inputs = session.get_inputs()
    return session.run(None, {inputs[i].name: values[i] for i in range(6)})[0]


def run_vc_client(path: str, frames: int = 200) -> dict[str, Any]:
    """Load ``path`` as VC Client does and convert ``frames`` frames; a summary of the output."""
    session = _session(path)
    metadata = vc_client_metadata(session)
    data = example(frames, int(metadata["embChannels"]))
    audio = vc_client_infer(session, data["feats"], data["pitchf"] if metadata["f0"] else None)
    assert audio.ndim == 1 and np.isfinite(audio).all() and np.abs(audio).max() <= 1.0, (audio.shape, float(np.abs(audio).max()))
    return {"samples": int(audio.shape[0]), "peak": float(np.abs(audio).max()), "samples_per_frame": audio.shape[0] / frames,
            "sampling_rate": int(metadata["samplingRate"])}


def run_rvc_onnx(path: str, frames: int = 200) -> dict[str, Any]:
    """Load ``path`` as RVC's OnnxRVC does and convert ``frames`` frames; a summary of the output."""
    session = _session(path)
    channels = int(session.get_inputs()[0].shape[2])
    data = example(frames, channels)
    audio = rvc_onnx_infer(session, data["feats"], data["pitchf"])
    assert audio.ndim == 3 and audio.shape[:2] == (1, 1) and np.isfinite(audio).all(), audio.shape
    return {"samples": int(audio.shape[-1]), "peak": float(np.abs(audio).max()), "samples_per_frame": audio.shape[-1] / frames}
