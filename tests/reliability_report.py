"""The record behind docs/RELIABILITY.md: every hostile input and injected fault the tests try.

A test that feeds hostile input or injects a fault takes the ``hostile`` fixture and declares each case
with what it asserts; the test's own result decides the row's outcome, so the report cannot claim more
than the assertions do:

    row = hostile.case("Hostile checkpoints", "pickle whose __reduce__ runs os.system", expect="refused; marker never created")
    row.count += 1                        # one more example of this case (fuzzers count what they ran)
    row.observe("CheckpointError")        # tally what actually happened (rendered as "CheckpointError x 212")

Tests using the fixture are marked ``reliability``. Regenerate the report with

    pytest -m reliability --reliability-report=docs/RELIABILITY.md

which also writes the raw rows next to it (docs/RELIABILITY.json). Without the option nothing is written.
Keep the ``=``: given as a separate word, an existing PATH is taken for a test path before this plugin
(and its option) is loaded.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import pytest

# Categories in the order of the issue; others follow in order of appearance.
CATEGORIES = [
    "Hostile checkpoints",
    "Fuzzing: checkpoint loader",
    "Fuzzing: recipe parser",
    "Fuzzing: manifest reader",
    "Fuzzing: command line",
    "Faults during a build: killed",
    "Faults during a build: disk full",
    "Tampering",
    "Runtime input validation",
    "Load",
]
COMMAND = "pytest -m reliability --reliability-report=docs/RELIABILITY.md"


@dataclasses.dataclass
class Row:
    category: str
    case: str
    expect: str
    count: int = 1
    observed: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    notes: list[str] = dataclasses.field(default_factory=list)
    test: str = ""
    outcome: str = ""  # passed, failed, xfailed, skipped
    reason: str = ""

    def observe(self, what: str, times: int = 1) -> None:
        self.observed[what] += times

    def note(self, text: str) -> None:
        self.notes.append(text)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["observed"] = dict(self.observed)
        return data


class Recorder:
    def __init__(self, nodeid: str):
        self.nodeid = nodeid
        self.rows: list[Row] = []

    def case(self, category: str, case: str, *, expect: str, count: int = 1) -> Row:
        row = Row(category=category, case=case, expect=expect, count=count, test=self.nodeid)
        self.rows.append(row)
        return row


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reliability-report", metavar="PATH", default=None,
        help="write the hostile-input table of this run to PATH (markdown) and PATH with .json (rows)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "reliability: feeds hostile input or injects a fault (recorded in docs/RELIABILITY.md)")
    config._reliability_rows = []  # type: ignore[attr-defined]
    config._reliability_started = time.time()  # type: ignore[attr-defined]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "hostile" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.reliability)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"_reliability_{report.when}", report)


@pytest.fixture
def hostile(request: pytest.FixtureRequest):
    """Declare hostile cases; each row takes this test's result (see the module docstring)."""
    recorder = Recorder(request.node.nodeid)
    yield recorder
    call = getattr(request.node, "_reliability_call", None)
    if call is None:
        outcome, reason = "failed", "the test did not run"
    elif hasattr(call, "wasxfail"):
        outcome, reason = "xfailed", str(call.wasxfail)
    elif call.skipped:
        outcome = "skipped"
        reason = str(call.longrepr[2]) if isinstance(call.longrepr, tuple) else str(call.longrepr)
    else:
        outcome, reason = call.outcome, ""
    for row in recorder.rows:
        row.outcome, row.reason = outcome, reason
    request.config._reliability_rows.extend(recorder.rows)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    target = session.config.getoption("--reliability-report", default=None)
    if not target:
        return
    rows: list[Row] = session.config._reliability_rows
    seconds = time.time() - session.config._reliability_started
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    meta = run_metadata(seconds, exitstatus, tuple(session.config.invocation_params.args))
    target.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": [row.to_dict() for row in rows]}, indent=1) + "\n")
    target.write_text(render(rows, meta))


def run_metadata(seconds: float, exitstatus: int, args: tuple[str, ...] = ()) -> dict[str, Any]:
    from rvc_compile.machine import cpu_info, library_versions

    cpu = cpu_info()
    return {
        "command": COMMAND,
        "invocation": " ".join(["pytest", *args]) if args else COMMAND,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "seconds": round(seconds, 1),
        "exit_status": int(exitstatus),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "cpu": cpu.get("cpu"),
        "cores": cpu.get("cores") or cpu.get("logical_cores"),
        "isa_class": cpu.get("isa_class"),
        "onednn_max_cpu_isa": cpu.get("onednn_max_cpu_isa"),
        "libraries": library_versions("torch", "onnxruntime", "openvino", "numpy", "hypothesis", "atheris"),
    }


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _outcome(row: Row) -> str:
    observed = ", ".join(f"{name} x {count}" for name, count in sorted(row.observed.items(), key=lambda item: (-item[1], item[0])))
    detail = "; ".join(part for part in (row.expect, f"observed: {observed}" if observed else "", *row.notes) if part)
    if row.outcome == "passed":
        return f"pass: {detail}"
    if row.outcome == "xfailed":
        return f"**known bug (xfail)**: {row.reason}"
    if row.outcome == "skipped":
        return f"skipped: {row.reason}"
    return f"**FAIL** (expected: {detail})"


def render(rows: list[Row], meta: dict[str, Any]) -> str:
    by_category: dict[str, list[Row]] = collections.OrderedDict((name, []) for name in CATEGORIES)
    for row in rows:
        by_category.setdefault(row.category, []).append(row)
    results = collections.Counter(row.outcome for row in rows)
    tests = {row.test for row in rows}
    libraries = ", ".join(f"{name} {version}" for name, version in meta["libraries"].items() if version)
    lines = [
        "# Reliability and security: hostile inputs and faults",
        "",
        "Generated by the test suite; do not edit. Every row is a case a test asserts; its outcome is that",
        "test's result in the run below. Regenerate with `make reliability`, which runs",
        "",
        f"    {meta['command']}",
        "",
        "(`make test` writes the same table for the whole suite to out/RELIABILITY.md on every run).",
        f"This file comes from: `{meta.get('invocation', meta['command'])}`.",
        "",
        f"Run: {meta['date']}, {meta['seconds']:.0f} s, {meta['platform']}, {meta['cpu']} ({meta['cores']} cores"
        + (f", CPU class {meta['isa_class']}" if meta.get("isa_class") else "")
        + (f" under ONEDNN_MAX_CPU_ISA={meta['onednn_max_cpu_isa']}" if meta.get("onednn_max_cpu_isa") else "") + "), "
        f"Python {meta['python']}; {libraries}.",
        "",
        f"**{sum(row.count for row in rows)} cases** in {len(rows)} rows from {len(tests)} tests: "
        + ", ".join(f"{results[name]} rows {name}" for name in ("passed", "failed", "xfailed", "skipped") if results[name])
        + ".",
        "",
        "Every refusal is the documented error: an `RvcCompileError` subclass with a one-line message naming",
        "the file or key; on the command line one stderr line, no traceback, exit code 2 (a failed gate or",
        "integrity check in `verify`: 1).",
        "",
        "| Category | Rows | Cases | Result |",
        "| --- | ---: | ---: | --- |",
    ]
    for category, category_rows in by_category.items():
        if category_rows:
            counts = collections.Counter(row.outcome for row in category_rows)
            summary = ", ".join(f"{counts[name]} {name}" for name in ("passed", "failed", "xfailed", "skipped") if counts[name])
            lines.append(f"| [{category}](#{_anchor(category)}) | {len(category_rows)} | {sum(row.count for row in category_rows)} | {summary} |")
    for category, category_rows in by_category.items():
        if not category_rows:
            continue
        lines += ["", f"## {category}", "", "| Hostile input or fault | Cases | Outcome | Test |", "| --- | ---: | --- | --- |"]
        for row in category_rows:
            test = row.test.split("::", 1)
            where = f"`{test[0].removeprefix('tests/')}::{test[1]}`" if len(test) == 2 else f"`{row.test}`"
            lines.append(f"| {_cell(row.case)} | {row.count} | {_cell(_outcome(row))} | {_cell(where)} |")
    lines += ["", *METHOD.strip("\n").splitlines()]
    return "\n".join(lines) + "\n"


METHOD = """
## How the cases are made

- **Hostile checkpoints** (`tests/test_checkpoint.py`): pickles that would create a marker file by every
  route we know (`__reduce__` to `os.system`, `exec`, `eval`, `subprocess.Popen`, hand-written GLOBAL/INST/
  STACK_GLOBAL opcodes, objects in numpy object arrays), each in a raw pickle, torch's zip and the pre-1.6
  format; the marker must never appear. Memory bombs load in a fresh process after a real checkpoint and
  may not raise its peak RSS by 64 MB: deflate bombs, zip headers and pickles that claim huge sizes,
  shared-reference pickle bombs (a 1 MB pickle whose objects expand to 10^9 values: the unpickler itself
  hashes a tuple key for minutes) and reference cycles, which the loader now measures from the opcode
  stream before unpickling. Other model families are the files users mistake for an RVC voice.
- **Fuzzing** (`tests/test_fuzz.py`): hypothesis, derandomized in the default run (the same examples every
  time, so CI is not flaky) and random in the `slow` runs. The property is always: a value, or the
  documented one-line error. `tests/fuzz_atheris.py` drives the same readers with atheris (coverage-guided
  libFuzzer, `pip install atheris`, slow tests). It runs the recipe and manifest readers at ~2000
  inputs/s against hypothesis' ~100/s (checkpoints: ~40/s, each input is a whole archive), and it earned
  its place: its first runs found two zip headers the hypothesis strategies had missed (a central
  directory claiming "version needed to extract 6.4", a zip64 locator claiming two disks), on which
  `zipfile` raised NotImplementedError and BadZipFile past the loader; both are now CheckpointErrors and
  regression tests. Everything else here was found by the hypothesis strategies or by hand.
- **Killed builds** (`tests/test_faults.py`): real `rvc-compile build` processes of the tiny int8 recipe,
  killed with SIGKILL on their whole process group when a marker appears on disk (polled every 2 ms) or
  after a fraction of a measured cold build. Checked after every kill: no version folder unless complete,
  every cache entry verifies with `Store.get`, `prune` empties the cache's `tmp/`, the next build succeeds.
- **Full disks**: a tmpfs of a few KiB to MiB mounted under `--out`, `--cache-dir` and `TMPDIR` (needs
  root; CI runs as root), and RLIMIT_FSIZE in the build process (no privileges: writes fail with EFBIG).
- **Tampering** (`tests/test_artifact.py`): a byte changed at sampled positions of every file of a real
  artifact (every position of the files under 16 KiB in the slow run), files added, removed, renamed,
  swapped, replaced by symlinks or named pipes.
- **Runtime and load** (`tests/test_runtime.py`): malformed inputs to `CompiledVoice.infer`; 8 threads
  against serial calls, bit for bit; a bounded soak of thousands of calls in a fresh process, VmRSS
  sampled every 100 calls.

## What this does not cover

- `manifest.sha256` proves integrity, not authorship: whoever can write the folder can reseal it. The
  runtime then still checks every manifest value it uses, but it runs the graph it is given.
- Power loss: files and folders are fsynced before the renames, but no test cuts the power.
- Kills of concurrent builds sharing one cache are covered by the cache's own tests (`tests/test_cache.py`).
"""


def _anchor(title: str) -> str:
    return "".join(ch for ch in title.lower().replace(" ", "-") if ch.isalnum() or ch == "-")


if __name__ == "__main__":  # re-render the markdown from a saved JSON: python tests/reliability_report.py docs/RELIABILITY.json
    source = Path(sys.argv[1])
    data = json.loads(source.read_text())
    loaded = []
    for item in data["rows"]:
        item["observed"] = collections.Counter(item["observed"])
        loaded.append(Row(**item))
    source.with_suffix(".md").write_text(render(loaded, data["meta"]))
