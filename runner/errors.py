"""Errors that reach the user as one line and exit code 2 (bad input) or 1 (processing failure)."""

from __future__ import annotations


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
