"""Fuzzing the readers of untrusted files: the checkpoint loader, the recipe parser, the manifest reader.

The property, for every generated input: the reader returns a value, or raises the documented
``RvcCompileError`` subclass whose message is one line naming the file; on the command line that is
exit code 2 (``verify``: 1 for a failed integrity check) and one stderr line, never a traceback.

Example counts are modest and derandomized (the same examples every run, no flaky CI); the ``slow``
variants draw many more, randomly. ``tests/fuzz_atheris.py`` runs coverage-guided fuzzing of the same
targets when atheris is installed (``test_atheris_finds_no_crash``).
"""

from __future__ import annotations

import collections
import copy
import hashlib
import io
import json
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rvc_compile.artifact.manifest import MANIFEST, MANIFEST_DIGEST, check_integrity, check_sections, read_manifest
from rvc_compile.components.synthesizer.checkpoint import load_checkpoint
from rvc_compile.cli import cli
from rvc_compile.errors import ArtifactError, CheckpointError, InputError, RecipeError, RvcCompileError
from rvc_compile.recipe.schema import load_recipe

from conftest import TINY_RECIPE, run_cli

SUPPRESS = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]


def fuzz_settings(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, derandomize=True, suppress_health_check=SUPPRESS, database=None)


def long_settings(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, suppress_health_check=SUPPRESS, database=None)


class Blob(bytes):
    """Bytes that print as their size and hash: failing examples stay readable (the file itself is kept)."""

    def __repr__(self) -> str:
        return f"<{len(self)} bytes, sha256 {hashlib.sha256(self).hexdigest()[:16]}>"


class Drawn:
    """A generated value that prints briefly (a payload holds hundreds of tensors)."""

    def __init__(self, value: Any, label: str):
        self.value, self.label = value, label

    def __repr__(self) -> str:
        return f"<{self.label}>"


def check_error(exc: BaseException, kind: type, path: Path | None = None) -> str:
    """The documented failure: ``kind``, one line, naming ``path``; returns a short label for the tally."""
    assert isinstance(exc, kind), f"{type(exc).__name__}: {exc}"
    message = str(exc)
    assert message and "\n" not in message and len(message) < 2000, message[:500]
    if path is not None:
        assert str(path) in message, message
    return type(exc).__name__


# -- generic data -------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20), st.sampled_from(["v1", "v2", "40k", "48k", "32k", "1", "0", "HiFi-GAN", "RefineGAN", ""]),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**64), max_value=2**64), st.floats(allow_nan=False), st.text(max_size=20)),
    lambda children: st.one_of(st.lists(children, max_size=5), st.dictionaries(st.text(max_size=12), children, max_size=5)),
    max_leaves=25,
)


def small_tensors() -> st.SearchStrategy:
    dtypes = st.sampled_from([torch.float16, torch.float32, torch.float64, torch.bfloat16, torch.int64, torch.uint8, torch.bool, torch.complex64])
    shapes = st.lists(st.integers(min_value=0, max_value=4), max_size=4)
    return st.builds(lambda dtype, shape: torch.zeros(shape).to(dtype), dtypes, shapes)


safe_values = st.recursive(
    st.one_of(scalars, small_tensors(), st.binary(max_size=16)),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.tuples(children, children), st.dictionaries(st.text(max_size=10), children, max_size=4),
        st.builds(collections.OrderedDict, st.dictionaries(st.text(max_size=10), children, max_size=3)),
    ),
    max_leaves=12,
)


# -- the checkpoint loader ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_checkpoint(checkpoint_factory) -> tuple[bytes, dict[str, Any], list[tuple[int, int]]]:
    """The bytes of a real small checkpoint, its payload, and the byte spans that hold structure (the
    pickle, every zip header and the central directory) rather than tensor data."""
    path = checkpoint_factory()
    data = path.read_bytes()
    spans = []
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            start = info.header_offset
            header = 30 + len(info.filename.encode()) + len(info.extra)
            spans.append((start, start + header))
            if info.filename.endswith("data.pkl"):
                spans.append((start + header, start + header + info.compress_size))
        spans.append((data.find(b"PK\x01\x02"), len(data)))
    return data, torch.load(path, weights_only=True), spans


@st.composite
def byte_mutations(draw, data: bytes, spans: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        if draw(st.booleans()):
            low, high = draw(st.sampled_from(spans))
        else:
            low, high = 0, len(out)
        if not out:
            break
        low = min(low, len(out) - 1)
        high = max(low + 1, min(high, len(out)))
        position = draw(st.integers(min_value=low, max_value=high - 1))
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        if kind == "flip":
            out[position] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif kind == "set":
            out[position] = draw(st.sampled_from([0, 0xFF, 0x7F, 0x80, ord("."), ord("("), ord("q")]))
        elif kind == "insert":
            out[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del out[position : position + draw(st.integers(min_value=1, max_value=8))]
        else:
            del out[position:]
    return Blob(out)


def _load_tally(path: Path, row: Any) -> None:
    try:
        load_checkpoint(path)
    except RvcCompileError as exc:
        row.observe(check_error(exc, CheckpointError, path))
    else:
        row.observe("loaded")
    row.count += 1


def _mutated_bytes_test(tmp_path: Path, real_checkpoint: Any, hostile: Any, examples_label: str, run) -> None:
    data, _payload, spans = real_checkpoint
    row = hostile.case("Fuzzing: checkpoint loader", f"a real small checkpoint with 1-4 byte flips, insertions, deletions or a truncation, half aimed at the pickle and zip headers ({examples_label})",
                       count=0, expect="loads, or CheckpointError in one line naming the file")
    path = tmp_path / "mutated.pth"

    @run
    @given(mutated=byte_mutations(data, spans))
    def check(mutated: bytes) -> None:
        path.write_bytes(mutated)
        _load_tally(path, row)

    check()


def test_fuzz_checkpoint_bytes(tmp_path, real_checkpoint, hostile):
    _mutated_bytes_test(tmp_path, real_checkpoint, hostile, "derandomized", fuzz_settings(150))


@pytest.mark.slow
def test_fuzz_checkpoint_bytes_long(tmp_path, real_checkpoint, hostile):
    _mutated_bytes_test(tmp_path, real_checkpoint, hostile, "random, long run", long_settings(1500))


MEMBER_NAMES = ["archive/data.pkl", "archive/data/0", "archive/data/1", "archive/version", "archive/byteorder", "archive/.data/version",
                "data.pkl", "x/data.pkl", "archive/data/../../data.pkl", "archive/constants.pkl"]


@st.composite
def zip_archives(draw) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for _ in range(draw(st.integers(min_value=0, max_value=5))):
            name = draw(st.one_of(st.sampled_from(MEMBER_NAMES), st.text(min_size=1, max_size=20)))
            content = draw(st.one_of(
                st.binary(max_size=64),
                st.builds(lambda value: pickle.dumps(value, protocol=2), st.recursive(scalars.filter(lambda v: not isinstance(v, float) or v == v), lambda c: st.lists(c, max_size=3), max_leaves=6)),
                st.sampled_from([b"3\n", b"little", b"big", b"\x80\x02}q\x00.", b"\x80\x02]q\x00."]),
            ))
            method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
            try:
                archive.writestr(zipfile.ZipInfo(name), content, compress_type=method)
            except (ValueError, UnicodeEncodeError):
                continue
    return Blob(buffer.getvalue())


def _zip_test(tmp_path: Path, hostile: Any, label: str, run) -> None:
    row = hostile.case("Fuzzing: checkpoint loader", f"zip archives of random members (torch's member names, random names; random bytes, small pickles) ({label})",
                       count=0, expect="CheckpointError in one line naming the file")
    path = tmp_path / "members.pth"

    @run
    @given(archive=zip_archives())
    def check(archive: bytes) -> None:
        path.write_bytes(archive)
        _load_tally(path, row)

    check()


def test_fuzz_checkpoint_zip_members(tmp_path, hostile):
    _zip_test(tmp_path, hostile, "derandomized", fuzz_settings(100))


@st.composite
def payloads(draw, real: dict[str, Any]) -> Any:
    """RVC-shaped payloads: the real one with 1-3 entries changed, or a random mapping of safe types."""
    if draw(st.integers(min_value=0, max_value=4)) == 0:
        keys = st.one_of(st.sampled_from(["weight", "config", "info", "sr", "f0", "version", "model", "iteration", "vocoder"]), st.text(max_size=8))
        return Drawn(draw(st.one_of(safe_values, st.dictionaries(keys, safe_values, max_size=6))), "random payload")
    payload = copy.copy(real)
    payload["weight"] = dict(real["weight"])
    payload["config"] = list(real["config"])
    names = sorted(real["weight"])
    changes = []
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        where = draw(st.sampled_from(["weight", "config", "top"]))
        if where == "weight" and not isinstance(payload.get("weight"), dict) or where == "config" and not isinstance(payload.get("config"), list):
            where = "top"
        changes.append(where)
        if where == "weight":
            name = draw(st.one_of(st.sampled_from(names), st.text(max_size=12)))
            if draw(st.booleans()) and name in payload["weight"]:
                del payload["weight"][name]
            else:
                payload["weight"][name] = draw(st.one_of(small_tensors(), st.builds(lambda t: t.half(), small_tensors()), safe_values))
        elif where == "config":
            index = draw(st.integers(min_value=0, max_value=19))
            if index < len(payload["config"]):
                payload["config"][index] = draw(safe_values)
            else:
                payload["config"].append(draw(safe_values))
        else:
            key = draw(st.sampled_from(["weight", "config", "info", "sr", "f0", "version", "vocoder", "model"]))
            if draw(st.booleans()) and key in payload:
                del payload[key]
            else:
                payload[key] = draw(safe_values)
    return Drawn(payload, "real payload, changed: " + ", ".join(changes))


def _payload_test(tmp_path: Path, real_checkpoint: Any, hostile: Any, label: str, run) -> None:
    _data, real, _spans = real_checkpoint
    row = hostile.case("Fuzzing: checkpoint loader", f"pickles of safe types (tensors of every dtype and shape, scalars, nested lists/dicts): the real payload with 1-3 entries changed, or random ({label})",
                       count=0, expect="loads, or CheckpointError in one line naming the file")
    path = tmp_path / "payload.pth"

    @run
    @given(payload=payloads(real))
    def check(payload: Drawn) -> None:
        torch.save(payload.value, path)
        _load_tally(path, row)

    check()


def test_fuzz_checkpoint_payloads(tmp_path, real_checkpoint, hostile):
    _payload_test(tmp_path, real_checkpoint, hostile, "derandomized", fuzz_settings(150))


@pytest.mark.slow
def test_fuzz_checkpoint_payloads_long(tmp_path, real_checkpoint, hostile):
    _payload_test(tmp_path, real_checkpoint, hostile, "random, long run", long_settings(700))


def test_fuzz_checkpoint_raw_pickle_opcodes(tmp_path, hostile):
    row = hostile.case("Fuzzing: checkpoint loader", "random bytes after a pickle protocol header (\\x80\\x02): arbitrary opcode streams",
                       count=0, expect="CheckpointError in one line naming the file")
    path = tmp_path / "opcodes.pth"
    opcodes = st.sampled_from(list(b"()]}.aestu0123NIJKLMXhjpqrq\x85\x86\x87\x88\x89\x8c\x93\x94\x95R"))

    @fuzz_settings(150)
    @given(body=st.one_of(st.binary(max_size=64), st.lists(opcodes, max_size=40).map(bytes)))
    def check(body: bytes) -> None:
        path.write_bytes(b"\x80\x02" + body)
        _load_tally(path, row)

    check()


# -- the recipe parser ----------------------------------------------------------------------------

@pytest.fixture()
def recipe_text(tmp_path, checkpoint_factory) -> str:
    return TINY_RECIPE.format(name="fuzz", checkpoint=checkpoint_factory(), output=tmp_path / "artifacts")


def _load_recipe_tally(path: Path, row: Any, overrides: list[str] | None = None) -> None:
    try:
        load_recipe(path, overrides)
    except RvcCompileError as exc:
        # An error in a --set value names the flag and key path instead of the file.
        row.observe(check_error(exc, RecipeError, None if str(exc).startswith("--set ") else path))
    else:
        row.observe("loaded")
    row.count += 1


YAML_PIECES = [":", "-", "[", "]", "{", "}", "&a", "*a", "!!python/object:os.system", "!!binary", "|", ">", "'", '"', "#", "%", "@", "`",
               "\n", "\t", " ", "~", "null", ".nan", ".inf", "1e400", "0x1F", "2001-12-14", "<<: *a", "---", "...", "\x00", "\ufeff", "\\u0000"]


def test_fuzz_recipe_text_mutations(tmp_path, recipe_text, hostile):
    row = hostile.case("Fuzzing: recipe parser", "the tiny recipe's text with 1-6 insertions, deletions or replacements of YAML syntax (anchors, aliases, tags, NaN, tabs, NUL, BOM...)",
                       count=0, expect="a Recipe, or RecipeError in one line naming the file")
    path = tmp_path / "recipe.yaml"

    @fuzz_settings(300)
    @given(edits=st.lists(st.tuples(st.floats(min_value=0, max_value=1), st.sampled_from(["insert", "delete", "replace"]),
                                    st.one_of(st.sampled_from(YAML_PIECES), st.text(max_size=6))), min_size=1, max_size=6))
    def check(edits: list) -> None:
        text = recipe_text
        for where, kind, piece in edits:
            position = int(where * len(text))
            if kind == "insert":
                text = text[:position] + piece + text[position:]
            elif kind == "delete":
                text = text[:position] + text[position + len(piece) + 1:]
            else:
                text = text[:position] + piece + text[position + len(piece):]
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        _load_recipe_tally(path, row)

    check()


@st.composite
def recipe_documents(draw, real: dict[str, Any]) -> Any:
    """The real recipe with 1-4 values replaced by random data, or an entirely random YAML document."""
    if draw(st.integers(min_value=0, max_value=4)) == 0:
        return draw(json_values)
    document = copy.deepcopy(real)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        node, parent, key = document, None, None
        while isinstance(node, (dict, list)) and node and draw(st.integers(min_value=0, max_value=2)) > 0:
            parent = node
            key = draw(st.sampled_from(sorted(node))) if isinstance(node, dict) else draw(st.integers(min_value=0, max_value=len(node) - 1))
            node = node[key]
        if parent is None:
            document[draw(st.text(max_size=10))] = draw(json_values)
        elif draw(st.booleans()) and isinstance(parent, dict):
            del parent[key]
        else:
            parent[key] = draw(st.one_of(json_values, st.sampled_from([float("nan"), float("inf"), 10**30, -1, 0, "", [], {}])))
    return document


def test_fuzz_recipe_documents(tmp_path, recipe_text, hostile):
    real = yaml.safe_load(recipe_text)
    real["passes"] = [{"name": "fold_weight_norm"}, {"name": "fold_speaker", "speaker": 0}, {"name": "simplify"}]
    real["calibration"] = {"source": "generated", "count": 2}
    row = hostile.case("Fuzzing: recipe parser", "YAML documents: the tiny recipe (with passes and calibration) with 1-4 values replaced by random data, or random documents",
                       count=0, expect="a Recipe, or RecipeError in one line naming the file")
    path = tmp_path / "recipe.yaml"

    @fuzz_settings(300)
    @given(document=recipe_documents(real))
    def check(document: Any) -> None:
        path.write_text(yaml.safe_dump(document, allow_unicode=True))
        _load_recipe_tally(path, row)

    check()


KEY_PATHS = ["name", "version", "source.checkpoint", "source.sha256", "target.threads", "target.backend", "shapes.max_frames", "shapes.check_frames",
             "passes", "passes.0", "passes.0.name", "passes.5.speaker", "golden.seconds", "golden.seconds.0", "latency.goals", "calibration.count",
             "accuracy.min_snr_db", "name.x", "[0]", "", ".", "a..b", "passes[0]", "shapes.0"]


def test_fuzz_recipe_overrides(tmp_path, recipe_text, hostile):
    row = hostile.case("Fuzzing: recipe parser", "--set overrides: real and random key paths (indices, empty parts) with random YAML values",
                       count=0, expect="a Recipe, or RecipeError in one line naming the file")
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe_text)

    @fuzz_settings(200)
    @given(overrides=st.lists(st.tuples(st.one_of(st.sampled_from(KEY_PATHS), st.text(max_size=10)),
                                        st.one_of(st.sampled_from(YAML_PIECES), st.text(max_size=12), json_values.map(json.dumps)),
                                        st.booleans()), min_size=1, max_size=3))
    def check(overrides: list) -> None:
        _load_recipe_tally(path, row, [f"{key}={value}" if with_equals else f"{key}{value}" for key, value, with_equals in overrides])

    check()


def test_yaml_alias_bomb_and_deep_nesting_are_refused_quickly(tmp_path, recipe_text, hostile):
    """'Billion laughs': nine levels of nine aliases; and nesting deeper than the parser's recursion."""
    import time

    hostile.case("Fuzzing: recipe parser", "YAML alias bomb (9 levels x 9 aliases = 387M values from 1 KB), in the file and in --set", count=2,
                 expect="RecipeError 'expands to more than 100000 values' within seconds (it used to hang)")
    hostile.case("Fuzzing: recipe parser", "YAML nested 5000 deep (flow lists and mappings)", count=2, expect="RecipeError 'nested too deeply'")
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(recipe_text + "\n".join(lines) + "\n")
    start = time.perf_counter()
    with pytest.raises(RecipeError, match="expands to more than"):
        load_recipe(bomb)
    good = tmp_path / "good.yaml"
    good.write_text(recipe_text)
    with pytest.raises(RecipeError, match="expands to more than"):
        levels = ", ".join(f"&b{i} [" + ",".join([f"*b{i - 1}"] * 9) + "]" for i in range(1, 9))
        load_recipe(good, ["golden.seconds=[&b0 [1,1,1,1,1,1,1,1,1], " + levels + "]"])
    assert time.perf_counter() - start < 20
    for name, text in (("deep-list", "[" * 5000 + "]" * 5000), ("deep-map", "{a: " * 5000 + "1" + "}" * 5000)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        with pytest.raises(RecipeError, match="nested too deeply") as info:
            load_recipe(path)
        check_error(info.value, RecipeError, path)


# -- the manifest reader --------------------------------------------------------------------------

def reseal(directory: Path, manifest: Any) -> None:
    """Write ``manifest`` with a matching manifest.sha256: tampering by someone who knows the format."""
    text = json.dumps(manifest, indent=2) + "\n"
    (directory / MANIFEST).write_text(text)
    (directory / MANIFEST_DIGEST).write_text(f"{hashlib.sha256(text.encode()).hexdigest()}  {MANIFEST}\n")


def test_fuzz_manifest_random_json(tmp_path, tiny_artifact, hostile):
    row = hostile.case("Fuzzing: manifest reader", "manifest.json replaced by random JSON (and random text), in a copy of a real artifact",
                       count=0, expect="ArtifactError in one line naming the manifest, or integrity problems listed")
    directory = tmp_path / "artifact"
    shutil.copytree(tiny_artifact, directory)
    real = json.loads((tiny_artifact / MANIFEST).read_text())

    @fuzz_settings(250)
    @given(document=st.one_of(json_values, st.builds(lambda extra: {**real, **extra}, st.dictionaries(st.sampled_from(sorted(real)), json_values, max_size=3))),
           raw=st.one_of(st.none(), st.text(max_size=40)))
    def check(document: Any, raw: str | None) -> None:
        (directory / MANIFEST).write_text(raw if raw is not None else json.dumps(document))
        try:
            manifest = read_manifest(directory)
            check_sections(manifest, directory)
            problems = check_integrity(directory)
            row.observe("integrity problems" if problems else "intact")
        except RvcCompileError as exc:
            row.observe(check_error(exc, ArtifactError, directory))
        row.count += 1

    check()


def _json_paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    paths = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            paths += _json_paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            paths += _json_paths(item, prefix + (index,))
    return paths


@st.composite
def manifest_mutations(draw, real: dict[str, Any]) -> Any:
    manifest = copy.deepcopy(real)
    paths = [path for path in _json_paths(real) if path and path[0] not in ("files", "library_versions", "source", "recipe", "report", "created")]
    changed: list[str] = []
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(paths))
        parent = manifest
        try:
            for key in path[:-1]:
                parent = parent[key]
            if draw(st.integers(min_value=0, max_value=3)) == 0 and isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = draw(st.one_of(json_values, st.sampled_from([0, -1, 10**12, 2**70, 1.5, "", None, [], {}, "features", "golden/golden-0.1s.npz", "model.onnx"])))
        except (KeyError, IndexError, TypeError):
            continue
        changed.append(".".join(map(str, path)))
    return Drawn(manifest, "manifest, changed: " + ", ".join(changed))


def _manifest_runtime_test(tmp_path: Path, artifact: Path, hostile: Any, label: str, run) -> None:
    from rvc_compile import runtime
    from rvc_compile.verify.gates import verify_artifact

    row = hostile.case("Fuzzing: manifest reader", f"a real manifest ({label}) with 1-3 values changed or removed (model, signature, backend, golden, latency, budget...) and resealed, then runtime.load + infer and verify",
                       count=0, expect="works, or ArtifactError/InputError in one line naming the artifact")
    directory = tmp_path / "artifact"
    shutil.copytree(artifact, directory)
    real = json.loads((artifact / MANIFEST).read_text())
    features = np.zeros((12, 768), np.float32)
    f0 = np.full(12, 150.0, np.float32)

    @run
    @given(manifest=manifest_mutations(real))
    def check(manifest: Drawn) -> None:
        reseal(directory, manifest.value)
        try:
            voice = runtime.load(directory)
            voice.infer(features, f0 if voice.has_f0 else None, speaker=voice.fixed_speaker or 0, noise="seed:1")
            result = verify_artifact(directory, skip_latency=False)
            row.observe("verify passed" if result["passed"] else "verify failed a gate")
        except RvcCompileError as exc:
            row.observe(check_error(exc, (ArtifactError, InputError), None))
            assert str(directory) in str(exc) or str(exc).startswith("noise:"), str(exc)
        row.count += 1

    check()


def test_fuzz_manifest_values_onnxruntime(tmp_path, tiny_artifact, hostile):
    _manifest_runtime_test(tmp_path, tiny_artifact, hostile, "onnxruntime", fuzz_settings(50))


@pytest.mark.slow
def test_fuzz_manifest_values_openvino(tmp_path, tiny_openvino_artifact, hostile):
    _manifest_runtime_test(tmp_path, tiny_openvino_artifact, hostile, "openvino", fuzz_settings(60))


# -- the command line -----------------------------------------------------------------------------

def _cli_outcome(args: list[str], allowed: set[int], row: Any, failures: list) -> int:
    result = CliRunner().invoke(cli, args, catch_exceptions=True)
    assert result.exception is None or isinstance(result.exception, SystemExit), (args, repr(result.exception))
    assert result.exit_code in allowed, (args, result.exit_code, result.stderr)
    if result.exit_code == 2:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, (args, result.stderr)
        failures.append(args)
    row.observe(f"exit {result.exit_code}")
    row.count += 1
    return result.exit_code


def test_fuzz_cli_exit_codes(tmp_path, real_checkpoint, recipe_text, tiny_artifact, hostile):
    """The same generators through the click command line: exit 2 and one 'error:' line on stderr, then a
    few of the failing inputs again in real subprocesses (stderr exactly one line, no traceback)."""
    data, _real, spans = real_checkpoint
    failures: dict[str, list] = {"inspect": [], "build": [], "verify": []}
    rows = {
        "inspect": hostile.case("Fuzzing: command line", "`rvc-compile inspect` on mutated checkpoints", count=0, expect="exit 0, or exit 2 with one 'error:' line"),
        "build": hostile.case("Fuzzing: command line", "`rvc-compile build` on mutated recipes (checkpoint path missing, so a valid recipe stops at loading it)", count=0,
                              expect="exit 2 with one 'error:' line; no artifact folder"),
        "verify": hostile.case("Fuzzing: command line", "`rvc-compile verify` on artifacts with mutated manifests, not resealed", count=0,
                               expect="exit 1 (integrity) or 2 (unusable) with one 'error:' line"),
    }

    @fuzz_settings(40)
    @given(mutated=byte_mutations(data, spans))
    def inspect(mutated: bytes) -> None:
        path = tmp_path / f"inspect-{len(failures['inspect'])}.pth"
        path.write_bytes(mutated)
        _cli_outcome(["inspect", str(path)], {0, 2}, rows["inspect"], failures["inspect"])

    missing = recipe_text.replace(str(Path(yaml.safe_load(recipe_text)["source"]["checkpoint"])), str(tmp_path / "absent.pth"))

    @fuzz_settings(40)
    @given(edits=st.lists(st.tuples(st.floats(min_value=0, max_value=1), st.sampled_from(YAML_PIECES)), min_size=1, max_size=4))
    def build(edits: list) -> None:
        text = missing
        for where, piece in edits:
            position = int(where * len(text))
            text = text[:position] + piece + text[position:]
        path = tmp_path / f"build-{len(failures['build'])}.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        _cli_outcome(["build", str(path), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")], {2}, rows["build"], failures["build"])
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("manifest.json"))

    directory = tmp_path / "artifact"
    shutil.copytree(tiny_artifact, directory)
    manifest_text = (tiny_artifact / MANIFEST).read_text()

    @fuzz_settings(40)
    @given(edits=st.lists(st.tuples(st.floats(min_value=0, max_value=1), st.one_of(st.sampled_from(['"', "{", "}", ",", "0", "-1", "null", "[]", "1e999"]), st.text(max_size=4))),
                          min_size=1, max_size=3))
    def verify(edits: list) -> None:
        text = manifest_text
        for where, piece in edits:
            position = int(where * len(text))
            text = text[:position] + piece + text[position + 1:]
        assume(text != manifest_text)  # replacing a character by itself changes nothing
        (directory / MANIFEST).write_text(text, encoding="utf-8", errors="surrogatepass")
        code = _cli_outcome(["verify", str(directory), "--skip-latency"], {1, 2}, rows["verify"], failures["verify"])
        if code == 1:
            failures["verify"].append(["verify", str(directory), "--skip-latency"])

    inspect()
    build()
    verify()
    samples = hostile.case("Fuzzing: command line", "failing inputs from the three fuzzers above, rerun as real `rvc-compile` processes", count=0,
                           expect="same exit code; stderr exactly one line; no traceback")
    for command, found in failures.items():
        for args in found[:2]:
            if command == "verify":  # the directory is rewritten each example: replay the last manifest only
                args = ["verify", str(directory), "--skip-latency"]
            process = run_cli(*args)
            assert process.returncode in ({2} if command != "verify" else {1, 2}), (args, process.returncode, process.stderr)
            assert "Traceback" not in process.stderr
            if process.returncode == 2:
                assert len(process.stderr.strip().splitlines()) == 1, process.stderr
            samples.count += 1
            samples.observe(f"{command} exit {process.returncode}")


# -- coverage-guided fuzzing (atheris) ------------------------------------------------------------

def test_inputs_atheris_found_stay_fixed(tmp_path, checkpoint_factory, hostile):
    """Regressions from atheris runs, rebuilt from what made them fail."""
    import struct

    original = checkpoint_factory().read_bytes()
    cases = {
        # (offset of the field, its struct format, the value): what atheris changed
        "a zip central directory claiming 'version needed to extract 6.4' (zipfile raised NotImplementedError)": (original.find(b"PK\x01\x02") + 6, "<H", 64),
        "a zip64 end locator claiming 2 disks (zipfile.is_zipfile itself raised BadZipFile)": (original.rfind(b"PK\x06\x07") + 16, "<I", 2),
    }
    for name, (offset, layout, value) in cases.items():
        row = hostile.case("Fuzzing: checkpoint loader", f"found by atheris: {name}", expect="CheckpointError 'corrupt checkpoint archive'")
        data = bytearray(original)
        struct.pack_into(layout, data, offset, value)
        path = tmp_path / "found.pth"
        path.write_bytes(bytes(data))
        with pytest.raises(CheckpointError, match="corrupt checkpoint archive") as info:
            load_checkpoint(path)
        row.observe(check_error(info.value, CheckpointError, path))


@pytest.mark.slow
@pytest.mark.parametrize("target", ["checkpoint", "recipe", "manifest"])
def test_atheris_finds_no_crash(tmp_path, target, checkpoint_factory, tiny_artifact, hostile):
    """libFuzzer-driven runs of ``tests/fuzz_atheris.py`` (60 s per target): any exception other than the
    documented error is a crash, and libFuzzer exits non-zero with the input saved."""
    import subprocess
    import sys

    pytest.importorskip("atheris")
    row = hostile.case("Fuzzing: " + {"checkpoint": "checkpoint loader", "recipe": "recipe parser", "manifest": "manifest reader"}[target],
                       f"atheris (coverage-guided libFuzzer) on the {target} reader for 60 s, seeded with a real {target}", count=0,
                       expect="no input ends in anything but the documented one-line error")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    seed = {"checkpoint": checkpoint_factory().read_bytes(), "recipe": TINY_RECIPE.format(name="seed", checkpoint=checkpoint_factory(), output=tmp_path).encode(),
            "manifest": (tiny_artifact / MANIFEST).read_bytes()}[target]
    (corpus / "seed").write_bytes(seed)
    process = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("fuzz_atheris.py")), target, str(tiny_artifact), str(corpus), "-max_total_time=60",
         "-rss_limit_mb=4096", f"-artifact_prefix={tmp_path}/", "-print_final_stats=1"],
        capture_output=True, text=True, timeout=600,
    )
    runs = [line for line in process.stderr.splitlines() if "stat::number_of_executed_units" in line]
    row.count = int(runs[-1].split(":")[-1]) if runs else 0
    assert process.returncode == 0, process.stderr[-3000:]
    assert row.count > 0, process.stderr[-2000:]
