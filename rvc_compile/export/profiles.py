"""The two clients' ONNX contracts, as data. numpy only.

Each was read from the client's own source code (docs/EXPORT.md cites file and line):

- ``vc-client``: the w-okada VC Client (``server/voice_changer/RVC/``). Inputs bound by name: ``feats``
  (float16 when the model's first input is not ``tensor(float)``), ``p_len``, ``pitch``, ``pitchf``
  (always float32), ``sid``; a voice without pitch takes ``feats, p_len, sid``. The graph draws its own
  noise. Output ``audio``: with metadata version "2.1", 1-D [T * hop] already clipped to [-1, 1]. The
  model's ``metadata_props["metadata"]`` JSON says what it is; a missing required key sends the model
  down VC Client's legacy path.
- ``rvc-onnx``: RVC WebUI's ``OnnxRVC`` (``infer/lib/infer_pack/onnx_inference.py``, branch 20240604).
  Six inputs bound by position: ``phone``, ``phone_lengths``, ``pitch``, ``pitchf``, ``ds``, ``rnd``
  [1, 192, T] (the prior's standard-normal noise); the first output is read as [1, 1, N], unclipped.
  Pitch voices only; no metadata is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ExportError

# Input roles: what each client input carries, whatever the client calls it.
FEATURES, LENGTH, PITCH, PITCHF, SPEAKER, PRIOR_NOISE = "features", "length", "pitch", "pitchf", "speaker", "prior_noise"
FRAMES = "frames"  # the symbolic time axis of every exported input
SAMPLES = "samples"
RVC_RND_CHANNELS = 192


@dataclass(frozen=True)
class ClientInput:
    name: str
    role: str
    dtype: str  # "float32", "int64", or "features": float16 for an fp16 artifact where the profile allows it
    shape: tuple[int | str, ...]  # "channels" (feature width), "inter" (prior channels), FRAMES


@dataclass(frozen=True)
class Profile:
    name: str
    client: str
    inputs: tuple[ClientInput, ...]  # in the client's order (OnnxRVC binds by position)
    no_f0_roles: tuple[str, ...] | None  # the inputs of a voice without pitch; None: such voices are refused
    flat_output: bool  # True: audio [T * hop]; False: [1, 1, T * hop]
    clip: bool  # the output clipped to [-1, 1] in the graph
    half_features: bool  # an fp16 artifact takes float16 features (the client reads the first input's type)
    metadata: bool  # write VC Client's metadata_props["metadata"]
    output: str = "audio"
    source: str = ""

    def inputs_for(self, has_f0: bool) -> tuple[ClientInput, ...]:
        """The client's inputs for a voice with or without pitch (ExportError where the client has none)."""
        if has_f0:
            return self.inputs
        if self.no_f0_roles is None:
            raise ExportError(f"profile {self.name}: {self.client} runs pitch (f0) voices only")
        return tuple(item for item in self.inputs if item.role in self.no_f0_roles)

    @property
    def prior_noise_input(self) -> bool:
        """The client feeds the prior's noise (``rnd``); otherwise the graph draws it."""
        return any(item.role == PRIOR_NOISE for item in self.inputs)

    def features_dtype(self, precision: str) -> str:
        return "float16" if self.half_features and precision == "fp16" else "float32"

    def input_types(self, *, has_f0: bool, feature_dim: int, inter_channels: int, precision: str) -> list[tuple[str, str, tuple[int | str, ...]]]:
        """(name, numpy dtype, shape) of each client input, in order, for one voice."""
        sizes = {"channels": feature_dim, "inter": inter_channels}
        out = []
        for item in self.inputs_for(has_f0):
            dtype = self.features_dtype(precision) if item.dtype == "features" else item.dtype
            out.append((item.name, dtype, tuple(sizes.get(dim, dim) if isinstance(dim, str) else dim for dim in item.shape)))
        return out


VC_CLIENT = Profile(
    name="vc-client",
    client="w-okada VC Client",
    inputs=(
        ClientInput("feats", FEATURES, "features", (1, FRAMES, "channels")),
        ClientInput("p_len", LENGTH, "int64", (1,)),
        ClientInput("pitch", PITCH, "int64", (1, FRAMES)),
        ClientInput("pitchf", PITCHF, "float32", (1, FRAMES)),
        ClientInput("sid", SPEAKER, "int64", (1,)),
    ),
    no_f0_roles=(FEATURES, LENGTH, SPEAKER),
    flat_output=True,
    clip=True,
    half_features=True,
    metadata=True,
    source="w-okada/voice-changer server/voice_changer/RVC/ (RVCModelSlotGenerator.py, inferencer/OnnxRVCInferencer*.py, onnxExporter/export2onnx.py)",
)

RVC_ONNX = Profile(
    name="rvc-onnx",
    client="RVC WebUI OnnxRVC",
    inputs=(
        ClientInput("phone", FEATURES, "float32", (1, FRAMES, "channels")),
        ClientInput("phone_lengths", LENGTH, "int64", (1,)),
        ClientInput("pitch", PITCH, "int64", (1, FRAMES)),
        ClientInput("pitchf", PITCHF, "float32", (1, FRAMES)),
        ClientInput("ds", SPEAKER, "int64", (1,)),
        # OnnxRVC draws np.random.randn(1, 192, T) whatever the voice (192: inter_channels of every shipped
        # config); a voice with a narrower prior reads the first channels (export.front).
        ClientInput("rnd", PRIOR_NOISE, "float32", (1, RVC_RND_CHANNELS, FRAMES)),
    ),
    no_f0_roles=None,
    flat_output=False,
    clip=False,
    half_features=False,
    metadata=False,
    source="RVC-Project/Retrieval-based-Voice-Conversion-WebUI branch 20240604: infer/lib/infer_pack/onnx_inference.py, infer/modules/onnx/export.py",
)

PROFILES: dict[str, Profile] = {profile.name: profile for profile in (VC_CLIENT, RVC_ONNX)}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ExportError(f"unknown export profile {name!r} (known: {', '.join(PROFILES)})")
    return PROFILES[name]


# -- VC Client's metadata ---------------------------------------------------------------------------

# RVCModelSlotGenerator._setInfoByONNX: a missing one of these sends the model down the legacy path
# (embChannels 256, 48 kHz, f0 on, version v2: a v2 voice then fails).
VC_CLIENT_REQUIRED_KEYS = ("embChannels", "f0", "samplingRate", "version")
# "2.1" is what VC Client's own exporter writes; it selects the 1-D, clipped-in-graph output
# (v2.1 for 768-wide features, v1.1 for 256-wide) in both the pitch and the no-pitch inferencer.
VC_CLIENT_VERSION = "2.1"


def vc_client_metadata(*, feature_dim: int, sample_rate: int, has_f0: bool) -> dict[str, Any]:
    """The JSON VC Client reads from ``metadata_props["metadata"]``, with the keys its exporter writes."""
    return {
        "application": "rvc-compile",
        "version": VC_CLIENT_VERSION,
        "modelType": "onnxRVC" if has_f0 else "onnxRVCNono",
        "samplingRate": int(sample_rate),
        "f0": bool(has_f0),
        "embChannels": int(feature_dim),
        "embedder": "hubert_base",
        # RVC's own feature extraction: layer 9 through final_proj for v1 (256), layer 12 for v2 (768).
        "embOutputLayer": 9 if feature_dim == 256 else 12,
        "useFinalProj": feature_dim == 256,
    }


# -- the clients' coarse pitch ----------------------------------------------------------------------

F0_MIN_HZ, F0_MAX_HZ = 50.0, 1100.0
_MEL_MIN = 1127.0 * np.log(1.0 + F0_MIN_HZ / 700.0)
_MEL_MAX = 1127.0 * np.log(1.0 + F0_MAX_HZ / 700.0)


def coarse_pitch(pitchf: np.ndarray) -> np.ndarray:
    """Both clients' coarse pitch from f0 in Hz: mel scale, 50..1100 Hz onto 1..255, rounded, int64
    (VC Client's pitch extractors, OnnxRVC.inference). The exported graph does not read it: it derives
    the same value from ``pitchf`` (the synthesizer's encoder), so the two cannot disagree."""
    mel = 1127.0 * np.log(1.0 + np.asarray(pitchf, dtype=np.float64) / 700.0)
    voiced = mel > 0
    mel[voiced] = (mel[voiced] - _MEL_MIN) * 254.0 / (_MEL_MAX - _MEL_MIN) + 1.0
    mel[mel <= 1] = 1.0
    mel[mel > 255] = 255.0
    return np.rint(mel).astype(np.int64)


def client_feed(profile: Profile, *, features: np.ndarray, f0: np.ndarray | None, speaker: int, prior_noise: np.ndarray | None,
                has_f0: bool, precision: str) -> dict[str, np.ndarray]:
    """The client's inputs from user-level arrays (with batch dimensions), as the client makes them:
    features cast to the model's first-input type, the length, the coarse pitch from f0, the speaker,
    and (rvc-onnx) the prior noise as ``rnd``."""
    frames = features.shape[1]
    values: dict[str, np.ndarray] = {}
    for item in profile.inputs_for(has_f0):
        if item.role == FEATURES:
            values[item.name] = np.ascontiguousarray(features, dtype=profile.features_dtype(precision))
        elif item.role == LENGTH:
            values[item.name] = np.array([frames], dtype=np.int64)
        elif item.role == PITCH:
            values[item.name] = coarse_pitch(f0)
        elif item.role == PITCHF:
            values[item.name] = np.ascontiguousarray(f0, dtype=np.float32)
        elif item.role == SPEAKER:
            values[item.name] = np.array([speaker], dtype=np.int64)
        elif item.role == PRIOR_NOISE:
            values[item.name] = prior_noise_input(item, prior_noise)
    return values


def prior_channels(item: ClientInput) -> int:
    """The channel count of a client's prior-noise input (``rnd``: 192)."""
    return int(item.shape[1])


def prior_noise_input(item: ClientInput, prior_noise: np.ndarray) -> np.ndarray:
    """``prior_noise`` [1, inter, T] as the client's input: its channels first, zeros after (the graph
    reads only the voice's ``inter`` channels)."""
    channels = prior_channels(item)
    prior_noise = np.asarray(prior_noise, dtype=np.float32)
    if prior_noise.shape[1] == channels:
        return np.ascontiguousarray(prior_noise)
    padded = np.zeros((prior_noise.shape[0], channels, prior_noise.shape[2]), dtype=np.float32)
    padded[:, : prior_noise.shape[1]] = prior_noise
    return padded
