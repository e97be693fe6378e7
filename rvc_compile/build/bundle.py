"""``rvc-compile build`` of a pipeline recipe: every component built (through the same cached build as a
single artifact), then assembled with the voice's index and settings into one bundle, checked end to
end against the eager fp32 pipeline on real speech before it is renamed into place.

Layout of a bundle (``<output_dir>/<name>/<version>/``)::

    manifest.json          kind: pipeline; components named by the sha256 of their manifests; settings
    components/<role>/     the component artifacts, unchanged (synthesizer, encoder, pitch)
    index/<file>           the voice's retrieval index (optional)
    golden/caseN-input.npy      16 kHz input speech
    golden/caseN-reference.npy  the eager fp32 pipeline's output (zero noise)

Like every artifact, it is assembled in a temporary folder: a failed component build, a feature
dimension that does not match, or an end-to-end check out of budget leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..artifact.manifest import MANIFEST, ArtifactWriter
from ..errors import GateFailure, RecipeError
from ..hashing import sha256_file
from ..runtime.pipeline import BUNDLE_KIND, ConvertOptions, convert_audio
from .pipeline import BuildResult, build

BUNDLE_FORMAT = 1
PRECISION_ORDER = ("fp32", "fp16", "bf16", "int8")
# End-to-end budget of the bundle's output against the eager fp32 pipeline's, by the lowest precision
# among its components (docs/CONVERT.md gives the measurements behind them).
BUDGET_KEYS = {"max_log_mel_db": ("log_mel_db", "max"), "max_f0_cents": ("f0_cents", "max")}
DEFAULT_BUDGETS = {
    "fp32": {"max_log_mel_db": 0.5, "max_f0_cents": 10.0},
    "fp16": {"max_log_mel_db": 1.0, "max_f0_cents": 20.0},
    "bf16": {"max_log_mel_db": 2.0, "max_f0_cents": 30.0},
    "int8": {"max_log_mel_db": 3.0, "max_f0_cents": 30.0},
}


def golden_audio(recipe: Any) -> list[tuple[str, np.ndarray]]:
    """(label, 16 kHz float32) golden inputs: the recipe's clips or the bundled ones, cut or tiled to
    ``golden.seconds``."""
    from ..convert.audio import to_16k

    from ..components.encoder.inputs import BUNDLED_CLIPS, BUNDLED_DIR  # the real speech every component's checks use

    clips = list(recipe.golden.audio) or [BUNDLED_DIR / name for name in BUNDLED_CLIPS]
    samples = int(round(recipe.golden.seconds * 16000))
    cases = []
    for clip in clips:
        audio = to_16k(clip)
        audio = np.tile(audio, -(-samples // max(audio.shape[0], 1)))[:samples]
        cases.append((Path(clip).name, np.ascontiguousarray(audio, dtype=np.float32)))
    return cases


def lowest_precision(precisions: list[str]) -> str:
    return max(precisions, key=lambda p: PRECISION_ORDER.index(p) if p in PRECISION_ORDER else 0)


def build_pipeline(
    recipe: Any, *, out_dir: Path | None = None, force: bool = False, cache_dir: Path | None = None, use_cache: bool = True,
    log: Callable[[str], None] = print,
) -> BuildResult:
    """Build a loaded pipeline recipe (``recipe.pipeline.PipelineRecipe``) into a bundle."""
    from ..convert.eager import engines_from_recipes
    from ..recipe.pipeline import component_recipe
    from ..runtime import load
    from ..runtime.pipeline import EncoderEngine, Engines
    from ..verify.metrics import check_budget, compare

    started = time.perf_counter()
    recipes = {role: component_recipe(recipe, role) for role in recipe.components()}
    out_root = Path(out_dir) if out_dir is not None else Path(recipe.output_dir)
    options = ConvertOptions.merge(dataclasses.asdict(recipe.settings))
    _preflight(recipe, recipes)  # parts that cannot fit are refused before minutes of component builds
    with ArtifactWriter(out_root, recipe.name, recipe.version, force=force) as writer:
        staging = writer.dir / ".components"
        components, reports, entries = {}, {}, {}
        for role, component_recipe_ in recipes.items():
            log(f"pipeline: building the {role} ({component_recipe_.recipe_path})")
            result = build(component_recipe_, out_dir=staging / role, force=True, cache_dir=cache_dir, use_cache=use_cache, log=log)
            target = writer.dir / "components" / role
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(result.path), str(target))
            reports[role] = result.report
            components[role] = load(target, allow_tampered=False)
            entries[role] = {
                "path": f"components/{role}", "kind": components[role].kind, "name": result.report.get("name", result.path.parent.name),
                "version": result.path.name, "manifest_sha256": sha256_file(target / MANIFEST),
                "backend": components[role].backend_name, "precision": components[role].manifest.target.precision,
            }
        shutil.rmtree(staging, ignore_errors=True)
        voice, encoder = components["synthesizer"], components["encoder"]
        if encoder.feature_dim != voice.feature_dim:
            raise RecipeError(
                f"{recipe.recipe_path}: the encoder gives {encoder.feature_dim}-dim features but the voice takes {voice.feature_dim} "
                f"(source.features: {'v1' if voice.feature_dim == 256 else 'v2'} in {recipe.encoder.recipe})"
            )
        if options.f0_method == "rmvpe" and not voice.has_f0:
            options = dataclasses.replace(options, f0_method="harvest")  # unpitched voice: no pitch is ever computed
        index_entry, index = None, None
        if recipe.index is not None:
            from ..convert.retrieval import RetrievalIndex

            index = RetrievalIndex.load(recipe.index, voice.feature_dim)
            (writer.dir / "index").mkdir()
            shutil.copyfile(recipe.index, writer.dir / "index" / recipe.index.name)
            index_entry = {"file": f"index/{recipe.index.name}", "sha256": sha256_file(recipe.index), "feature_dim": voice.feature_dim,
                           "vectors": int(index.size)}

        # End to end: the eager fp32 pipeline on the components' sources vs the compiled components.
        log("pipeline: end-to-end check against the eager fp32 pipeline")
        reference_engines = engines_from_recipes(recipes["synthesizer"], recipes["encoder"], recipes.get("pitch"), recipe.index)
        pitch = components.get("pitch")
        compiled_engines = Engines(
            encoder=EncoderEngine.compiled(encoder), synthesizer=voice,
            rmvpe=pitch.estimate if pitch is not None else None, index=index, label=recipe.name,
        )
        precision = lowest_precision([entry["precision"] for entry in entries.values()])
        budget = dict(DEFAULT_BUDGETS.get(precision, DEFAULT_BUDGETS["int8"]))
        budget.update({key: value for key, value in dataclasses.asdict(recipe.accuracy).items() if value is not None})
        (writer.dir / "golden").mkdir()
        golden, failures, timing = [], [], {"eager_s": 0.0, "compiled_s": 0.0, "audio_s": 0.0}
        for number, (label, audio) in enumerate(golden_audio(recipe)):
            tick = time.perf_counter()
            reference = convert_audio(reference_engines, audio, 16000, options)
            timing["eager_s"] += time.perf_counter() - tick
            tick = time.perf_counter()
            candidate = convert_audio(compiled_engines, audio, 16000, options)
            timing["compiled_s"] += time.perf_counter() - tick
            timing["audio_s"] += audio.shape[0] / 16000
            metrics = compare(reference, candidate, voice.sample_rate)
            case_failures = check_budget(metrics, budget, keys=BUDGET_KEYS)
            failures += [f"case{number} ({label}): {failure}" for failure in case_failures]
            stem = f"golden/case{number}"
            np.save(writer.dir / f"{stem}-input.npy", audio)
            np.save(writer.dir / f"{stem}-reference.npy", reference.astype(np.float32))
            golden.append({
                "name": f"case{number}", "source": label, "file": f"{stem}-input.npy", "reference": f"{stem}-reference.npy",
                "seconds": round(audio.shape[0] / 16000, 3), "metrics": {key: metrics.get(key) for key in ("snr_db", "log_mel_db", "mrstft", "f0_cents", "voicing_mismatch", "length_mismatch")},
            })
            log(f"pipeline: case{number} ({label}): log-mel {metrics['log_mel_db']:.3g} dB, F0 {metrics['f0_cents'] if metrics['f0_cents'] is None else round(metrics['f0_cents'], 2)} ct")
        if failures:
            raise GateFailure(f"{recipe.recipe_path}: the bundle's output is outside its end-to-end budget: {failures[0]}", failures=failures)
        manifest = {
            "kind": BUNDLE_KIND,
            "bundle_format": BUNDLE_FORMAT,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "recipe_sha256": hashlib.sha256(Path(recipe.recipe_path).read_bytes()).hexdigest(),
            "components": entries,
            "index": index_entry,
            "settings": options.to_dict(),
            "sample_rate": voice.sample_rate,
            "feature_dim": voice.feature_dim,
            "golden": golden,
            "accuracy_budget": budget,
            "precision": precision,
            "build": {
                "seconds": round(time.perf_counter() - started, 1),
                "golden_eager_rtf": round(timing["eager_s"] / timing["audio_s"], 4),
                "golden_compiled_rtf": round(timing["compiled_s"] / timing["audio_s"], 4),
            },
        }
        for model in components.values():
            _close(model)
        path = writer.commit(manifest)
    log(f"built {path} in {time.perf_counter() - started:.1f} s (eager RTF {manifest['build']['golden_eager_rtf']}, "
        f"bundle RTF {manifest['build']['golden_compiled_rtf']} on the golden audio)")
    return BuildResult(path=path, report={"name": recipe.name, "version": recipe.version, "components": reports, "bundle": manifest})


def _feature_dim(component_recipe_: Any) -> int:
    """The feature width a component's source gives (encoder) or takes (synthesizer), read from its weights."""
    from ..components import get_component

    source = component_recipe_.source
    return int(get_component(source.component).load(source).spec.feature_dim)


def _preflight(recipe: Any, recipes: dict[str, Any]) -> None:
    voice_dim, encoder_dim = _feature_dim(recipes["synthesizer"]), _feature_dim(recipes["encoder"])
    if encoder_dim != voice_dim:
        raise RecipeError(
            f"{recipe.recipe_path}: the encoder gives {encoder_dim}-dim features but the voice takes {voice_dim} "
            f"(set source.features: {'v1' if voice_dim == 256 else 'v2'} for {recipe.encoder.recipe})"
        )
    if recipe.index is not None:
        from ..convert.retrieval import RetrievalIndex

        RetrievalIndex.load(recipe.index, voice_dim)  # InputError naming the file: unreadable, wrong width, no faiss


def _close(model: Any) -> None:
    close = getattr(model, "close", None)
    if callable(close):
        close()
