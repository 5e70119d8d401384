"""GDAL's settings for the worker: one source for the worker process and the Job's environment.

:data:`STATIC_SETTINGS` do not depend on the plan: the Job manifest sets them as environment
variables (:func:`runner.fanout.k8s.manifests.worker_env`) and the worker sets the same values
when it runs anywhere else. The plan-dependent ones (HTTP retries, timeout, VSI cache) are set by
:func:`gdal_environment` from ``input.*`` when the tile starts.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runner.common.config import RunConfig

#: GDAL settings of every worker, wherever it runs.
STATIC_SETTINGS: dict[str, str] = {
    # MB: each COG block is decoded once into the cube, so the block cache only holds memory (a
    # 64 MB cache was 80 MB more peak RSS in the load, and no faster, on the 1200 px bench tile)
    "GDAL_CACHEMAX": "16",
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no directory listing per remote open
    # the inputs /vsicurl/ may open: COGs (.tif) and Sentinel-2 JPEG 2000 (.jp2)
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF,.jp2",
}

#: GDAL's network file systems, by URL scheme (as rasterio maps hrefs onto them).
_VSI_PREFIXES = {
    "http": "/vsicurl/",
    "https": "/vsicurl/",
    "s3": "/vsis3/",
    "gs": "/vsigs/",
    "az": "/vsiaz/",
}


def vsi_path(href: str) -> str | None:
    """The GDAL ``/vsi…/`` path GDAL caches a remote asset under (None for a local file).

    >>> vsi_path("https://host/a/b.tif"), vsi_path("s3://bucket/k.tif"), vsi_path("/data/x.tif")
    ('/vsicurl/https://host/a/b.tif', '/vsis3/bucket/k.tif', None)
    """
    scheme, sep, rest = href.partition("://")
    prefix = _VSI_PREFIXES.get(scheme.lower()) if sep else None
    if prefix is None:
        return None
    return prefix + (href if prefix == "/vsicurl/" else rest)


def gdal_environment(config: RunConfig) -> dict[str, str]:
    """Set GDAL's settings for a tile and return them: :data:`STATIC_SETTINGS`, HTTP retries and
    timeout for remote COGs (``input.retries``, ``retry_delay`` s, ``http_timeout`` s,
    ``vsi_cache`` / ``vsi_cache_size_mib``), and, with an S3-compatible endpoint
    (``AWS_ENDPOINT_URL[_S3]``, ``--endpoint-url``), the matching ``/vsis3/`` settings. Existing
    environment variables win.

    The settings are also handed to odc-stac (``configure_rio``): its reads run under a
    ``rasterio.Env`` whose options override environment variables, and which otherwise carries
    odc-stac's own cloud defaults (10 HTTP retries, 0.5 s delay doubling each time: minutes of
    retrying a timed-out request whatever ``input.retries`` says)."""
    import odc.stac

    from runner.common import store

    inp = config.input
    env = {
        **STATIC_SETTINGS,
        "GDAL_HTTP_MAX_RETRY": str(inp.retries),
        "GDAL_HTTP_RETRY_DELAY": f"{inp.retry_delay:g}",
        "VSI_CACHE": "TRUE" if inp.vsi_cache else "FALSE",
        "VSI_CACHE_SIZE": str(inp.vsi_cache_size_mib * 2**20),  # bytes
    }
    if inp.http_timeout is not None:
        env["GDAL_HTTP_TIMEOUT"] = str(inp.http_timeout)
    if endpoint := store.endpoint():
        env.update(store.gdal_s3_settings(endpoint))
    for k, v in env.items():
        os.environ.setdefault(k, v)
    settings = {k: os.environ[k] for k in env}
    # GDAL_CACHEMAX is process-wide (read from the environment); rasterio.Env wants it an int
    rio_options: dict[str, Any] = {k: v for k, v in settings.items() if k != "GDAL_CACHEMAX"}
    odc.stac.configure_rio(cloud_defaults=False, **rio_options)
    return settings
