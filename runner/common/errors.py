"""Errors that reach the user as one line, and the exit codes of every gmrun command.

The exit codes are a contract (docs/faults.md#exit-codes): a Job's ``podFailurePolicy`` fails a
tile at once on :data:`EXIT_BAD_INPUT` and retries the others; ``gmrun k8s status`` names them.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

#: done (or already done)
EXIT_OK = 0
#: a processing failure or a transient one (a service unreachable, a write that failed, the
#: worker's own deadline): worth retrying
EXIT_FAILURE = 1
#: bad input (a missing file, an unreadable asset, an invalid value) or an empty tile: retrying
#: cannot help, so a Job fails at once (``podFailurePolicy``: FailJob)
EXIT_BAD_INPUT = 2
#: an unexpected exception: a bug in gmrun (its traceback is in the log), never "bad input"
EXIT_BUG = 3
#: What each exit code of a gmrun process means (``128 + N``: ended by signal N).
EXIT_MEANINGS: dict[int, str] = {
    EXIT_OK: "done",
    EXIT_FAILURE: "processing failure",
    EXIT_BAD_INPUT: "bad input",
    EXIT_BUG: "bug",
    130: "interrupted",
    137: "killed",
    143: "terminated",
}


class GmrunError(Exception):
    """A failure the user can act on; the CLI prints ``error: <message>`` and exits with ``exit_code``."""

    exit_code: int = 2


class UserInputError(GmrunError):
    """Bad input: a missing file, an invalid tile id, a malformed config value. Exit code 2."""

    exit_code = 2


class InputAssetError(GmrunError):
    """An input asset could not be read after retries. The message names the asset. Exit code 2."""

    exit_code = 2


class ProcessingError(GmrunError):
    """The tile failed while processing (not the user's input). Exit code 1."""

    exit_code = EXIT_FAILURE


class TransientError(GmrunError):
    """A service could not be reached (the Kubernetes API server, after retries): try again
    later. Exit code 1, as kubectl's."""

    exit_code = EXIT_FAILURE


class InternalError(GmrunError):
    """An unexpected exception: a bug, not the user's input. Exit code 3; the traceback is
    logged before the one-line summary."""

    exit_code = EXIT_BUG


class EmptyTileError(GmrunError):
    """The tile has no observations: it is reported as empty and nothing is written (exit 2)."""

    exit_code = 2


def exit_on_error(fn: F) -> F:
    """For CLI commands: a :class:`GmrunError` becomes ``error: <message>`` on stderr and its exit
    code; Ctrl-C becomes ``error: interrupted`` and 130; any other exception (a bug) is logged
    with its traceback (the ``gmrun`` logger: a JSON record with ``exc`` in a Job, nothing on a
    terminal without ``GMRUN_DEBUG=1``), then ``error: internal error: …`` last, exit code
    :data:`EXIT_BUG` (3). Never a traceback on the terminal."""
    import click

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GmrunError as e:
            logging.getLogger("gmrun").debug("failed", exc_info=True)
            sys.stderr.write(f"error: {redact_credentials(str(e))}\n")
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            sys.stderr.write("error: interrupted\n")
            sys.exit(130)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise  # click's own: usage errors (exit 2), --help, prompts
        except Exception as e:
            log = logging.getLogger("gmrun")
            if os.environ.get("GMRUN_DEBUG") or log.handlers:
                log.error(
                    "unexpected failure: %s: %s",
                    type(e).__name__,
                    e,
                    exc_info=True,
                    extra={"status": "failed", "reason": "bug"},
                )
            sys.stderr.write(f"error: {internal_error_line(e)}\n")
            sys.exit(EXIT_BUG)

    return wrapper  # type: ignore[return-value]


class InputItemError(GmrunError):
    """A STAC item of the tile lacks what the tile needs (an asset, a date in the period). The
    message names the item. Exit code 2, like an unreadable asset."""

    exit_code = 2


def internal_error_line(e: BaseException) -> str:
    """The one line that ends a run stopped by an unexpected exception."""
    text = redact_credentials(str(e).strip().splitlines()[0] if str(e).strip() else "")
    what = f"{type(e).__name__}: {text[:300]}" if text else type(e).__name__
    return f"internal error (a bug in gmrun, exit {EXIT_BUG}): {what}"


#: ``scheme://user:secret@host``: the user-info part of a URL, which may hold credentials
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@\"']+@")


def redact_credentials(text: str) -> str:
    """``text`` with the user-info of every URL in it replaced by ``***``
    (``s3://KEY:SECRET@bucket/x`` → ``s3://***@bucket/x``): for every message and log line.

    >>> redact_credentials("cannot read s3://AKIA:s3cr3t@bucket/plan.json")
    'cannot read s3://***@bucket/plan.json'
    """
    return _USERINFO.sub(r"\1***@", text)
