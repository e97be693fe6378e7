"""The typed manifest: one frozen dataclass per section, validated once when an artifact is read.

``read_manifest`` (artifact.manifest) checks the structure every artifact has (files, hashes, the keys);
``parse_manifest`` checks the types and ranges of what the runtime, ``verify``, ``bench`` and ``profile``
read and returns a ``Manifest`` they use instead of re-checking dicts. The component's own model fields
(the synthesizer's sample rate, hop, feature width ...) are checked by its adapter
(``Component.check_model``). Every error is an ArtifactError naming the file and the key.

A ``Manifest`` still answers ``manifest["key"]`` with the raw JSON value, for the sections no code
reads typed yet (report, recipe, passes, precision) and for writing it back unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from ..errors import ArtifactError

# Far above any real artifact; past them a manifest is damaged or crafted (and would make the runtime
# allocate absurd arrays).
MAX_FRAMES = 100_000_000


class SectionReader:
    """Typed reads of manifest values; each failure is an ArtifactError naming the file and the key."""

    def __init__(self, where: Path):
        self.where = where

    def fail(self, key: str, message: str) -> ArtifactError:
        return ArtifactError(f"{self.where}: {key}: {message}")

    def integer(self, value: Any, key: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(key, f"expected an integer from {low} to {high}, got {short(value)}")
        return value

    def number(self, value: Any, key: str, *, positive: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or (positive and value <= 0):
            raise self.fail(key, f"expected a finite{' positive' if positive else ''} number, got {short(value)}")
        return float(value)

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {short(value)}")
        return value

    def string(self, value: Any, key: str, what: str = "a string") -> str:
        if not isinstance(value, str):
            raise self.fail(key, f"expected {what}, got {short(value)}")
        return value

    def mapping(self, value: Any, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected an object, got {short(value)}")
        return value

    def array(self, value: Any, key: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list, got {short(value)}")
        return value


def short(value: Any) -> str:
    """A bounded description of a manifest value for an error message."""
    import json

    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**15:
        return f"an integer of {value.bit_length()} bits"
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else f"a JSON {type(value).__name__}"
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class FrameRange:
    min: int
    max: int
    opt: int | None = None
    static: bool = False


@dataclass(frozen=True)
class ModelSection:
    """How the graph is run: its frame range, the runtime's windows, and the component's own fields."""

    frames: FrameRange
    window: Mapping[str, int] | None
    fields: Mapping[str, Any]  # component-specific (checked by Component.check_model)

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


@dataclass(frozen=True)
class ComponentSection:
    kind: str
    spec: Mapping[str, Any] | None  # None: format 2 and 3 (the synthesizer's spec is in the source section)


@dataclass(frozen=True)
class BackendSection:
    name: str
    files: Mapping[str, str]
    options: Mapping[str, Any]  # the whole section, as the backend wrote it (backend.load reads it)


@dataclass(frozen=True)
class TargetSection:
    threads: int
    compile_cache: str
    precision: str | None
    backend: str | None


@dataclass(frozen=True)
class GoldenCase:
    name: str
    file: str
    frames: int
    seconds: float


@dataclass(frozen=True)
class LatencyGoalSection:
    seconds: float
    max_rtf: float | None
    min_speedup_vs_eager: float | None
    enforce: bool

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "max_rtf": self.max_rtf, "min_speedup_vs_eager": self.min_speedup_vs_eager, "enforce": self.enforce}


@dataclass(frozen=True)
class LatencySection:
    seconds: tuple[float, ...]
    repeat: int
    warmup: int
    goals: tuple[LatencyGoalSection, ...]


@dataclass(frozen=True)
class IsaSection:
    target: str
    verified_on: str
    int8_weight_bits: int | None
    requested: str | None = None
    built_on: str | None = None
    verified_by: str | None = None


@dataclass(frozen=True)
class Manifest:
    path: Path  # the artifact folder
    format_version: int
    name: str
    version: str
    component: ComponentSection
    model: ModelSection
    signature: Mapping[str, Any]
    input_names: tuple[str, ...]
    backend: BackendSection
    target: TargetSection
    golden: tuple[GoldenCase, ...]
    latency: LatencySection
    accuracy_budget: Mapping[str, float | None]
    isa: IsaSection | None
    raw: Mapping[str, Any]

    # The raw JSON, for sections not read typed (and code that writes the manifest back).
    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.raw.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.raw

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)


def parse_manifest(raw: Mapping[str, Any] | Manifest, directory: Path, *, backends: Any = None) -> Manifest:
    """The typed manifest of the artifact in ``directory`` (``raw``: what ``read_manifest`` returned)."""
    if isinstance(raw, Manifest):
        return raw
    from ..components import DEFAULT_KIND, get_component
    from .manifest import MANIFEST

    read = SectionReader(Path(directory) / MANIFEST)
    component_raw = raw.get("component")
    if component_raw is None:
        component = ComponentSection(DEFAULT_KIND, None)
    else:
        component_raw = read.mapping(component_raw, "component")
        spec = component_raw.get("spec")
        component = ComponentSection(read.string(component_raw.get("kind"), "component.kind"), read.mapping(spec, "component.spec"))
    adapter = get_component(component.kind, for_build=False)

    model = read.mapping(raw.get("model"), "model")
    adapter.check_model(model, read)
    frames = read.mapping(model.get("frames"), "model.frames")
    low = read.integer(frames.get("min"), "model.frames.min", 1, MAX_FRAMES)
    high = read.integer(frames.get("max"), "model.frames.max", low, MAX_FRAMES)
    opt = frames.get("opt")
    window = model.get("window")
    model_section = ModelSection(
        frames=FrameRange(low, high, opt if isinstance(opt, int) and not isinstance(opt, bool) else None, bool(frames.get("static", False))),
        window=read.mapping(window, "model.window") if window is not None else None,
        fields={key: value for key, value in model.items() if key not in ("frames", "window")},
    )

    signature = read.mapping(raw.get("signature"), "signature")
    names: list[str] = []
    for index, item in enumerate(read.array(signature.get("inputs"), "signature.inputs")):
        name = read.mapping(item, f"signature.inputs[{index}]").get("name")
        if not isinstance(name, str) or name in names:
            raise read.fail(f"signature.inputs[{index}].name", f"expected a new input name, got {short(name)}")
        names.append(name)
    adapter.check_signature(names, read)

    backend = read.mapping(raw.get("backend"), "backend")
    if not isinstance(backend.get("name"), str) or backends is not None and backend["name"] not in backends:
        known = f" (this rvc-compile loads {', '.join(backends)})" if backends is not None else ""
        raise read.fail("backend.name", f"unknown backend {short(backend.get('name'))}{known}")
    files = backend.get("files", {})
    backend_section = BackendSection(backend["name"], dict(files) if isinstance(files, dict) else {}, backend)

    target = read.mapping(raw.get("target"), "target")
    target_section = TargetSection(
        threads=read.integer(target.get("threads"), "target.threads", 1, 4096),
        compile_cache=target.get("compile_cache", "none") if isinstance(target.get("compile_cache", "none"), str) else "none",
        precision=target.get("precision") if isinstance(target.get("precision"), str) else None,
        backend=target.get("backend") if isinstance(target.get("backend"), str) else None,
    )

    golden = []
    for index, entry in enumerate(read.array(raw.get("golden"), "golden")):
        entry = read.mapping(entry, f"golden[{index}]")
        for key in ("name", "file"):
            read.string(entry.get(key), f"golden[{index}].{key}")
        golden.append(GoldenCase(
            name=entry["name"], file=entry["file"],
            frames=read.integer(entry.get("frames"), f"golden[{index}].frames", 1, MAX_FRAMES),
            seconds=read.number(entry.get("seconds"), f"golden[{index}].seconds", positive=True),
        ))

    latency = read.mapping(raw.get("latency"), "latency")
    seconds = tuple(read.number(value, f"latency.seconds[{index}]", positive=True) for index, value in enumerate(read.array(latency.get("seconds"), "latency.seconds")))
    repeat = read.integer(latency.get("repeat"), "latency.repeat", 1, 1_000_000)
    warmup = read.integer(latency.get("warmup"), "latency.warmup", 0, 1_000_000)
    goals = []
    for index, goal in enumerate(read.array(latency.get("goals"), "latency.goals")):
        goal = read.mapping(goal, f"latency.goals[{index}]")
        limits = {}
        for key in ("max_rtf", "min_speedup_vs_eager"):
            limits[key] = read.number(goal[key], f"latency.goals[{index}].{key}", positive=True) if goal.get(key) is not None else None
        goals.append(LatencyGoalSection(
            seconds=read.number(goal.get("seconds"), f"latency.goals[{index}].seconds", positive=True),
            enforce=read.boolean(goal.get("enforce", False), f"latency.goals[{index}].enforce"), **limits,
        ))

    isa_section = None
    isa = raw.get("isa")
    if isa is not None:  # artifacts before format 3 have none
        isa = read.mapping(isa, "isa")
        for key in ("target", "verified_on"):
            read.string(isa.get(key), f"isa.{key}", "an ISA class name")
        bits = read.integer(isa["int8_weight_bits"], "isa.int8_weight_bits", 2, 8) if isa.get("int8_weight_bits") is not None else None
        isa_section = IsaSection(isa["target"], isa["verified_on"], bits, isa.get("requested"), isa.get("built_on"), isa.get("verified_by"))

    budget = {}
    for key, value in read.mapping(raw.get("accuracy_budget"), "accuracy_budget").items():
        budget[key] = read.number(value, f"accuracy_budget.{key}") if value is not None else None

    return Manifest(
        path=Path(directory), format_version=raw.get("format_version"), name=raw.get("name"), version=raw.get("version"),
        component=component, model=model_section, signature=signature, input_names=tuple(names), backend=backend_section,
        target=target_section, golden=tuple(golden), latency=LatencySection(seconds, repeat, warmup, tuple(goals)),
        accuracy_budget=budget, isa=isa_section, raw=raw,
    )
