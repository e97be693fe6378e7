"""The build cache: where it lives, what its keys hash, verified reads, locking between builds, maintenance."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest

import rvc_compile.cache.store as cache_module
from rvc_compile.cache.store import (
    ENV_VAR,
    Store,
    _KeyLock,
    key_ingredients,
    parse_age,
    parse_size,
    resolve_cache_dir,
    stage_key,
)
from rvc_compile.errors import NO_SPACE_ERRNOS, STORAGE_ERRNOS, CacheError, RvcCompileError

from conftest import assert_user_error, run_cli

SHA_A, SHA_B = "a" * 64, "b" * 64


def key_for(stage: str = "capture", **changes) -> str:
    ingredients = {
        "inputs": {"checkpoint": SHA_A},
        "params": {"opset": 18, "exporter": "dynamo"},
        "libraries": {"torch": "2.13.0", "onnx": "1.17.0"},
        "device": None,
    }
    ingredients.update(changes)
    return stage_key(stage, **ingredients)


def write_files(files: dict[str, bytes]):
    def producer(folder: Path) -> dict:
        for name, data in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
        return {"files_written": len(files)}
    return producer


def record_dir(store: Store, key: str) -> Path:
    return store.entry_dir(key)


# -- location -------------------------------------------------------------------------------------

def test_cache_dir_comes_from_the_flag_then_the_environment_then_the_platform(tmp_path):
    env = {"HOME": "/home/u", ENV_VAR: str(tmp_path / "from-env")}
    assert resolve_cache_dir(tmp_path / "flag", environ=env) == tmp_path / "flag"
    assert resolve_cache_dir(None, environ=env) == tmp_path / "from-env"
    assert resolve_cache_dir(None, environ={"HOME": "/home/u"}, platform="linux") == Path("/home/u/.cache/rvc-compile")
    assert resolve_cache_dir(None, environ={"HOME": "/home/u", "XDG_CACHE_HOME": "/xdg"}, platform="linux") == Path("/xdg/rvc-compile")
    # The XDG spec: a relative XDG_CACHE_HOME is invalid and ignored.
    assert resolve_cache_dir(None, environ={"HOME": "/home/u", "XDG_CACHE_HOME": "rel"}, platform="linux") == Path("/home/u/.cache/rvc-compile")
    assert resolve_cache_dir(None, environ={"HOME": "/Users/u"}, platform="darwin") == Path("/Users/u/Library/Caches/rvc-compile")
    windows = resolve_cache_dir(None, environ={"HOME": "/h", "LOCALAPPDATA": "/appdata/local"}, platform="win32")
    assert windows.parts[-3:] == ("local", "rvc-compile", "Cache")
    assert resolve_cache_dir("~/c", environ={"HOME": "/home/u"}).is_absolute()


# -- keys -----------------------------------------------------------------------------------------

def test_equal_ingredients_give_equal_keys_whatever_the_dict_order():
    first = stage_key("pass:simplify", inputs={"graph": SHA_A, "checkpoint": SHA_B}, params={"tool": "onnxslim", "level": 2},
                      libraries={"onnxslim": "0.1", "onnx": "1.17"}, device={"kind": "cpu", "flags": ["avx2"]})
    second = stage_key("pass:simplify", inputs={"checkpoint": SHA_B, "graph": SHA_A}, params={"level": 2, "tool": "onnxslim"},
                       libraries={"onnx": "1.17", "onnxslim": "0.1"}, device={"flags": ["avx2"], "kind": "cpu"})
    assert first == second and len(first) == 64 and int(first, 16) >= 0
    assert first.stage == "pass:simplify" and first.ingredients["rvc_compile"] == cache_module.__version__
    # The key is exactly the sha256 of the canonical JSON of the documented ingredients.
    ingredients = key_ingredients("pass:simplify", inputs={"graph": SHA_A, "checkpoint": SHA_B}, params={"tool": "onnxslim", "level": 2},
                                  libraries={"onnxslim": "0.1", "onnx": "1.17"}, device={"kind": "cpu", "flags": ["avx2"]})
    assert sorted(ingredients) == ["device", "inputs", "key_format", "libraries", "params", "rvc_compile", "stage"]
    canonical = json.dumps(ingredients, sort_keys=True, separators=(",", ":")).encode()
    assert first == hashlib.sha256(canonical).hexdigest() and first.ingredients == ingredients


def test_every_key_ingredient_changes_the_key(monkeypatch):
    base = key_for()
    variants = {
        "stage": key_for("export"),
        "input hash": key_for(inputs={"checkpoint": SHA_B}),
        "input name": key_for(inputs={"weights": SHA_A}),
        "extra input": key_for(inputs={"checkpoint": SHA_A, "config": SHA_B}),
        "param value": key_for(params={"opset": 17, "exporter": "dynamo"}),
        "param added": key_for(params={"opset": 18, "exporter": "dynamo", "optimize": False}),
        "param type": key_for(params={"opset": "18", "exporter": "dynamo"}),
        "library version": key_for(libraries={"torch": "2.14.0", "onnx": "1.17.0"}),
        "library added": key_for(libraries={"torch": "2.13.0", "onnx": "1.17.0", "onnxscript": "0.3"}),
        "device": key_for(device={"kind": "cpu", "flags": ["avx2"]}),
        "device flags": key_for(device={"kind": "cpu", "flags": ["avx2", "avx512f"]}),
    }
    monkeypatch.setattr(cache_module, "__version__", "9.9.9")
    variants["rvc-compile version"] = key_for()
    monkeypatch.undo()
    monkeypatch.setattr(cache_module, "KEY_FORMAT", 99)
    variants["key format"] = key_for()
    monkeypatch.undo()
    assert key_for() == base
    keys = [base, *variants.values()]
    assert len(set(keys)) == len(keys), [name for name, key in variants.items() if key == base]


def test_params_normalize_dataclasses_tuples_sets_and_refuse_paths_and_nan():
    @dataclasses.dataclass
    class Params:
        tool: str = "onnxslim"
        sizes: tuple = (1, 2)

    assert stage_key("s", inputs={}, params=Params()) == stage_key("s", inputs={}, params={"sizes": [1, 2], "tool": "onnxslim"})
    assert stage_key("s", inputs={}, params={"ops": {"b", "a", "c"}}) == stage_key("s", inputs={}, params={"ops": {"c", "a", "b"}})
    with pytest.raises(TypeError, match="sha256 in inputs"):
        stage_key("s", inputs={}, params={"calibration": Path("/data/clips")})
    with pytest.raises(ValueError, match="nan"):
        stage_key("s", inputs={}, params={"alpha": float("nan")})
    with pytest.raises(ValueError, match="64 lowercase hex"):
        stage_key("s", inputs={"checkpoint": "not-a-hash"})
    with pytest.raises(ValueError, match="stage name"):
        stage_key("", inputs={})


def test_chained_keys_invalidate_exactly_what_depends_on_a_change():
    """The issue's rules, with keys chained the documented way (each stage's input is its upstream key)."""

    def pipeline(checkpoint: str, *, backend: str = "onnxruntime", precision: str = "fp32", simplify_tool: str = "onnxslim") -> dict[str, str]:
        capture = stage_key("capture", inputs={"checkpoint": checkpoint}, params={"opset": 18}, libraries={"torch": "2.13.0"})
        simplify = stage_key("pass:simplify", inputs={"graph": capture}, params={"tool": simplify_tool}, libraries={"onnxslim": "0.1"})
        compiled = stage_key(f"backend:{backend}", inputs={"graph": simplify}, params={"precision": precision},
                             libraries={backend: "1.0"}, device={"kind": "cpu", "flags": ["avx2"]})
        return {"capture": capture, "simplify": simplify, "backend": compiled}

    base = pipeline(SHA_A)
    assert pipeline(SHA_A) == base  # nothing changed: everything is reused
    for changed in (pipeline(SHA_A, backend="openvino"), pipeline(SHA_A, precision="bf16")):
        assert changed["capture"] == base["capture"] and changed["simplify"] == base["simplify"]
        assert changed["backend"] != base["backend"]
    other_tool = pipeline(SHA_A, simplify_tool="onnxsim")
    assert other_tool["capture"] == base["capture"] and other_tool["simplify"] != base["simplify"] and other_tool["backend"] != base["backend"]
    new_checkpoint = pipeline(SHA_B)
    assert all(new_checkpoint[stage] != base[stage] for stage in base)


# -- store: reads and writes ----------------------------------------------------------------------

def test_put_then_get_round_trip_records_stage_ingredients_and_hashes(tmp_path):
    store = Store(tmp_path / "cache")
    sources = tmp_path / "outputs"
    (sources / "weights").mkdir(parents=True)
    (sources / "model.xml").write_text("<xml/>")
    (sources / "weights" / "model.bin").write_bytes(b"\x00\x01" * 1000)
    key = key_for("backend:openvino")
    assert store.get(key) is None
    with store.put(key, sources, {"precision": "bf16"}) as stored:
        assert stored.stage == "backend:openvino"
    entry = store.get(key)
    assert entry is not None
    assert sorted(entry.files) == ["model.xml", "weights/model.bin"]
    assert entry.file("weights/model.bin").read_bytes() == b"\x00\x01" * 1000
    assert entry.files["model.xml"]["sha256"] == hashlib.sha256(b"<xml/>").hexdigest()
    assert entry.meta == {"precision": "bf16"} and entry.ingredients == key.ingredients
    copied = entry.copy_to(tmp_path / "copy")
    assert (copied / "weights" / "model.bin").read_bytes() == b"\x00\x01" * 1000
    with pytest.raises(KeyError, match="model.onnx"):
        entry.file("model.onnx")
    record = json.loads((record_dir(store, key) / "entry.json").read_text())
    assert record["stage"] == "backend:openvino" and record["files"]["model.xml"]["size"] == 6
    # A second put of the same key keeps the entry already there.
    (sources / "model.xml").write_text("<different/>")
    again = store.put(key, {"model.xml": sources / "model.xml"})
    assert again.file("model.xml").read_text() == "<xml/>"
    entry.release(), again.release()
    assert not list((tmp_path / "cache" / "tmp").iterdir())


def test_get_or_create_runs_the_producer_on_a_miss_only_and_updates_last_use(tmp_path):
    store = Store(tmp_path)
    calls = []

    def producer(folder: Path) -> dict:
        calls.append(folder)
        (folder / "model.onnx").write_bytes(b"graph")
        return {"notes": "captured"}

    key = key_for()
    entry, hit = store.get_or_create(key, producer)
    assert not hit and len(calls) == 1 and entry.file("model.onnx").read_bytes() == b"graph"
    assert entry.meta == {"notes": "captured"}
    entry.release()
    marker = record_dir(store, key) / "last-used"
    os.utime(marker, (1000.0, 1000.0))
    entry, hit = store.get_or_create(key, producer)
    assert hit and len(calls) == 1
    assert entry.last_used > 1000.0 and marker.stat().st_mtime > 1000.0
    entry.release()


def test_a_failing_producer_stores_nothing_and_its_error_propagates(tmp_path):
    store = Store(tmp_path)

    def producer(folder: Path) -> None:
        (folder / "half.onnx").write_bytes(b"half")
        raise RuntimeError("export failed")

    with pytest.raises(RuntimeError, match="export failed"):
        store.get_or_create(key_for(), producer)
    assert store.get(key_for()) is None
    assert not list((tmp_path / "tmp").iterdir()) and not list((tmp_path / "stages").rglob("*.onnx"))


@pytest.mark.parametrize("damage", ["flip a byte", "delete a file", "truncate entry.json", "edit entry.json", "add a file", "no entry.json"])
def test_a_corrupt_entry_is_discarded_and_rebuilt_never_returned(tmp_path, damage):
    messages = []
    store = Store(tmp_path, log=messages.append)
    key = key_for()
    good = {"model.onnx": b"0123456789" * 100, "notes.json": b"{}"}
    store.get_or_create(key, write_files(good))[0].release()
    folder = record_dir(store, key)
    if damage == "flip a byte":
        data = bytearray((folder / "files" / "model.onnx").read_bytes())
        data[500] ^= 0x01
        (folder / "files" / "model.onnx").write_bytes(bytes(data))
    elif damage == "delete a file":
        (folder / "files" / "notes.json").unlink()
    elif damage == "truncate entry.json":
        text = (folder / "entry.json").read_text()
        (folder / "entry.json").write_text(text[: len(text) // 2])
    elif damage == "edit entry.json":  # still valid JSON, different claims
        record = json.loads((folder / "entry.json").read_text())
        record["stage"] = "something-else"
        (folder / "entry.json").write_text(json.dumps(record))
    elif damage == "add a file":
        (folder / "files" / "stray.bin").write_bytes(b"?")
    elif damage == "no entry.json":
        (folder / "entry.json").unlink()

    assert store.get(key) is None
    assert not folder.exists(), "a corrupt entry must be removed"
    assert len(store.discarded) == 1 and store.discarded[0][0] == key
    assert len(messages) == 1 and key[:12] in messages[0] and "\n" not in messages[0]

    calls = []
    entry, hit = store.get_or_create(key, lambda out: (calls.append(1), write_files(good)(out))[1])
    assert not hit and calls == [1]
    assert entry.file("model.onnx").read_bytes() == good["model.onnx"]
    entry.release()


def test_get_or_create_discards_corruption_before_producing(tmp_path):
    store = Store(tmp_path)
    key = key_for()
    store.get_or_create(key, write_files({"a": b"1"}))[0].release()
    (record_dir(store, key) / "files" / "a").write_bytes(b"2")
    entry, hit = store.get_or_create(key, write_files({"a": b"1"}))
    assert not hit and entry.file("a").read_bytes() == b"1" and len(store.discarded) == 1
    entry.release()


# -- store: concurrency ---------------------------------------------------------------------------

def _concurrent_worker(root: str, key: str, log_path: str, barrier, results) -> None:
    store = Store(root)

    def producer(folder: Path) -> dict:
        with open(log_path, "a") as log:
            log.write(f"{os.getpid()}\n")
        time.sleep(1.0)  # long enough that every other process arrives while this one computes
        (folder / "model.onnx").write_bytes(b"computed once")
        return {"by": os.getpid()}

    barrier.wait()
    entry, hit = store.get_or_create(key, producer, stage="capture")
    results.put((hit, entry.files["model.onnx"]["sha256"], entry.meta["by"]))
    entry.release()


def test_concurrent_builds_of_one_stage_compute_it_once(tmp_path):
    context = multiprocessing.get_context("spawn")
    workers = 3
    barrier, results = context.Barrier(workers), context.Queue()
    log_path = tmp_path / "producer-calls.txt"
    key = str(key_for())
    processes = [context.Process(target=_concurrent_worker, args=(str(tmp_path / "cache"), key, str(log_path), barrier, results)) for _ in range(workers)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert len(log_path.read_text().split()) == 1, "the producer ran more than once"
    assert sorted(hit for hit, _, _ in outcomes) == [False, True, True]
    assert len({(digest, producer) for _, digest, producer in outcomes}) == 1


def test_threads_of_one_process_also_compute_once(tmp_path):
    store = Store(tmp_path)
    key = key_for()
    calls, outcomes = [], []

    def producer(folder: Path) -> None:
        calls.append(1)
        time.sleep(0.3)
        (folder / "x").write_bytes(b"x")

    def worker() -> None:
        entry, hit = store.get_or_create(key, producer)
        outcomes.append(hit)
        entry.release()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [1] and sorted(outcomes) == [False, True, True]


def test_a_lock_file_removed_by_a_pruner_is_relocked_by_its_waiter(tmp_path):
    path = tmp_path / "k.lock"
    holder, waiter, newcomer = _KeyLock(path), _KeyLock(path), _KeyLock(path)
    assert holder.acquire(exclusive=True)
    got = threading.Event()

    def wait() -> None:
        waiter.acquire(exclusive=True)
        got.set()

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.2)
    assert not got.is_set()
    path.unlink()  # what prune does while holding the exclusive lock
    assert newcomer.acquire(exclusive=True, blocking=False)  # a new build locks the new file at the path
    holder.release()
    # The waiter wakes holding the old, unlinked file: it must notice and queue behind the newcomer.
    time.sleep(0.3)
    assert not got.is_set(), "two holders of one key's exclusive lock"
    newcomer.release()
    thread.join(timeout=10)
    assert got.is_set()
    assert _KeyLock(path).acquire(exclusive=True, blocking=False) is False
    waiter.release()


# -- store: storage errors ------------------------------------------------------------------------

def test_an_unusable_cache_folder_is_one_cache_error_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    store = Store(blocker / "cache")
    with pytest.raises(CacheError) as caught:
        store.get_or_create(key_for(), write_files({"a": b"1"}))
    assert isinstance(caught.value, RvcCompileError) and caught.value.exit_code == 2
    assert "\n" not in str(caught.value) and str(blocker) in str(caught.value)


def test_a_full_disk_becomes_a_cache_error_and_leaves_nothing_partial(tmp_path, monkeypatch):
    store = Store(tmp_path)

    def full_disk(folder: Path) -> None:
        (folder / "big.onnx").write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / "big.onnx"))

    with pytest.raises(CacheError, match="No space left on device"):
        store.get_or_create(key_for(), full_disk)
    assert not list((tmp_path / "tmp").iterdir()) and not list((tmp_path / "stages").iterdir())

    def fail_fsync(path: Path, directory: bool = False) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(cache_module, "_fsync_path", fail_fsync)
    with pytest.raises(CacheError, match="cannot store the output of stage capture"):
        store.get_or_create(key_for(), write_files({"a": b"1"}))
    assert not list((tmp_path / "tmp").iterdir()) and not list((tmp_path / "stages").iterdir())


@pytest.mark.parametrize("number", sorted(STORAGE_ERRNOS), ids=lambda number: errno.errorcode[number])
def test_every_storage_error_in_a_stage_is_a_cache_error_with_its_fields(tmp_path, number):
    """One errno list (errors.STORAGE_ERRNOS) for the CLI, the artifact writer and the cache: a file size
    limit (EFBIG) inside a stage is the cache's problem like a full disk, with the same advice."""
    store = Store(tmp_path)
    target = tmp_path / "tmp" / "big.onnx"

    def failing(folder: Path) -> None:
        (folder / "big.onnx").write_bytes(b"partial")
        raise OSError(number, os.strerror(number), str(target))

    with pytest.raises(CacheError) as caught:
        store.get_or_create(key_for(), failing)
    error = caught.value
    assert (error.errno, error.root, error.path) == (number, tmp_path, target)
    message = str(error)
    assert "\n" not in message and message.startswith(f"cache {tmp_path}: cannot write the output of stage capture")
    assert os.strerror(number) in message and str(target) in message
    assert error.no_space == (number in NO_SPACE_ERRNOS)
    if number in NO_SPACE_ERRNOS:
        assert "rvc-compile cache prune" in message
    assert not list((tmp_path / "tmp").iterdir()) and not list((tmp_path / "stages").iterdir())


def test_a_storage_error_a_library_wraps_is_still_the_caches_and_one_elsewhere_is_not(tmp_path):
    store = Store(tmp_path / "cache")

    def wrapped(folder: Path) -> None:
        try:
            raise OSError(errno.EFBIG, "File too large")  # an unnamed write (np.save to a handle)
        except OSError as exc:
            raise RuntimeError("serialization failed") from exc

    with pytest.raises(CacheError, match="File too large") as caught:
        store.get_or_create(key_for(), wrapped)
    assert caught.value.errno == errno.EFBIG and caught.value.path == tmp_path / "cache"

    outside = tmp_path / "elsewhere" / "out.bin"

    def writes_elsewhere(folder: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(outside))

    with pytest.raises(OSError) as raw:  # not the cache's disk: the caller maps it (the artifact writer)
        store.get_or_create(key_for(), writes_elsewhere)
    assert not isinstance(raw.value, CacheError) and raw.value.filename == str(outside)


# -- maintenance ----------------------------------------------------------------------------------

def populate(store: Store, ages_s: dict[str, float], size: int = 4000) -> dict[str, str]:
    """One entry per name, ``size`` bytes each, last used ``ages_s[name]`` seconds ago."""
    keys = {}
    now = time.time()
    for name, age in ages_s.items():
        key = stage_key(f"stage-{name}", inputs={"x": hashlib.sha256(name.encode()).hexdigest()})
        store.get_or_create(key, write_files({"out.bin": os.urandom(size)}))[0].release()
        os.utime(record_dir(store, key) / "last-used", (now - age, now - age))
        keys[name] = key
    return keys


def test_prune_by_age_and_by_size_removes_least_recently_used_first(tmp_path):
    store = Store(tmp_path)
    keys = populate(store, {"old": 10 * 86400, "mid": 3 * 3600, "new": 60, "newest": 1})
    result = store.prune(older_than=parse_age("7d"))
    assert [info.key for info in result.removed] == [keys["old"]]
    assert not record_dir(store, keys["old"]).exists()
    sizes = {info.key: info.size for info in store.ls()}
    two_newest = sizes[keys["new"]] + sizes[keys["newest"]]
    result = store.prune(max_size=two_newest)
    assert [info.key for info in result.removed] == [keys["mid"]]
    assert {info.key for info in store.ls()} == {keys["new"], keys["newest"]}
    assert result.remaining_bytes == two_newest
    # A hit makes an entry recent again: after using "new", "newest" is the least recently used.
    store.get(keys["new"]).release()
    result = store.prune(max_size=two_newest - 1)
    assert [info.key for info in result.removed] == [keys["newest"]]


def test_prune_and_clear_never_remove_an_entry_in_use(tmp_path):
    store = Store(tmp_path)
    keys = populate(store, {"a": 100, "b": 50})
    held = store.get(keys["a"])  # this build is using it
    result = store.clear()
    assert [info.key for info in result.in_use] == [keys["a"]] and [info.key for info in result.removed] == [keys["b"]]
    assert held.file("out.bin").exists()
    held.release()
    assert [info.key for info in store.clear().removed] == [keys["a"]]
    assert store.ls() == [] and not list((tmp_path / "locks").rglob("*.lock"))


def test_prune_removes_what_killed_builds_left(tmp_path):
    store = Store(tmp_path)
    keys = populate(store, {"a": 10})
    key = str(key_for())
    (tmp_path / "tmp" / f"{key}-dead0000" / "files").mkdir(parents=True)  # a producer killed mid-write
    damaged = record_dir(store, str(stage_key("x", inputs={})))
    damaged.mkdir(parents=True)
    (damaged / "entry.json").write_text("{trunc")
    assert any(info.damaged for info in store.ls())
    result = store.prune(older_than=parse_age("1w"))
    assert [info.key for info in result.removed] == [damaged.name]
    assert not list((tmp_path / "tmp").iterdir())
    assert record_dir(store, keys["a"]).exists()


def test_sizes_and_ages_parse_and_refuse_nonsense():
    assert parse_size("500M") == 500 << 20 and parse_size("2G") == 2 << 30 and parse_size("1.5k") == 1536
    assert parse_size("1234") == 1234 and parse_size("2GiB") == 2 << 30
    assert parse_age("7d") == 7 * 86400 and parse_age("12h") == 43200 and parse_age("2w") == 14 * 86400
    for bad in ("", "5X", "-1G", "G"):
        with pytest.raises(CacheError, match="--max-size"):
            parse_size(bad)
    with pytest.raises(CacheError, match="--older-than"):
        parse_age("7")


def test_cache_cli_ls_du_prune_clear(tmp_path):
    root = tmp_path / "cache"
    store = Store(root)
    keys = populate(store, {"old": 30 * 86400, "new": 5}, size=3000)
    extra = stage_key("capture", inputs={"checkpoint": SHA_A})
    store.get_or_create(extra, write_files({"model.onnx": b"g" * 1000}))[0].release()

    listing = run_cli("cache", "ls", "--cache-dir", root)
    assert listing.returncode == 0, listing.stderr
    for key, stage in ((keys["old"], "stage-old"), (keys["new"], "stage-new"), (extra, "capture")):
        assert any(line.startswith(key[:12]) and stage in line for line in listing.stdout.splitlines()), listing.stdout
    assert "3 entries" in listing.stdout
    as_json = json.loads(run_cli("cache", "ls", "--cache-dir", root, "--json").stdout)
    capture = next(item for item in as_json if item["stage"] == "capture")
    assert capture["ingredients"]["inputs"] == {"checkpoint": SHA_A}

    usage = run_cli("cache", "du", "--cache-dir", root)
    assert usage.returncode == 0
    lines = {line.split()[0]: line.split() for line in usage.stdout.splitlines() if line.strip()}
    assert lines["capture"][1] == "1" and lines["stage-old"][1] == "1" and lines["total"][1] == "3"
    usage_json = json.loads(run_cli("cache", "du", "--cache-dir", root, "--json").stdout)
    assert usage_json["entries"] == 3 and usage_json["bytes"] == sum(row["bytes"] for row in usage_json["stages"].values())

    pruned = run_cli("cache", "prune", "--cache-dir", root, "--older-than", "7d")
    assert pruned.returncode == 0 and "removed 1 entries" in pruned.stdout
    assert not record_dir(store, keys["old"]).exists() and record_dir(store, keys["new"]).exists()
    pruned = run_cli("cache", "prune", "--cache-dir", root, "--max-size", "2K")
    assert pruned.returncode == 0 and "removed 1 entries" in pruned.stdout  # the 3 KB one goes, LRU
    assert [info.stage for info in store.ls()] == ["capture"]

    assert_user_error(run_cli("cache", "prune", "--cache-dir", root, "--max-size", "lots"), "--max-size", "'lots'")
    cleared = run_cli("cache", "clear", "--cache-dir", root)
    assert cleared.returncode == 0 and "removed 1 entries" in cleared.stdout
    assert "no entries" in run_cli("cache", "ls", "--cache-dir", root).stdout


def test_cache_cli_uses_the_environment_variable(tmp_path):
    import subprocess
    import sys

    env = {**os.environ, ENV_VAR: str(tmp_path / "env-cache")}
    process = subprocess.run([sys.executable, "-m", "rvc_compile.cli", "cache", "dir"], capture_output=True, text=True, env=env)
    assert process.stdout.strip() == str(tmp_path / "env-cache")


def test_a_build_scratch_folder_is_kept_while_held_and_swept_once_its_build_is_gone(tmp_path):
    store = Store(tmp_path / "cache")
    with store.scratch() as folder:
        (folder / "captured.onnx").write_bytes(b"x" * 100)
        assert folder.parent == tmp_path / "cache" / "tmp" and folder.name.startswith("build-")
        assert Store(tmp_path / "cache").sweep_scratch() == 0 and folder.exists()  # another process sees it held
    assert not folder.exists()
    dead = tmp_path / "cache" / "tmp" / "build-123-deadbeef"  # what a killed build leaves: no lock holder
    dead.mkdir()
    (dead / "graph.onnx").write_bytes(b"y")
    assert store.sweep_scratch() == 1 and not dead.exists()
    assert list((tmp_path / "cache" / "locks" / "scratch").iterdir()) == []


# -- areas: folders a tool fills itself (OpenVINO's compiled blobs) ------------------------------------

def test_an_area_is_a_stable_folder_that_ls_du_and_prune_account_for(tmp_path):
    store = Store(tmp_path)
    blobs = store.area("compiled/openvino")
    assert blobs == store.area("compiled/openvino") and blobs.is_dir() and tmp_path in blobs.parents
    (blobs / "model.blob").write_bytes(b"b" * 5000)
    keys = populate(store, {"stage": 60}, size=1000)
    infos = {info.key: info for info in store.ls()}
    area = infos["compiled/openvino"]
    assert area.kind == "area" and area.stage == "compiled/openvino" and area.size >= 5000
    assert infos[keys["stage"]].kind == "stage"
    usage = store.du()
    assert usage["entries"] == 2 and usage["stages"]["compiled/openvino"]["bytes"] == area.size
    assert "compiled/openvino" in cache_module.format_ls(store.ls(), tmp_path)
    with pytest.raises(ValueError, match="area name"):
        store.area("../outside")

    # Handing it out is a use: an age limit removes it only once it has not been handed out for that long.
    assert store.prune(older_than=parse_age("1h")).removed == []
    old = time.time() - 2 * 86400
    os.utime(store.area_dir("compiled/openvino") / "last-used", (old, old))
    result = store.prune(older_than=parse_age("1d"))
    assert [info.key for info in result.removed] == ["compiled/openvino"] and result.freed_bytes >= 5000
    assert not blobs.exists() and record_dir(store, keys["stage"]).exists()

    # By size, least recently used first, entries and areas alike.
    blobs = store.area("compiled/openvino")
    (blobs / "model.blob").write_bytes(b"b" * 5000)
    os.utime(store.area_dir("compiled/openvino") / "last-used", (old, old))
    result = store.prune(max_size=2000)
    assert [info.key for info in result.removed] == ["compiled/openvino"] and [info.key for info in store.ls()] == [keys["stage"]]
    assert store.area("compiled/openvino").is_dir()  # and it comes back, empty, when next handed out


def test_cache_clear_frees_calibration_sets_compiled_blobs_and_old_layout_folders(tmp_path, monkeypatch):
    """``rvc-compile cache clear`` leaves no file behind: calibration sets are entries, compiled blobs an
    area, and what an older rvc-compile kept beside the store (calibration/, compiled/) goes too."""
    from rvc_compile.precision.calibration import load_calibration
    from rvc_compile.recipe.schema import Calibration
    from rvc_compile.runtime import compile_cache_dir
    from test_calibration import model_spec

    root = tmp_path / "cache"
    monkeypatch.setenv(ENV_VAR, str(root))
    calibration = load_calibration(Calibration(source="generated", count=1, seconds=0.2, f0_source="synthetic"), model_spec(), cache_dir=root)
    assert root in calibration.cache_path.parents
    blobs = compile_cache_dir(tmp_path / "voice" / "1.0.0", {"target": {"compile_cache": "user"}, "backend": {"name": "openvino"}})
    assert blobs is not None and root in blobs.parents
    (blobs / "0123.blob").write_bytes(b"x" * 2000)
    (root / "calibration").mkdir()
    (root / "calibration" / f"{'c' * 64}.npz").write_bytes(b"old set")
    (root / "compiled" / "openvino").mkdir(parents=True)
    (root / "compiled" / "openvino" / "old.blob").write_bytes(b"old blob")

    listing = json.loads(run_cli("cache", "ls", "--cache-dir", root, "--json").stdout)
    assert sorted((item["kind"], item["stage"]) for item in listing) == [
        ("area", "compiled/openvino"), ("legacy", "calibration (old layout)"), ("legacy", "compiled (old layout)"), ("stage", "calibration"),
    ]
    cleared = run_cli("cache", "clear", "--cache-dir", root)
    assert cleared.returncode == 0 and "removed 4 entries" in cleared.stdout, cleared.stdout + cleared.stderr
    assert [path for path in root.rglob("*") if path.is_file()] == []
    assert not (root / "calibration").exists() and not (root / "compiled").exists()


def test_the_runtime_compile_cache_is_a_store_area_and_the_runtime_stays_light(tmp_path):
    import subprocess
    import sys

    code = f"""
import sys, warnings
from pathlib import Path
for blocked in ("torch", "onnx", "onnxslim", "onnxscript"):
    sys.modules[blocked] = None  # any import of these now raises ImportError
from rvc_compile.runtime import compile_cache_dir
manifest = {{"target": {{"compile_cache": "user"}}, "backend": {{"name": "openvino"}}}}
print(compile_cache_dir(Path("voice"), manifest))
blocker = Path({str(tmp_path / "file")!r})
blocker.write_text("not a folder")
import os
os.environ["RVC_COMPILE_CACHE"] = str(blocker / "cache")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    print(compile_cache_dir(Path("voice"), manifest), caught[0].message if caught else "no warning")
assert not [name for name, module in sys.modules.items() if module is not None and name.split(".")[0] in ("torch", "onnx")]
"""
    env = {**os.environ, ENV_VAR: str(tmp_path / "cache")}
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert process.returncode == 0, process.stderr
    area, fallback = process.stdout.strip().splitlines()
    assert Path(area) == Store(tmp_path / "cache").area_dir("compiled/openvino") / "files" and Path(area).is_dir()
    assert fallback.startswith("None ") and "no compile cache" in fallback and "cache" in fallback
