"""The pipeline recipe: one file that builds a whole conversion pipeline bundle (docs/CONVERT.md).

A pipeline recipe names a build recipe per component (synthesizer, content encoder, optionally the
RMVPE pitch estimator), the voice's optional retrieval index, the conversion settings the bundle
carries, and the end-to-end golden check. It is told apart from a build recipe by ``kind: pipeline``.
Paths are relative to the recipe file, like every recipe's, and so are the paths in a component's
``set`` overrides.

    kind: pipeline
    name: my-voice
    version: 1.0.0
    synthesizer: {recipe: ../cpu-int8-openvino.yaml, set: ["source.checkpoint=MY_VOICE.pth"]}
    encoder: {recipe: encoder-int8-openvino.yaml, set: ["source.checkpoint=contentvec"]}
    pitch: {recipe: rmvpe-int8-openvino.yaml, set: ["source.checkpoint=rmvpe.pt"]}
    index: added_IVF256_Flat_nprobe_1_my-voice_v2.index
    settings: {f0_method: rmvpe, index_rate: 0.75, protect: 0.33, rms_mix_rate: 0.25}
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from ..errors import RecipeError

ROLES = {"synthesizer": "synthesizer", "encoder": "content-encoder", "pitch": "rmvpe"}  # role -> component kind
F0_METHODS = ("rmvpe", "harvest", "pm", "dio")


@dataclass
class ComponentEntry:
    """One component: its build recipe (relative to the pipeline recipe) and ``--set`` overrides for it."""

    recipe: Path
    set: list[str] = field(default_factory=list)


@dataclass
class PipelineSettings:
    """RVC's conversion settings (its WebUI's defaults); ``rvc-compile convert`` options override them."""

    f0_method: Literal["rmvpe", "harvest", "pm", "dio"] = "rmvpe"
    pitch_shift: float = 0.0  # semitones
    index_rate: float = 0.75  # retrieval blend (no effect without an index)
    protect: float = 0.33  # unvoiced consonants keep this much of the unblended features (0.5: off)
    rms_mix_rate: float = 0.25  # 1: the output's own loudness; 0: the input's loudness envelope
    filter_radius: int = 3  # harvest: median filter of the f0 when >= 3
    speaker: int = 0


@dataclass
class PipelineGolden:
    """The end-to-end check: real speech through the eager fp32 pipeline and through the bundle."""

    audio: list[Path] = field(default_factory=list)  # empty: the bundled speech clips (calibration/data)
    seconds: float = 4.0  # each clip cut (or tiled) to this many seconds


@dataclass
class PipelineAccuracy:
    """End-to-end budget of the bundle's output against the eager fp32 pipeline's (null: the default of
    the lowest precision among the components, docs/CONVERT.md)."""

    max_log_mel_db: Optional[float] = None
    max_f0_cents: Optional[float] = None


@dataclass
class PipelineRecipe:
    name: str
    version: str
    kind: Literal["pipeline"]
    synthesizer: ComponentEntry
    encoder: ComponentEntry
    pitch: Optional[ComponentEntry] = None
    index: Optional[Path] = None
    settings: PipelineSettings = field(default_factory=PipelineSettings)
    golden: PipelineGolden = field(default_factory=PipelineGolden)
    accuracy: PipelineAccuracy = field(default_factory=PipelineAccuracy)
    output_dir: Path = Path("out/artifacts")
    recipe_path: Path = field(default=Path("<recipe>"), metadata={"internal": True})

    def components(self) -> dict[str, ComponentEntry]:
        entries = {"synthesizer": self.synthesizer, "encoder": self.encoder}
        if self.pitch is not None:
            entries["pitch"] = self.pitch
        return entries


def is_pipeline_recipe(path: str | Path) -> bool:
    """Whether ``path`` holds a pipeline recipe (``kind: pipeline``); unreadable files are left to the loader."""
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(raw, dict) and raw.get("kind") == "pipeline"


def load_pipeline_recipe(path: str | Path, overrides: list[str] | None = None) -> PipelineRecipe:
    """Read and check a pipeline recipe; RecipeError names the key path and line."""
    from ..artifact.manifest import NAME_RULE, VERSION_RULE, is_valid_name, is_valid_version
    from .schema import read_recipe_file

    recipe, located = read_recipe_file(path, PipelineRecipe, overrides, "a pipeline recipe")
    if not is_valid_name(recipe.name):
        raise located.error(("name",), f"{recipe.name!r}: {NAME_RULE}")
    if not is_valid_version(recipe.version):
        raise located.error(("version",), f"{recipe.version!r} {VERSION_RULE}")
    for role, entry in recipe.components().items():
        if not entry.recipe.is_file():
            raise located.error((role, "recipe"), f"{entry.recipe}: no such recipe file")
    if recipe.index is not None and not recipe.index.is_file():
        raise located.error(("index",), f"{recipe.index}: no such index file")
    settings = recipe.settings
    from ..errors import InputError
    from ..runtime.pipeline import ConvertOptions

    try:
        ConvertOptions.merge(dataclasses.asdict(settings))  # the ranges a conversion accepts
    except InputError as exc:
        key, _, problem = str(exc).partition(": ")
        raise located.error(("settings", key), problem) from None
    if settings.f0_method == "rmvpe" and recipe.pitch is None:
        raise located.error(("settings", "f0_method"), "rmvpe needs a pitch component (pitch.recipe); or use harvest, pm or dio")
    if not 0.5 <= recipe.golden.seconds <= 60:
        raise located.error(("golden", "seconds"), f"{recipe.golden.seconds} is outside 0.5..60 s")
    for index, clip in enumerate(recipe.golden.audio):
        if not clip.is_file():
            raise located.error(("golden", "audio", index), f"{clip}: no such audio file")
    for key in ("max_log_mel_db", "max_f0_cents"):
        value = getattr(recipe.accuracy, key)
        if value is not None and not value > 0:
            raise located.error(("accuracy", key), f"{value} must be positive (or null for the default)")
    return recipe


def component_recipe(recipe: PipelineRecipe, role: str):
    """The build recipe of ``role``, loaded with its overrides and checked to be of the right kind."""
    from .schema import load_recipe

    entry = recipe.components()[role]
    # Paths in a component's ``set`` are relative to the pipeline recipe, like every path in it.
    loaded = load_recipe(entry.recipe, list(entry.set), override_base=Path(recipe.recipe_path).resolve().parent)
    if loaded.source.component != ROLES[role]:
        raise RecipeError(
            f"{recipe.recipe_path}: {role}.recipe {entry.recipe} builds a {loaded.source.component!r} component; "
            f"the {role} must be {ROLES[role]!r}"
        )
    return loaded
