"""Input assets of a tile: their hrefs, which one an error is about, reading one afresh, and
whether an item has what the tile needs."""

from __future__ import annotations

import os
import time
from typing import Any

from runner.common.errors import InputItemError, UserInputError
from runner.planner.catalog import item_datetime
from runner.planner.period import Period
from runner.worker.gdal import vsi_path

Item = dict[str, Any]


def hrefs(items: list[Item]) -> list[str]:
    """Every asset href of the items, in order."""
    return [a["href"] for it in items for a in it.get("assets", {}).values() if "href" in a]


def item_of(items: list[Item], href: str) -> Item | None:
    """The item holding an asset of that href, if any."""
    for it in items:
        if any(a.get("href") == href for a in it.get("assets", {}).values()):
            return it
    return None


def asset_in_error(exc: BaseException, known: list[str]) -> str | None:
    """The input asset an exception is about, found in its message (or its causes'), else in
    the frames it went through, innermost first: GDAL's HTTP errors (``HTTP response code: 404``)
    name no file, but the reader's frame holds the source it was reading (odc-loader's
    ``src.uri``, the gather's ``uri``); an outer frame may still hold a source read before it."""
    e: BaseException | None = exc
    while e is not None:
        text = str(e)
        for h in known:
            if h in text or os.path.basename(h) in text:
                return h
        e = e.__cause__ or e.__context__
    wanted = set(known)
    e = exc
    while e is not None:
        frames = []
        tb = e.__traceback__
        while tb is not None:
            frames.append(tb.tb_frame)
            tb = tb.tb_next
        for frame in reversed(frames):  # innermost first: the frame that was reading
            for v in frame.f_locals.values():
                uri = v if isinstance(v, str) else getattr(v, "uri", None)
                if isinstance(uri, str) and uri in wanted:
                    return uri
        e = e.__cause__ or e.__context__
    return None


def probe_asset(href: str, retries: int) -> str | None:
    """Read an asset fully, with retries and backoff; the last error text, or None if readable.

    A remote asset is read with ``CPL_VSIL_CURL_NON_CACHED`` naming it: GDAL's ``/vsicurl/``
    cache (shared by the whole process) would otherwise hand back the failed read — a
    connection reset mid-response stays "unreadable" for the rest of the process — and closing
    a non-cached handle drops what the cache held of that file, so the load that follows reads
    it afresh too.
    """
    import rasterio

    err = None
    vsi = vsi_path(href)
    options = {"CPL_VSIL_CURL_NON_CACHED": vsi} if vsi else {}
    for attempt in range(retries + 1):
        try:
            with rasterio.Env(**options), rasterio.open(href) as src:
                src.read(1)
            return None
        except Exception as e:  # any GDAL/IO failure counts as unreadable
            err = str(e).splitlines()[0] if str(e) else type(e).__name__
            if attempt < retries:
                time.sleep(min(0.5 * 2**attempt, 8.0))
    return err


def item_problem(item: Item, needed: tuple[str, ...], period: Period | None) -> str | None:
    """Why a tile cannot use ``item`` (an asset of ``needed`` missing or without an href, no
    datetime, a datetime outside ``period``), or None when it can."""
    assets = item.get("assets")
    if not isinstance(assets, dict):
        return "it has no assets"
    missing = [
        b for b in needed if not isinstance(assets.get(b), dict) or not assets[b].get("href")
    ]
    if missing:
        return f"no asset {', '.join(missing)} (the tile needs {', '.join(needed)})"
    if period is not None:
        try:
            t = item_datetime(item)
        except (UserInputError, ValueError, TypeError, AttributeError):
            return "no valid datetime"
        if not period.contains(t):
            return f"its datetime {t:%Y-%m-%d} is outside the period {period.label}"
    return None


def usable_items(
    items: list[Item],
    needed: tuple[str, ...],
    period: Period | None,
    skip_bad_inputs: bool,
) -> tuple[list[Item], list[tuple[str, str]]]:
    """The items a tile can use, and ``(item id, why)`` of those dropped. Without
    ``skip_bad_inputs`` the first unusable item fails the tile (:class:`InputItemError` naming
    the item): an item quietly dropped would change every output of the tile."""
    kept, dropped = [], []
    for it in items:
        why = item_problem(it, needed, period)
        if why is None:
            kept.append(it)
            continue
        ident = str(it.get("id", "?"))
        if not skip_bad_inputs:
            raise InputItemError(
                f"input item {ident}: {why}; fix the catalog or pass --skip-bad-inputs"
            )
        dropped.append((ident, why))
    return kept, dropped
