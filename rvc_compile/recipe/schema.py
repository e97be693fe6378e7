"""The build recipe: one typed definition (dataclasses), its YAML loader, ``--set`` overrides, JSON Schema.

Every key a recipe may hold is a field below; the loader converts YAML to these types and names the key
path and line of anything unknown or mistyped. Relative paths in a recipe file are relative to that
file; paths given with ``--set`` are relative to the current directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import math
import os
import re
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

from ..artifact.manifest import NAME_RULE, VERSION_RULE, is_valid_name, is_valid_version
from ..errors import RecipeError, first_line
from ..hashing import is_sha256_hex

_NOISE = re.compile(r"^(zero|seed:\d+)$")
F0_RANGE_HZ = (50.0, 1100.0)  # the pitch range RVC extracts and maps to coarse pitch
# A recipe holds a few hundred values; YAML aliases can make a small file expand to billions
# ("billion laughs"), so reading stops far above any real recipe.
MAX_RECIPE_VALUES = 100_000
MAX_INT = 2**63 - 1  # recipe integers end up in C libraries (threads, frames, seeds)
MAX_THREADS = 4096
_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxlevel = 60, 60, 6, 6, 3


def _short(value: Any) -> str:
    """A bounded repr for error messages (a value may be a large or deeply nested structure)."""
    return _SHORT.repr(value)


# -- the schema ----------------------------------------------------------------------------------

@dataclass
class Source:
    """The weights to compile, and which network family (component adapter) reads them."""

    checkpoint: Path
    sha256: Optional[str] = None  # pin: the build refuses a checkpoint with another hash
    config: Optional[Path] = None  # RVC config json, for training checkpoints without one
    sample_rate: Optional[Literal["32k", "40k", "48k"]] = None  # narrows config inference of training checkpoints
    component: str = "synthesizer"  # the adapter (rvc_compile.components): synthesizer = an RVC voice checkpoint
    # content-encoder only: which voice version's features the graph returns (v2: layer 12, 768-dim;
    # v1: layer 9 through final_proj, 256-dim), as RVC's pipeline takes them; null: v2.
    features: Optional[Literal["v1", "v2"]] = None
    # Compile the voice's architecture once (from probe weights, cached) and bind this voice's weights
    # into the compiled graph, instead of capturing and passing its own graph (build.binding; docs/SCALE.md).
    bind_weights: bool = False


@dataclass
class Target:
    backend: Literal["onnxruntime", "openvino", "tensorrt", "aoti"] = "onnxruntime"
    device: Literal["cpu", "cuda"] = "cpu"
    # auto: the fastest precision the target CPU runs natively that passes the accuracy budget.
    precision: Literal["auto", "fp32", "fp16", "bf16", "int8"] = "fp32"
    # The CPU class the artifact is built and checked for (rvc_compile.machine): auto = this machine;
    # portable = avx2, right on every x86-64 CPU with AVX2; or an explicit class. It sets the int8 scheme
    # (7-bit weights without VNNI) and bf16's availability; lower classes are checked under emulation.
    cpu: Literal["auto", "portable", "avx2", "avx2-vnni", "avx512", "avx512-vnni", "avx512-bf16", "amx"] = "auto"
    threads: int = 2
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    # Where backends keep compiled blobs so a second load is fast (OpenVINO's model cache): the user's
    # build cache folder, a folder beside the artifact (<version>.compile-cache), or nowhere.
    compile_cache: Literal["user", "beside", "none"] = "user"


@dataclass
class Shapes:
    """Dynamic: any length from min to max frames; static: one chunk size. Frames are the component's own
    unit: synthesizer and pitch estimator 100 per second, the content encoder's input samples (16,000 per second)."""

    mode: Literal["dynamic", "static"] = "dynamic"
    min_frames: int = 10
    opt_frames: int = 200
    max_frames: int = 3000
    chunk_frames: Optional[int] = None  # static mode: the streaming chunk length
    check_frames: list[int] = field(default_factory=list)  # extra lengths for the multi-length checks
    # Dynamic mode: inputs longer than this run in overlapped windows of this many frames (cost linear in
    # the length, memory bounded by the window); null: min(max_frames, 1000).
    window_frames: Optional[int] = None
    window_context: int = 8  # frames each window sees on each side but does not keep
    window_crossfade: int = 4  # frames over which adjacent windows blend

    def window(self) -> Optional[tuple[int, int, int]]:
        """(frames, context, crossfade) of the runtime's windows, or None: a static graph, or a default
        window (max_frames) too short to keep half of itself after the context and crossfade."""
        if self.mode == "static":
            return None
        frames = self.window_frames if self.window_frames is not None else min(self.max_frames, 1000)
        if self.window_frames is None and not _window_fits(frames, self.window_context, self.window_crossfade):
            return None
        return frames, self.window_context, self.window_crossfade

    def check_lengths(self) -> list[int]:
        """The lengths every graph is checked at: at least three, including min and max (dynamic)."""
        if self.mode == "static":
            return [int(self.chunk_frames)]
        lengths = {self.min_frames, self.opt_frames, self.max_frames, *self.check_frames}
        if len(lengths) < 3:
            lengths.add((self.min_frames + self.max_frames) // 2 + 1)
        return sorted(n for n in lengths if self.min_frames <= n <= self.max_frames)


def _window_fits(frames: int, context: int, crossfade: int) -> bool:
    return context >= 0 and crossfade >= 0 and frames - 2 * context - crossfade >= max(1, frames // 2)


@dataclass
class Stream:
    """Real-time blocks (docs/STREAMING.md): a static-shape synthesizer for one block geometry. Its window
    is context + block + crossfade + search seconds; it renders the last block + crossfade + search of
    them, as RVC's real-time path. Every length is a whole number of 10 ms frames."""

    block: float = 0.25  # seconds of new audio per block
    context: float = 1.0  # seconds before the block the content encoder sees (RVC's GUI: 2.5; docs/STREAMING.md)
    crossfade: float = 0.05  # seconds over which consecutive blocks blend
    search: float = 0.01  # seconds of SOLA's offset search

    def frames(self) -> dict[str, int]:
        """block, context, crossfade, search and the whole window, in 10 ms frames."""
        out = {key: int(round(getattr(self, key) * 100)) for key in ("block", "context", "crossfade", "search")}
        out["window"] = sum(out.values())
        return out


@dataclass
class Capture:
    exporter: Literal["dynamo", "torchscript"] = "dynamo"
    opset: int = 18


@dataclass
class PassEntry:
    """One pass: ``name`` plus the parameters its registered dataclass declares (written beside it)."""

    name: str
    params: Any = None


@dataclass
class Calibration:
    """Calibration inputs for quantization (int8 targets). Unused, and not required, by fp32 targets.

    rvc-logs: an RVC experiment folder (logs/NAME/); npz: a folder of .npz files with features and f0;
    generated: synthesized inputs, for tests and demos only. See docs/CALIBRATION.md.
    """

    source: Literal["none", "generated", "npz", "rvc-logs"] = "none"
    path: Optional[Path] = None  # rvc-logs: the experiment folder; npz: the folder of .npz files
    count: int = 16  # at most this many cases, spread evenly over the sorted files (generated: exactly)
    seconds: float = 2.0  # each case at most this long, its middle kept (generated: exactly)
    # The generator's options (source: generated only).
    seed: int = 0
    f0_source: Literal["speech", "synthetic", "mixed"] = "mixed"  # mixed: even cases speech, odd synthetic
    f0_method: Literal["harvest", "dio", "pm"] = "harvest"  # pyworld harvest or dio (+ stonemask), or Praat (pm)
    speech: list[Path] = field(default_factory=list)  # 16-bit WAV clips to track pitch in; empty: the bundled clips
    f0_low_hz: float = 80.0  # synthetic contours: range of a case's base pitch
    f0_high_hz: float = 400.0
    pitch_shift_semitones: float = 0.0  # each case's f0 shifted by a random key within +-this
    features: Literal["real-statistics", "real-frames", "recipe"] = "real-statistics"
    feature_mean: float = 0.0  # features: recipe
    feature_std: float = 1.0  # features: recipe
    feature_correlation: Optional[float] = None  # frame-to-frame correlation at 50 frames/s; null: as measured in real features
    feature_perturbation: float = 0.5  # features: real-frames: noise added, in units of each dimension's std


# Which generator keys apply when (source: generated); any of them set otherwise is a mistake we name.
_CALIBRATION_KEY_USE = {
    "seed": lambda c: True,
    "f0_source": lambda c: True,
    "f0_method": lambda c: c.f0_source in ("speech", "mixed"),
    "speech": lambda c: c.f0_source in ("speech", "mixed"),
    "f0_low_hz": lambda c: c.f0_source in ("synthetic", "mixed"),
    "f0_high_hz": lambda c: c.f0_source in ("synthetic", "mixed"),
    "pitch_shift_semitones": lambda c: True,
    "features": lambda c: True,
    "feature_mean": lambda c: c.features == "recipe",
    "feature_std": lambda c: c.features == "recipe",
    "feature_correlation": lambda c: True,
    "feature_perturbation": lambda c: c.features == "real-frames",
}


@dataclass
class PrecisionPolicy:
    """How fp16/bf16/int8 targets treat layers (module paths such as dec.conv_post; a prefix covers a module).

    The NSF sine source is always computed on the host (the host_source pass), whatever this says.
    """

    keep_fp32: list[str] = field(default_factory=list)  # layers (or module prefixes) that stay fp32
    calibration_method: Literal["minmax", "percentile", "entropy"] = "minmax"  # int8 activation ranges
    per_channel: bool = True  # int8 weights: one scale per output channel
    accuracy_aware: bool = False  # int8: keep the most sensitive layers in fp32 until the budget holds
    max_fp32_layers: Optional[int] = None  # accuracy_aware: give up (fail the build) beyond this many


@dataclass
class Accuracy:
    """Accuracy budget against the fp32 PyTorch reference (null disables a check).

    Keys left out take the target precision's default budget (see docs/PRECISION.md).
    """

    min_snr_db: Optional[float] = 40.0
    max_log_mel_db: Optional[float] = 0.5
    max_mrstft: Optional[float] = 0.05
    max_f0_cents: Optional[float] = 10.0
    max_abs_error: Optional[float] = None
    min_cosine: Optional[float] = None  # content encoder: the lowest per-frame cosine similarity of the features
    max_relative_error: Optional[float] = None  # content encoder: ||candidate - reference|| / ||reference||
    max_voicing_error: Optional[float] = None  # pitch estimator: share of frames whose voiced/unvoiced call flips


@dataclass
class LatencyGoal:
    """A latency goal at one of ``latency.seconds``: a real-time factor, a speed-up over the fp32 eager
    reference timed in the same run, or both. Goals are reported; only ``enforce: true`` fails the build or
    ``verify`` on them (a slow or busy machine must not fail a correct artifact)."""

    seconds: float
    max_rtf: Optional[float] = None
    min_speedup_vs_eager: Optional[float] = None  # measured at build time (verify needs no torch)
    enforce: bool = False


@dataclass
class Latency:
    seconds: list[float] = field(default_factory=lambda: [0.5, 2.0, 10.0])
    repeat: int = 10
    warmup: int = 2
    goals: list[LatencyGoal] = field(default_factory=list)


@dataclass
class Golden:
    """The golden set stored in the artifact and re-checked by ``verify``."""

    seconds: list[float] = field(default_factory=lambda: [0.5, 2.0])
    noise: str = "seed:0"
    speaker: int = 0


@dataclass
class ExportEntry:
    """A drop-in ONNX file the build also writes into the artifact: exports/<profile>.onnx and its record
    exports/<profile>.onnx.json, verified like ``rvc-compile export`` (docs/EXPORT.md). ONNX Runtime,
    dynamic-shape artifacts only; rvc-onnx takes pitch voices only."""

    profile: Literal["vc-client", "rvc-onnx"]
    noise: Literal["graph", "inputs"] = "graph"  # inputs: the noise draws become inputs (for checking; the apps cannot feed them)


@dataclass
class Recipe:
    name: str
    version: str
    source: Source
    target: Target = field(default_factory=Target)
    shapes: Shapes = field(default_factory=Shapes)
    capture: Capture = field(default_factory=Capture)
    passes: list[PassEntry] = field(default_factory=list)
    stream: Optional[Stream] = None  # a real-time block artifact (synthesizer): sets the static shape
    precision_policy: PrecisionPolicy = field(default_factory=PrecisionPolicy)
    calibration: Calibration = field(default_factory=Calibration)
    accuracy: Accuracy = field(default_factory=Accuracy)
    latency: Latency = field(default_factory=Latency)
    golden: Golden = field(default_factory=Golden)
    export: list[ExportEntry] = field(default_factory=list)
    output_dir: Path = Path("out/artifacts")
    recipe_path: Path = field(default=Path("<recipe>"), metadata={"internal": True})


# -- YAML with line numbers ----------------------------------------------------------------------

class _Located:
    """Where each key path came from: a line in the recipe file, or ``--set``."""

    def __init__(self, file: Path, override_base: Path | None = None):
        self.file = file
        self.override_base = override_base  # relative --set paths: from here (None: the working folder)
        self.lines: dict[tuple, int | str] = {}
        self.override_text: dict[tuple, str] = {}  # --set values as typed, for string-typed keys
        self.values = 0  # YAML nodes turned into values so far (aliases count every time they expand)

    def where(self, path: tuple) -> str:
        while path and path not in self.lines:
            path = path[:-1]
        origin = self.lines.get(path)
        if origin == "--set":
            return f"{self.file}: --set"
        return f"{self.file}:{origin}" if origin else str(self.file)

    def error(self, path: tuple, message: str) -> RecipeError:
        dotted = ".".join(str(p) for p in path)
        return RecipeError(f"{self.where(path)}: {dotted + ': ' if dotted else ''}{message}")


def _node_to_python(node: Any, path: tuple, located: _Located) -> Any:
    import yaml

    located.lines.setdefault(path, node.start_mark.line + 1)
    located.values += 1
    if located.values > MAX_RECIPE_VALUES:
        raise RecipeError(f"{located.file}: the recipe expands to more than {MAX_RECIPE_VALUES} values (nested YAML aliases?)")
    if isinstance(node, yaml.MappingNode):
        result = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise located.error(path, "keys must be plain strings")
            key = key_node.value
            if key in result:
                raise RecipeError(f"{located.file}:{key_node.start_mark.line + 1}: {'.'.join(map(str, path + (key,)))}: duplicate key")
            located.lines[path + (key,)] = key_node.start_mark.line + 1
            result[key] = _node_to_python(value_node, path + (key,), located)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_node_to_python(item, path + (i,), located) for i, item in enumerate(node.value)]
    return yaml.SafeLoader("").construct_object(node)


def _parse_yaml(text: str, file: Path, located: _Located) -> Any:
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark else str(file)
        raise RecipeError(f"{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    except RecursionError:
        raise RecipeError(f"{file}: not valid YAML (nested too deeply)") from None
    if node is None:
        raise RecipeError(f"{file}: the recipe is empty")
    try:
        return _node_to_python(node, (), located)
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        raise RecipeError(f"{file}: cannot read a value ({first_line(exc, 120)})") from None


# -- overrides -----------------------------------------------------------------------------------

def _split_path(dotted: str) -> tuple:
    parts: list[Any] = []
    for piece in re.split(r"\.|\[|\]", dotted):
        if piece == "":
            continue
        parts.append(int(piece) if piece.isdigit() else piece)
    return tuple(parts)


def apply_override(raw: dict[str, Any], override: str, located: _Located) -> None:
    """``key.path=value`` (list items by index: ``passes.1.speaker=2``); the value is read as YAML."""
    import yaml

    if "=" not in override:
        raise RecipeError(f"--set {override!r}: expected KEY.PATH=VALUE")
    dotted, text = override.split("=", 1)
    path = _split_path(dotted.strip())
    if not path or not isinstance(path[0], str):
        raise RecipeError(f"--set {override!r}: expected KEY.PATH=VALUE")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader) if text.strip() else None
        value = _node_to_python(node, (), _Located(located.file)) if node is not None else ""
    except (yaml.YAMLError, ValueError, RecursionError):
        value = text
    container: Any = raw
    for depth, key in enumerate(path[:-1]):
        if isinstance(container, list):
            if not isinstance(key, int) or not 0 <= key < len(container):
                raise RecipeError(f"--set {dotted}: no item {key} in {'.'.join(map(str, path[:depth])) or 'the recipe'}")
            container = container[key]
        elif isinstance(container, dict):
            container = container.setdefault(key, {})
        else:
            raise RecipeError(f"--set {dotted}: {'.'.join(map(str, path[:depth]))} is not a mapping or list")
    last = path[-1]
    if isinstance(container, list):
        if not isinstance(last, int) or not 0 <= last < len(container):
            raise RecipeError(f"--set {dotted}: no item {last} in {'.'.join(map(str, path[:-1]))}")
    elif not isinstance(container, dict):
        raise RecipeError(f"--set {dotted}: {'.'.join(map(str, path[:-1]))} is not a mapping or list")
    container[last] = value
    located.override_text[path] = text.strip()
    for depth in range(1, len(path) + 1):
        located.lines[path[:depth]] = located.lines.get(path[:depth], "--set") if depth < len(path) else "--set"


# -- conversion ----------------------------------------------------------------------------------

def _is_optional(hint: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return True, args[0]
    return False, hint


def _type_name(hint: Any) -> str:
    optional, inner = _is_optional(hint)
    if optional:
        return f"{_type_name(inner)} or null"
    origin = typing.get_origin(inner)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(inner))
    if origin is list:
        return "a list"
    if dataclasses.is_dataclass(inner):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", Path: "a path"}.get(inner, str(inner))


def _convert(value: Any, hint: Any, path: tuple, located: _Located, base: Path) -> Any:
    optional, inner = _is_optional(hint)
    if value is None:
        if optional:
            return None
        raise located.error(path, f"expected {_type_name(hint)}, got null")
    hint = inner
    origin = typing.get_origin(hint)
    if hint in (str, Path) and path in located.override_text:
        value = located.override_text[path]  # `--set source.sha256=000...` is text, not the number 0
    if dataclasses.is_dataclass(hint):
        return _convert_dataclass(value, hint, path, located, base)
    if origin is list:
        if not isinstance(value, list):
            raise located.error(path, f"expected a list, got {_short(value)}")
        (item_hint,) = typing.get_args(hint)
        return [_convert(item, item_hint, path + (i,), located, base) for i, item in enumerate(value)]
    if origin is Literal:
        choices = typing.get_args(hint)
        if isinstance(value, (bool, list, dict)) or value not in choices:
            raise located.error(path, f"expected one of {', '.join(repr(c) for c in choices)}, got {_short(value)}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise located.error(path, f"expected true or false, got {_short(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise located.error(path, f"expected an integer, got {_short(value)}")
        if abs(value) > MAX_INT:
            raise located.error(path, f"{_short(value)} is out of range (at most {MAX_INT} in size)")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise located.error(path, f"expected a number, got {_short(value)}")
        if isinstance(value, int) and abs(value) > MAX_INT or not math.isfinite(value):
            raise located.error(path, f"expected a finite number, got {_short(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise located.error(path, f"expected a string, got {_short(value)}")
        return value
    if hint is Path:
        if not isinstance(value, str) or not value or "\x00" in value:
            raise located.error(path, f"expected a path, got {_short(value)}")
        try:
            path_value = Path(value).expanduser()
        except RuntimeError:  # ~user of an unknown user, or no home folder
            raise located.error(path, f"cannot expand '~' in {_short(value)}") from None
        if not path_value.is_absolute():
            origin_base = (located.override_base or Path.cwd()) if located.lines.get(path) == "--set" else base
            path_value = origin_base / path_value
        return Path(os.path.normpath(path_value))
    if hint is Any:
        return value
    raise located.error(path, f"unsupported type {hint}")  # pragma: no cover - schema bug


def _unknown_key(key: str, known: list[str], path: tuple, located: _Located) -> RecipeError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
    return located.error(path + (key,), f"unknown key{hint}")


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}


def _convert_dataclass(value: Any, cls: type, path: tuple, located: _Located, base: Path) -> Any:
    if not isinstance(value, dict):
        raise located.error(path, f"expected a mapping, got {_short(value)}")
    if cls is PassEntry:
        return _convert_pass(value, path, located, base)
    fields = _fields(cls)
    hints = typing.get_type_hints(cls)
    for key in value:
        if key not in fields:
            raise _unknown_key(str(key), list(fields), path, located)
    kwargs = {}
    for name, spec in fields.items():
        if name in value:
            kwargs[name] = _convert(value[name], hints[name], path + (name,), located, base)
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise located.error(path + (name,), "required key is missing")
        elif isinstance(spec.default, Path):
            kwargs[name] = Path(os.path.normpath(base / spec.default))  # defaults are relative to the recipe too
    return cls(**kwargs)


def _convert_pass(value: dict[str, Any], path: tuple, located: _Located, base: Path) -> PassEntry:
    from ..passes import PASSES

    if "name" not in value:
        raise located.error(path + ("name",), "every pass needs a name")
    name = value["name"]
    if not isinstance(name, str):
        raise located.error(path + ("name",), f"expected a pass name, got {_short(name)}")
    if name not in PASSES:
        close = difflib.get_close_matches(str(name), list(PASSES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; available: {', '.join(PASSES)}"
        raise located.error(path + ("name",), f"unknown pass {_short(name)}{hint}")
    params = {k: v for k, v in value.items() if k != "name"}
    return PassEntry(name=name, params=_convert_dataclass(params, PASSES[name].Params, path, located, base))


# -- semantic checks -----------------------------------------------------------------------------

def _validate_stream(recipe: Recipe, located: _Located) -> None:
    """A ``stream:`` section: whole 10 ms frames; it sets the static shape (or must agree with one)."""
    stream = recipe.stream
    if recipe.source.component != "synthesizer":
        raise located.error(("stream",), f"real-time blocks are rendered by the synthesizer, not a {recipe.source.component} recipe")
    for key in ("block", "context", "crossfade", "search"):
        value = getattr(stream, key)
        if not math.isfinite(value) or value < 0 or abs(value * 100 - round(value * 100)) > 1e-6:
            raise located.error(("stream", key), f"{value!r} must be a whole number of 10 ms frames (0.01 s), 0 or more")
    frames = stream.frames()
    if frames["block"] < 1 or frames["context"] < 1:
        raise located.error(("stream",), "block and context must each be at least 0.01 s")
    if frames["crossfade"] > frames["block"]:
        raise located.error(("stream", "crossfade"), f"{stream.crossfade} s is longer than the block ({stream.block} s)")
    if frames["context"] > 6000:
        raise located.error(("stream", "context"), "at most 60 s")
    shapes = recipe.shapes
    if shapes.mode == "static" and shapes.chunk_frames != frames["window"]:
        raise located.error(("shapes", "chunk_frames"), f"{shapes.chunk_frames} frames, but the stream section's window is {frames['window']} "
                            "(context + block + crossfade + search); leave shapes out")
    if any(entry.name == "stream_block" for entry in recipe.passes):
        raise located.error(("passes",), "stream_block is added by the stream section; do not list it too")
    recipe.shapes = Shapes(mode="static", chunk_frames=frames["window"])

def _validate_binding(recipe: Recipe, located: _Located) -> None:
    """``source.bind_weights``: only where every constant of the graph is a weight of the torch model."""
    if recipe.source.component != "synthesizer":
        raise located.error(("source", "bind_weights"), f"binds voice weights into a synthesizer graph, not a {recipe.source.component} graph")
    if any(entry.name == "fold_speaker" for entry in recipe.passes):
        raise located.error(("source", "bind_weights"), "fold_speaker turns the speaker's conditioning into constants computed from the weights, "
                            "which binding cannot recompute; drop the pass (the graph keeps its speaker input) or build without binding")


def _validate(recipe: Recipe, located: _Located) -> None:
    if recipe.source.bind_weights:
        _validate_binding(recipe, located)
    if not is_valid_name(recipe.name):
        raise located.error(("name",), f"{_short(recipe.name)}: {NAME_RULE}")
    if not is_valid_version(recipe.version):
        raise located.error(("version",), f"{_short(recipe.version)} {VERSION_RULE}")
    if recipe.source.sha256 is not None and not is_sha256_hex(recipe.source.sha256):
        raise located.error(("source", "sha256"), "expected 64 lowercase hex digits")
    if not 1 <= recipe.target.threads <= MAX_THREADS:
        raise located.error(("target", "threads"), f"must be between 1 and {MAX_THREADS}")
    shapes = recipe.shapes
    if shapes.mode == "dynamic":
        if not 1 <= shapes.min_frames <= shapes.opt_frames <= shapes.max_frames:
            raise located.error(("shapes",), f"need 1 <= min_frames <= opt_frames <= max_frames, got {shapes.min_frames}, {shapes.opt_frames}, {shapes.max_frames}")
        if shapes.max_frames - shapes.min_frames < 2:
            raise located.error(("shapes",), "max_frames must exceed min_frames by at least 2 (three check lengths)")
        outside = [n for n in shapes.check_frames if not shapes.min_frames <= n <= shapes.max_frames]
        if outside:
            raise located.error(("shapes", "check_frames"), f"{outside} outside min_frames..max_frames")
        if shapes.chunk_frames is not None:
            raise located.error(("shapes", "chunk_frames"), "only for mode: static")
        if shapes.window_context < 0 or shapes.window_crossfade < 0:
            raise located.error(("shapes",), "window_context and window_crossfade must be 0 or more")
        if shapes.window_frames is not None:
            frames = shapes.window_frames
            if not shapes.min_frames <= frames <= shapes.max_frames:
                raise located.error(("shapes", "window_frames"), f"{frames} outside min_frames..max_frames")
            if not _window_fits(frames, shapes.window_context, shapes.window_crossfade):
                raise located.error(("shapes", "window_frames"), f"window_context {shapes.window_context} x 2 + window_crossfade {shapes.window_crossfade} must leave at least half of the {frames} frames to keep")
    else:
        if shapes.chunk_frames is None or shapes.chunk_frames < 1:
            raise located.error(("shapes", "chunk_frames"), "static mode needs a positive chunk_frames")
    if recipe.stream is not None:
        _validate_stream(recipe, located)
    if recipe.capture.opset < 17:
        raise located.error(("capture", "opset"), "needs opset 17 or newer")
    if recipe.latency.repeat < 1 or recipe.latency.warmup < 0:
        raise located.error(("latency",), "repeat must be at least 1 and warmup at least 0")
    if any(s <= 0 for s in recipe.latency.seconds):
        raise located.error(("latency", "seconds"), "lengths must be positive")
    for i, goal in enumerate(recipe.latency.goals):
        if not any(abs(goal.seconds - s) < 1e-9 for s in recipe.latency.seconds):
            raise located.error(("latency", "goals", i, "seconds"), f"{goal.seconds} s is not one of latency.seconds {recipe.latency.seconds}")
        if goal.max_rtf is None and goal.min_speedup_vs_eager is None:
            raise located.error(("latency", "goals", i), "set max_rtf, min_speedup_vs_eager, or both")
        for key in ("max_rtf", "min_speedup_vs_eager"):
            value = getattr(goal, key)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise located.error(("latency", "goals", i, key), "must be positive")
    if not recipe.golden.seconds or any(s <= 0 for s in recipe.golden.seconds):
        raise located.error(("golden", "seconds"), "need at least one positive length")
    if not _NOISE.match(recipe.golden.noise):
        raise located.error(("golden", "noise"), f"{_short(recipe.golden.noise)} is not 'zero' or 'seed:N'")
    policy = recipe.precision_policy
    if recipe.target.precision == "int8" and recipe.calibration.source == "none":
        raise located.error(("calibration", "source"), "int8 needs calibration data: set calibration.source (rvc-logs, npz or generated)")
    if policy.keep_fp32 and recipe.target.precision == "fp32":
        raise located.error(("precision_policy", "keep_fp32"), "only meaningful for fp16, bf16 or int8 targets")
    if policy.accuracy_aware and recipe.target.precision not in ("int8", "auto"):
        raise located.error(("precision_policy", "accuracy_aware"), "only for int8 targets (or precision auto, for its int8 candidate)")
    if policy.max_fp32_layers is not None and policy.max_fp32_layers < 0:
        raise located.error(("precision_policy", "max_fp32_layers"), "must be 0 or more")
    _validate_calibration(recipe.calibration, located)
    _validate_export(recipe, located)


def _validate_export(recipe: Recipe, located: _Located) -> None:
    seen: set[str] = set()
    for index, entry in enumerate(recipe.export):
        if entry.profile in seen:
            raise located.error(("export", index, "profile"), f"{entry.profile} is listed twice (one file per profile)")
        seen.add(entry.profile)
        if recipe.target.backend != "onnxruntime":
            raise located.error(("export", index), f"exports are made from ONNX Runtime artifacts; target.backend is {recipe.target.backend!r}")
        if recipe.shapes.mode != "dynamic":
            raise located.error(("export", index), "the apps feed any length: exports need shapes.mode: dynamic")
        if recipe.source.component != "synthesizer":
            raise located.error(("export", index), f"exports carry RVC synthesizers; source.component is {recipe.source.component!r}")


def _validate_calibration(calibration: Calibration, located: _Located) -> None:
    def error(key: str, message: str) -> RecipeError:
        return located.error(("calibration", key), message)

    if calibration.source in ("npz", "rvc-logs") and calibration.path is None:
        raise error("path", f"source {calibration.source!r} needs a path")
    if calibration.source not in ("npz", "rvc-logs") and calibration.path is not None:
        raise error("path", f"not used by source {calibration.source!r} (only npz and rvc-logs read a folder)")
    if calibration.count < 1:
        raise error("count", "must be at least 1")
    for key in ("seconds", "f0_low_hz", "f0_high_hz", "pitch_shift_semitones", "feature_mean", "feature_std", "feature_perturbation", "feature_correlation"):
        value = getattr(calibration, key)
        if value is not None and not math.isfinite(value):
            raise error(key, f"must be a finite number, got {value}")
    if calibration.seconds <= 0:
        raise error("seconds", "must be positive")
    defaults = Calibration()
    for key, applies in _CALIBRATION_KEY_USE.items():
        if getattr(calibration, key) == getattr(defaults, key):
            continue
        if calibration.source != "generated":
            raise error(key, f"only used by source 'generated' (source is {calibration.source!r})")
        if not applies(calibration):
            raise error(key, f"not used with f0_source {calibration.f0_source!r} and features {calibration.features!r}")
    if calibration.seed < 0:
        raise error("seed", "must be 0 or more")
    if not F0_RANGE_HZ[0] <= calibration.f0_low_hz < calibration.f0_high_hz <= F0_RANGE_HZ[1]:
        raise error("f0_low_hz", f"need {F0_RANGE_HZ[0]:g} <= f0_low_hz < f0_high_hz <= {F0_RANGE_HZ[1]:g} (RVC's pitch range), got {calibration.f0_low_hz:g} and {calibration.f0_high_hz:g}")
    if not 0 <= calibration.pitch_shift_semitones <= 24:
        raise error("pitch_shift_semitones", "must be between 0 and 24")
    if calibration.feature_std <= 0:
        raise error("feature_std", "must be positive")
    if calibration.feature_perturbation < 0:
        raise error("feature_perturbation", "must be 0 or more")
    if calibration.feature_correlation is not None and not 0 <= calibration.feature_correlation < 1:
        raise error("feature_correlation", "must be at least 0 and below 1")


def _default_budget(recipe: Recipe, located: _Located) -> None:
    """Accuracy keys the recipe does not set take the component's default budget for the target precision;
    keys the component does not measure are off (and an error when the recipe sets them)."""
    from ..components import get_component, known_kinds

    if recipe.source.component not in known_kinds():
        raise located.error(("source", "component"), f"{_short(recipe.source.component)} is not a known component ({', '.join(known_kinds())})")
    component = get_component(recipe.source.component)
    defaults = component.default_budget(recipe.target.precision)
    for item in dataclasses.fields(recipe.accuracy):
        name = item.name
        if name not in component.BUDGET_KEYS:
            if ("accuracy", name) in located.lines and getattr(recipe.accuracy, name) is not None:
                raise located.error(("accuracy", name), f"not a metric of {component.KIND} graphs (budget keys: {', '.join(component.BUDGET_KEYS)})")
            setattr(recipe.accuracy, name, None)
        elif ("accuracy", name) not in located.lines:
            setattr(recipe.accuracy, name, defaults.get(name))


def read_recipe_file(path: str | Path, cls: type, overrides: list[str] | None, what: str, *,
                     override_base: Path | None = None) -> tuple[Any, _Located]:
    """Read a YAML recipe file, apply ``--set`` overrides and convert it to ``cls`` (``what`` names the kind
    of recipe in errors); the recipe and where each key came from, for the caller's checks. Relative
    paths in overrides are taken from ``override_base`` (default: the working folder)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RecipeError(f"{path}: no such recipe file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path}: cannot read the recipe ({exc})") from None
    located = _Located(path, override_base)
    raw = _parse_yaml(text, path, located)
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: {what} is a mapping of keys, got {type(raw).__name__}")
    for override in overrides or []:
        apply_override(raw, override, located)
    recipe = _convert_dataclass(raw, cls, (), located, path.resolve().parent)
    recipe.recipe_path = path
    return recipe, located


def load_recipe(path: str | Path, overrides: list[str] | None = None, *, override_base: Path | None = None) -> Recipe:
    """Read, override, convert and check a recipe file; RecipeError names the key path and line.
    Relative paths in ``overrides`` are taken from ``override_base`` (default: the working folder)."""
    recipe, located = read_recipe_file(path, Recipe, overrides, "a recipe", override_base=override_base)
    _default_budget(recipe, located)
    _validate(recipe, located)
    return recipe


# -- serialisation and schema --------------------------------------------------------------------

def _plain(value: Any) -> Any:
    if isinstance(value, PassEntry):
        return {"name": value.name, **_plain(value.params)}
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if not f.metadata.get("internal")}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The resolved recipe (defaults filled in, paths absolute) as plain JSON-able data."""
    return _plain(recipe)


def recipe_sha256(recipe: Recipe) -> str:
    from ..artifact.manifest import canonical_json

    return hashlib.sha256(canonical_json(recipe_to_dict(recipe))).hexdigest()


def _schema_of(hint: Any) -> dict[str, Any]:
    optional, inner = _is_optional(hint)
    if optional:
        return {"anyOf": [_schema_of(inner), {"type": "null"}]}
    origin = typing.get_origin(inner)
    if inner is PassEntry:
        return _pass_schema()
    if dataclasses.is_dataclass(inner):
        return _dataclass_schema(inner)
    if origin is list:
        return {"type": "array", "items": _schema_of(typing.get_args(inner)[0])}
    if origin is Literal:
        return {"enum": list(typing.get_args(inner))}
    return {int: {"type": "integer"}, float: {"type": "number"}, str: {"type": "string"}, bool: {"type": "boolean"}, Path: {"type": "string"}}.get(inner, {})


def _dataclass_schema(cls: type, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    properties, required = dict(extra or {}), list(extra or {})
    for name, spec in _fields(cls).items():
        schema = _schema_of(hints[name])
        if spec.default is not dataclasses.MISSING and not isinstance(spec.default, Path):
            schema["default"] = spec.default
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            required.append(name)
        properties[name] = schema
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):
        schema["description"] = " ".join(cls.__doc__.split())
    if required:
        schema["required"] = required
    return schema


def _pass_schema() -> dict[str, Any]:
    from ..passes import PASSES

    variants = []
    for name, cls in PASSES.items():
        variant = _dataclass_schema(cls.Params, {"name": {"const": name}})
        variant["description"] = cls.description
        variants.append(variant)
    return {"oneOf": variants}


def recipe_json_schema() -> dict[str, Any]:
    schema = _dataclass_schema(Recipe)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "rvc-compile recipe", **schema}
