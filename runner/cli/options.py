"""Parsing and options shared by the ``gmrun`` verbs: one line of error for a bad value."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from runner.common.errors import UserInputError

if TYPE_CHECKING:
    from runner.planner.grid import TileId

F = TypeVar("F", bound=Callable[..., Any])


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """``W,S,E,N`` in degrees (EPSG:4326)."""
    try:
        w, s, e, n = (float(v) for v in text.split(","))
    except ValueError:
        raise UserInputError(f"invalid bbox {text!r}: expected W,S,E,N in degrees") from None
    if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
        raise UserInputError(
            f"bbox {text!r} is out of range: need -180 <= W < E <= 180, -90 <= S < N <= 90"
        )
    return w, s, e, n


def parse_tile_list(text: str | None) -> list[TileId] | None:
    """Tile ids separated by commas or spaces (None: not given)."""
    from runner.planner.grid import TileId

    if not text:
        return None
    return [TileId.parse(t) for t in text.replace(" ", ",").split(",") if t]


def parse_memory(text: str) -> int:
    """A Kubernetes-style binary size (``64Gi``, ``1536Mi``, ``512Ki``, ``1Ti``), in bytes: a
    finite number from 1 MiB to 1 PiB (``0Gi``, ``infGi``, ``nanMi`` and ``""`` are refused)."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for u, f in units.items():
        if text.endswith(u):
            try:
                value = float(text[: -len(u)]) * f
            except ValueError:
                break
            if not math.isfinite(value) or not 2**20 <= value <= 2**50:
                raise UserInputError(
                    f"invalid memory {text!r}: must be from 1Mi to 1024Ti, e.g. 64Gi"
                )
            return int(value)
    raise UserInputError(f"invalid memory {text!r}: use e.g. 64Gi or 1536Mi")


def endpoint_option(fn: F) -> F:
    """``--endpoint-url``: an S3-compatible store (sets ``AWS_ENDPOINT_URL``; GDAL follows)."""
    return click.option(
        "--endpoint-url",
        metavar="URL",
        help="S3-compatible endpoint, e.g. http://minio:9000 (default: $AWS_ENDPOINT_URL_S3 "
        "or $AWS_ENDPOINT_URL, else AWS S3). Credentials: the AWS chain only.",
    )(fn)
