"""Work in a child process: start it with an environment overlay, send requests, get replies, stop it.

Three things in rvc-compile must run outside the calling process, each for a reason of its own:
``bench`` keeps every source in its own process (its peak memory is its own, thread pools never
compete); a build checks an artifact "as on an older CPU" under ``ONEDNN_MAX_CPU_ISA``, which oneDNN
reads once per process; a build measures its artifact's load time and peak memory without torch and
its own allocations. They share this one protocol.

The child is a fresh interpreter, ``python -m rvc_compile.worker``, started with the parent's
environment plus ``env`` (so a variable is set before any library reads it). Its first request names a
handler factory as ``"module:attribute"``; the child imports it, builds the handler (a backend
runner, a bench source) and answers with its ``ready()`` value, if it has one. Every later request
is ``(method, keyword arguments)``: one public method call on the handler, whose return value is the
reply. Requests and replies are pickles on the child's stdin and stdout; the child points its own
file descriptor 1 at stderr first, so library chatter never reaches the channel. The parent keeps the
last lines of the child's stderr.

A handler exception comes back as a ``WorkerError`` whose ``failure`` holds the exception type, its
one-line message, whether it is a user error (``RvcCompileError``, which then comes across whole in
``failure.error``), the child's traceback and its last line. A child that dies (a crash in native
code, a kill) is a ``WorkerError`` of type ``WorkerDied`` with the exit code and the last line the
child wrote to stderr. Either way the message is one line and says which worker it was.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
import os
import pickle
import subprocess
import sys
import threading
import traceback
import weakref
from typing import Any, BinaryIO

PROTOCOL = pickle.HIGHEST_PROTOCOL
STDERR_LINES = 50  # lines of the child's stderr kept for a failure's detail
STOP_TIMEOUT_S = 30.0
MESSAGE_CHARS = 400
TRACEBACK_CHARS = 2000


@dataclasses.dataclass(frozen=True)
class Failure:
    """Why a request to a worker failed, as data: what the parent reports or decides on."""

    type: str  # the exception's class name in the child, or "WorkerDied"
    message: str  # one line
    user_error: bool  # an RvcCompileError: bad input, reported as such; otherwise a bug or a crash
    last_line: str  # the child's last traceback line ("ValueError: ..."), or its last stderr line when it died
    traceback: str = ""  # the child's traceback (its end), or the end of its stderr when it died
    exit_code: int | None = None  # when the child died
    error: BaseException | None = None  # the user error itself (its class and fields), when it pickled


class WorkerError(Exception):
    """A request failed in the child, or the child is gone. ``failure`` says which and why."""

    def __init__(self, failure: Failure, worker: str = "worker"):
        super().__init__(f"{worker}: {failure.type}: {failure.message}" if failure.type != "WorkerDied" else f"{worker}: {failure.message}")
        self.failure = failure

    @property
    def died(self) -> bool:
        return self.failure.type == "WorkerDied"

    def unwrap(self) -> BaseException:
        """The user error the child raised (its own class and fields) when it came across, else this
        error: ``raise exc.unwrap() from None`` keeps a child's bad-input error the one-line error it was."""
        return self.failure.error if self.failure.error is not None else self


def _one_line(text: str, limit: int = MESSAGE_CHARS) -> str:
    return " ".join(str(text).split())[:limit]


def failure_of(exc: BaseException) -> Failure:
    """The Failure a child reports for ``exc`` (raised by a handler or its factory)."""
    from .errors import RvcCompileError

    formatted = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    lines = [line for line in formatted.strip().splitlines() if line.strip()]
    user_error = isinstance(exc, RvcCompileError)
    error = None
    if user_error:
        try:
            pickle.loads(pickle.dumps(exc, PROTOCOL))
            error = exc.with_traceback(None)
        except Exception:  # a field that does not pickle: the type name and message still go
            error = None
    return Failure(
        type=type(exc).__name__,
        message=_one_line(str(exc)) or type(exc).__name__,
        user_error=user_error,
        last_line=_one_line(lines[-1] if lines else type(exc).__name__),
        traceback=formatted[-TRACEBACK_CHARS:],
        error=error,
    )


def resolve(target: str) -> Any:
    """``"package.module:attribute"`` -> the attribute (a handler factory, or a function)."""
    module, separator, attribute = target.partition(":")
    if not separator or not module or not attribute:
        raise ValueError(f"worker target {target!r}: expected 'module:attribute'")
    value: Any = importlib.import_module(module)
    for part in attribute.split("."):
        value = getattr(value, part)
    return value


class FunctionCaller:
    """A handler that calls a module-level function by name: one-shot work (``run_function``)."""

    def call(self, target: str, args: tuple = (), kwargs: dict[str, Any] | None = None) -> Any:
        return resolve(target)(*args, **(kwargs or {}))


# -- the parent's side ---------------------------------------------------------------------------

class _Child:
    """The process and its pipes; kept apart from ``Worker`` so a finalizer can stop it without the Worker."""

    def __init__(self, env: dict[str, str] | None):
        self.process = subprocess.Popen(
            [sys.executable, "-m", __name__],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})},
        )
        self.stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self.reader = threading.Thread(target=self._drain, daemon=True, name="rvc-compile-worker-stderr")
        self.reader.start()

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            self.stderr.append(raw.decode(errors="replace").rstrip())

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        process = self.process
        if process.poll() is None:
            try:
                pickle.dump(("stop", {}), process.stdin, PROTOCOL)
                process.stdin.flush()
            except (OSError, ValueError):
                pass
        try:
            process.stdin.close()  # type: ignore[union-attr]  # end of input: the child exits even without the stop request
        except OSError:
            pass
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()  # type: ignore[union-attr]
        self.reader.join(timeout=5)


class Worker:
    """The parent's handle on one child process serving one handler.

    ``Worker("pkg.module:Factory", *args, env={...})`` starts the child and asks it to build
    ``Factory(*args)``; ``ready()`` waits for that and returns the handler's ``ready()`` value;
    ``call("method", **kwargs)`` returns the handler's ``method(**kwargs)``. Arguments and results must
    pickle. ``stop()`` (or leaving a ``with`` block, or the Worker being collected) ends the child.
    """

    def __init__(self, target: str, *args: Any, env: dict[str, str] | None = None, name: str | None = None):
        self.name = name or f"worker {target}"
        self.env = dict(env or {})
        self._child = _Child(self.env)
        self._stopper = weakref.finalize(self, self._child.stop)
        self._started = False
        self._ready: Any = None
        self._start_failure: WorkerError | None = None
        self._send(("start", {"target": target, "args": args}))

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def alive(self) -> bool:
        return self._child.process.poll() is None

    @property
    def started(self) -> bool:
        """The handler was built (``ready()`` returned)."""
        return self._started

    def ready(self) -> Any:
        """Wait until the handler is built; its ``ready()`` value (None without one). Raises WorkerError,
        and the same one again on every later call when the handler could not be built."""
        if self._start_failure is not None:
            raise self._start_failure
        if not self._started:
            try:
                self._ready = self._receive()
            except WorkerError as exc:
                self._start_failure = exc
                raise
            self._started = True
        return self._ready

    def call(self, method: str, **kwargs: Any) -> Any:
        """The handler's ``method(**kwargs)``, run in the child. Raises WorkerError."""
        self.ready()
        self._send((method, kwargs))
        return self._receive()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Ask the child to close its handler and exit; kill it after ``timeout`` seconds."""
        if self._stopper.alive:
            self._stopper.detach()
            self._child.stop(timeout)

    def _send(self, message: tuple[str, Any]) -> None:
        stream = self._child.process.stdin
        try:
            pickle.dump(message, stream, PROTOCOL)
            stream.flush()  # type: ignore[union-attr]
        except (BrokenPipeError, OSError, ValueError):
            raise WorkerError(self._died(), self.name) from None

    def _receive(self) -> Any:
        try:
            status, payload = pickle.load(self._child.process.stdout)  # type: ignore[arg-type]
        except (EOFError, OSError, ValueError, pickle.UnpicklingError):
            raise WorkerError(self._died(), self.name) from None
        if status == "error":
            raise WorkerError(payload, self.name)
        return payload

    def _died(self) -> Failure:
        process = self._child.process
        try:
            code = process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # alive but not answering (it closed its channel): end it
            process.kill()
            code = process.wait()
        self._child.reader.join(timeout=5)
        lines = list(self._child.stderr)
        last = next((line for line in reversed(lines) if line.strip()), "")
        message = f"the worker process exited (code {code})" + (f": {_one_line(last, 300)}" if last else "")
        return Failure(type="WorkerDied", message=message, user_error=False, last_line=_one_line(last or f"exit code {code}"),
                       traceback="\n".join(lines)[-TRACEBACK_CHARS:], exit_code=code)


def run_function(target: str, *args: Any, env: dict[str, str] | None = None, name: str | None = None, **kwargs: Any) -> Any:
    """``target(*args, **kwargs)`` (``"module:function"``) in a fresh child process under ``env``; its result.

    Raises WorkerError (``failure.last_line``: the child's last traceback line) when it fails or dies."""
    with Worker(f"{__name__}:FunctionCaller", env=env, name=name or f"worker {target}") as worker:
        return worker.call("call", target=target, args=args, kwargs=kwargs)


# -- the child's side ----------------------------------------------------------------------------

def _reply(channel: BinaryIO, status: str, payload: Any) -> None:
    try:
        data = pickle.dumps((status, payload), PROTOCOL)
    except Exception as exc:  # a result that does not pickle is the handler's bug: say so, keep serving
        data = pickle.dumps(("error", failure_of(TypeError(f"the reply does not pickle: {type(exc).__name__}: {exc}"))), PROTOCOL)
    channel.write(data)
    channel.flush()


def serve(requests: BinaryIO, replies: BinaryIO) -> None:
    """The child's loop: build the handler, then answer requests until "stop" or the end of input."""
    handler = None
    try:
        command, start = pickle.load(requests)
        if command != "start":
            raise ValueError(f"expected a start request, got {command!r}")
        handler = resolve(start["target"])(*start["args"])
        ready = getattr(handler, "ready", None)
        _reply(replies, "ok", ready() if callable(ready) else None)
    except EOFError:
        return
    except BaseException as exc:  # the parent decides what is fatal
        _reply(replies, "error", failure_of(exc))
        return
    try:
        while True:
            try:
                method, kwargs = pickle.load(requests)
            except EOFError:
                break
            if method == "stop":
                break
            try:
                if method.startswith("_") or not callable(getattr(handler, method, None)):
                    raise AttributeError(f"{type(handler).__name__} has no method {method!r}")
                result = getattr(handler, method)(**kwargs)
            except BaseException as exc:
                _reply(replies, "error", failure_of(exc))
                continue
            _reply(replies, "ok", result)
    finally:
        close = getattr(handler, "close", None)
        if callable(close):
            close()


def main() -> None:
    # The channel gets its own descriptors; fd 1 then points at stderr and fd 0 at nothing, so a library
    # that prints (or reads) cannot corrupt the pickles.
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    serve(requests, replies)


if __name__ == "__main__":
    # Run as the importable module, not as __main__: the Failures this child pickles must name
    # rvc_compile.worker.Failure, which the parent can load.
    from rvc_compile import worker

    worker.main()
