"""Errors that reach the user as one line and exit code 2 (bad input) or 1 (processing failure)."""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


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

    exit_code = 1


class EmptyTileError(GmrunError):
    """The tile has no observations: it is reported as empty and nothing is written (exit 2)."""

    exit_code = 2


def exit_on_error(fn: F) -> F:
    """For CLI commands: a :class:`GmrunError` becomes ``error: <message>`` on stderr and its exit
    code; Ctrl-C becomes ``error: interrupted`` and 130. Never a traceback."""

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

    return wrapper  # type: ignore[return-value]


class InputItemError(GmrunError):
    """A STAC item of the tile lacks what the tile needs (an asset, a date in the period). The
    message names the item. Exit code 2, like an unreadable asset."""

    exit_code = 2


#: ``scheme://user:secret@host``: the user-info part of a URL, which may hold credentials
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@\"']+@")


def redact_credentials(text: str) -> str:
    """``text`` with the user-info of every URL in it replaced by ``***``
    (``s3://KEY:SECRET@bucket/x`` → ``s3://***@bucket/x``): for every message and log line.

    >>> redact_credentials("cannot read s3://AKIA:s3cr3t@bucket/plan.json")
    'cannot read s3://***@bucket/plan.json'
    """
    return _USERINFO.sub(r"\1***@", text)
