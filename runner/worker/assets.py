"""Input assets of a tile: their hrefs, which one an error is about, and reading one afresh."""

from __future__ import annotations

import os
import time
from typing import Any

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
    the frames it went through: GDAL's HTTP errors (``HTTP response code: 404``) name no file,
    but odc-loader's reader holds the source (``src.uri``) it was reading."""
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
        tb = e.__traceback__
        while tb is not None:
            for v in tb.tb_frame.f_locals.values():
                uri = v if isinstance(v, str) else getattr(v, "uri", None)
                if isinstance(uri, str) and uri in wanted:
                    return uri
            tb = tb.tb_next
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
