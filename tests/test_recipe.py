"""The recipe schema: typed loading, errors that name key path and line, overrides, JSON Schema."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from rvc_compile.errors import RecipeError
from rvc_compile.recipe.schema import load_recipe, recipe_json_schema, recipe_sha256, recipe_to_dict

ROOT = Path(__file__).resolve().parent.parent

BASE = """\
name: voice
version: 1.2.3
source:
  checkpoint: voices/voice.pth
target:
  backend: onnxruntime
  threads: 2
passes:
  - name: fold_speaker
    speaker: 1
  - name: simplify
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_defaults_paths_and_passes(tmp_path):
    recipe = load_recipe(write(tmp_path, BASE))
    assert recipe.source.checkpoint == tmp_path / "voices" / "voice.pth"  # relative to the recipe file
    assert recipe.output_dir == tmp_path / "out" / "artifacts"
    assert recipe.target.precision == "fp32" and recipe.capture.exporter == "dynamo"
    assert [p.name for p in recipe.passes] == ["fold_speaker", "simplify"]
    assert recipe.passes[0].params.speaker == 1 and recipe.passes[1].params.tool == "onnxslim"
    assert recipe.shapes.check_lengths() == [10, 200, 3000]
    assert recipe.accuracy.min_snr_db == 40.0


@pytest.mark.parametrize("text,fragments", [
    (BASE.replace("  threads: 2", "  threads: 2\n  thread: 3"), ["recipe.yaml:8:", "target.thread", "did you mean 'threads'"]),
    (BASE.replace("threads: 2", "threads: two"), ["recipe.yaml:7:", "target.threads", "expected an integer"]),
    (BASE.replace("threads: 2", "threads: 2.5"), ["target.threads", "expected an integer"]),
    (BASE.replace("backend: onnxruntime", "backend: onnx"), ["target.backend", "expected one of"]),
    (BASE.replace("speaker: 1", "speakr: 1"), ["recipe.yaml:10:", "passes.0.speakr", "did you mean 'speaker'"]),
    (BASE.replace("- name: simplify", "- name: simplfy"), ["passes.1.name", "did you mean 'simplify'"]),
    (BASE.replace("version: 1.2.3", "version: 1.2.x"), ["version", "semantic version"]),
    (BASE.replace("version: 1.2.3", "version: 1.2"), ["recipe.yaml:2:", "version: expected a string, got 1.2"]),
    (BASE.replace("source:\n  checkpoint: voices/voice.pth\n", "source: {}\n"), ["source.checkpoint", "required key is missing"]),
    (BASE + "shapes:\n  min_frames: 100\n  max_frames: 50\n", ["shapes", "min_frames <= opt_frames"]),
    (BASE + "shapes:\n  mode: static\n", ["shapes.chunk_frames", "static mode"]),
    (BASE + "latency:\n  seconds: [1.0]\n  goals:\n    - {seconds: 2.0, max_rtf: 1}\n", ["latency.goals.0.seconds", "not one of"]),
    (BASE + "golden:\n  noise: random\n", ["golden.noise"]),
    (BASE + "target:\n  threads: 1\n", ["recipe.yaml:", "target", "duplicate key"]),
    ("name: [unclosed\n", ["not valid YAML"]),
    ("- just\n- a list\n", ["a recipe is a mapping"]),
    ("", ["empty"]),
])
def test_errors_name_the_key_path_and_line(tmp_path, text, fragments):
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_overrides_set_nested_keys_list_items_and_keep_strings(tmp_path):
    recipe = load_recipe(write(tmp_path, BASE), [
        "target.threads=4", "passes.0.speaker=3", "passes[1].tool=onnxsim", "source.sha256=" + "0" * 64,
        "shapes.max_frames=500", "latency.seconds=[0.5, 1.0]",
    ])
    assert recipe.target.threads == 4 and recipe.passes[0].params.speaker == 3 and recipe.passes[1].params.tool == "onnxsim"
    assert recipe.source.sha256 == "0" * 64  # YAML would read the digits as the integer 0
    assert recipe.shapes.max_frames == 500 and recipe.latency.seconds == [0.5, 1.0]


@pytest.mark.parametrize("override,fragment", [
    ("target.thread=4", "--set: target.thread: unknown key"),
    ("passes.5.speaker=1", "no item 5"),
    ("target.threads", "KEY.PATH=VALUE"),
    ("target.threads=fast", "--set: target.threads: expected an integer"),
])
def test_bad_overrides_are_recipe_errors(tmp_path, override, fragment):
    with pytest.raises(RecipeError, match=fragment.replace(".", r"\.").replace("[", r"\[")):
        load_recipe(write(tmp_path, BASE), [override])


def test_override_paths_are_relative_to_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(write(tmp_path / "sub", BASE), ["source.checkpoint=mine.pth"])
    assert recipe.source.checkpoint == tmp_path / "mine.pth"
    assert recipe.output_dir == tmp_path / "sub" / "out" / "artifacts"


def test_resolved_recipe_and_its_hash_are_stable(tmp_path):
    first = load_recipe(write(tmp_path, BASE))
    second = load_recipe(write(tmp_path, BASE.replace("threads: 2", "threads: 2  # same")))
    assert recipe_to_dict(first) == recipe_to_dict(second)
    assert recipe_sha256(first) == recipe_sha256(second)
    assert recipe_sha256(first) != recipe_sha256(load_recipe(write(tmp_path, BASE), ["target.threads=3"]))
    json.dumps(recipe_to_dict(first))  # plain JSON


def _validate(instance, schema):
    """A small JSON Schema check (objects, additionalProperties, enums, types) without extra packages."""
    if "anyOf" in schema:
        errors = [e for option in schema["anyOf"] for e in [_validate(instance, option)] if e]
        return errors[0] if len(errors) == len(schema["anyOf"]) else None
    if "oneOf" in schema:
        passing = [option for option in schema["oneOf"] if not _validate(instance, option)]
        return None if len(passing) == 1 else f"{instance!r} matches {len(passing)} variants"
    if "const" in schema and instance != schema["const"]:
        return f"{instance!r} != {schema['const']!r}"
    if "enum" in schema and instance not in schema["enum"]:
        return f"{instance!r} not in {schema['enum']}"
    kind = schema.get("type")
    types = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float), "boolean": bool, "null": type(None)}
    if kind and not isinstance(instance, types[kind]):
        return f"{instance!r} is not {kind}"
    if kind == "object":
        for key in schema.get("required", []):
            if key not in instance:
                return f"missing {key}"
        for key, value in instance.items():
            if key not in schema["properties"]:
                return f"unknown {key}"
            error = _validate(value, schema["properties"][key])
            if error:
                return f"{key}: {error}"
    if kind == "array":
        for item in instance:
            error = _validate(item, schema["items"])
            if error:
                return error
    return None


def test_json_schema_accepts_the_shipped_recipes_and_rejects_unknown_keys():
    import yaml

    schema = recipe_json_schema()
    assert schema["properties"]["target"]["properties"]["precision"]["enum"] == ["auto", "fp32", "fp16", "bf16", "int8"]
    assert schema["properties"]["target"]["properties"]["cpu"]["enum"] == ["auto", "portable", "avx2", "avx2-vnni", "avx512", "avx512-vnni", "avx512-bf16", "amx"]
    recipes = [*sorted((ROOT / "recipes").glob("*.yaml")), *sorted((ROOT / "recipes" / "gpu").glob("*.yaml")),
               *sorted((ROOT / "recipes" / "stream").glob("*.yaml"))]
    assert recipes
    for path in recipes:
        data = yaml.safe_load(path.read_text())
        assert _validate(data, schema) is None, path
        load_recipe(path)  # and the loader agrees
    data = yaml.safe_load((ROOT / "recipes" / "demo.yaml").read_text())
    data["target"]["thread"] = 2
    assert _validate(data, schema) is not None
