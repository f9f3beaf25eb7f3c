"""What a user sees while a job runs: our progress and errors, not Ray's chatter.

An error a stage raises inside a Ray actor reaches the user as the same one line the local
executor prints (:class:`JobError`), not as Ray's multi-page traceback.

Ray prints warnings and even ERROR-level lines on every healthy run (a token-authentication
notice, Ray Data's execution plan, a core-worker line about actor arguments in the object store);
a user reads an ``E`` line as a failure. Unless ``--verbose``, those go to Ray's own log folder:
Python-level Ray logging is raised to ERROR, and the driver's native stderr (file descriptor 2,
which Ray's C++ core writes to directly) is sent to a file there while the dataset runs. Our own
output keeps the terminal through a duplicate of the original stderr.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

DRIVER_LOG_NAME = "cai-ray-driver-native.err"


class JobError(RuntimeError):
    """A stage failed on a worker; the message is the worker's own error, in one line (Ray's
    traceback is in its log folder, or on screen with -v)."""


_ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception)): (.+)$")


def worker_exception(exc: BaseException) -> tuple[str, str] | None:
    """The type (as Ray's text names it: ``module.Name``) and message of the error a stage
    raised inside a Ray actor, from the text Ray wraps it in: the last ``Type: message`` line
    that is not Ray's own; None where there is none."""
    text = getattr(exc, "error_msg", None) or str(exc)
    lines = [m for m in map(_ERROR_LINE.match, text.splitlines()) if m]
    own = [m for m in lines if not m.group(1).startswith("ray.")]
    return (own[-1].group(1), own[-1].group(2)) if own else None


def worker_error(exc: BaseException) -> str:
    """The error a stage raised inside a Ray actor, in one line (:func:`worker_exception`)."""
    raised = worker_exception(exc)
    if raised is None:
        return f"a worker failed: {type(exc).__name__} (details in Ray's log folder)"
    kind, message = raised
    return f"a worker failed: {kind.rsplit('.', 1)[-1]}: {message}"


def ray_logging_level(verbose: bool) -> int:
    """The level for ``ray.init(logging_level=...)``."""
    return logging.INFO if verbose else logging.ERROR


def quiet_ray_data(verbose: bool) -> None:
    """Ray Data's console handler silenced unless ``verbose`` (its file handler in Ray's log
    folder keeps all): a failure reaches the user as our one-line :class:`JobError`, so Ray
    Data's ERROR lines about it would only repeat it at length."""
    import ray.data  # noqa: F401  (configures Ray Data's loggers)

    level = logging.INFO if verbose else logging.CRITICAL
    for handler in logging.getLogger("ray.data").handlers:
        console = isinstance(handler, logging.StreamHandler)
        if console and not isinstance(handler, logging.FileHandler):  # not the session file
            handler.setLevel(level)


def ray_log_folder() -> Path:
    """This driver's Ray session log folder (a temporary folder if Ray does not say)."""
    try:
        import ray._private.worker as worker

        node = worker.global_worker.node
    except (AttributeError, ImportError):
        node = None
    return Path(node.get_logs_dir_path()) if node is not None else Path(tempfile.gettempdir())


@contextlib.contextmanager
def native_stderr_to(path: Path) -> Iterator[Path]:
    """Send file descriptor 2 to ``path`` (appending) while keeping Python's ``sys.stderr``, and
    the logging handlers writing to it, on the original stream. An exception leaving the block
    gets a note naming the file."""
    sys.stderr.flush()
    original_fd = os.dup(2)
    terminal: IO[str] = os.fdopen(os.dup(original_fd), "w", buffering=1)
    previous = sys.stderr
    moved = _handlers_on(previous)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as sink:
        os.dup2(sink.fileno(), 2)
    sys.stderr = terminal
    for handler in moved:
        handler.setStream(terminal)
    try:
        yield path
    except BaseException as exc:
        exc.add_note(f"Ray's own messages from this run: {path}")
        raise
    finally:
        terminal.flush()
        os.dup2(original_fd, 2)
        os.close(original_fd)
        sys.stderr = previous
        for handler in moved:
            handler.setStream(previous)
        terminal.close()


def _handlers_on(stream: IO[str]) -> list[logging.StreamHandler]:
    known = logging.root.manager.loggerDict.values()
    loggers = [logging.getLogger(), *(lg for lg in known if isinstance(lg, logging.Logger))]
    return [
        handler
        for logger in loggers
        for handler in getattr(logger, "handlers", [])
        if type(handler) is logging.StreamHandler and handler.stream is stream
    ]


@contextlib.contextmanager
def ray_output(verbose: bool) -> Iterator[None]:
    """Around a running dataset: Ray's native stderr to its log folder unless ``verbose``."""
    if verbose:
        yield
        return
    with native_stderr_to(ray_log_folder() / DRIVER_LOG_NAME):
        yield
