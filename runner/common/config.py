"""The run configuration (``gmrun.yaml``), parsed once at the edge into typed, validated objects.

Every key has a default, so an empty file (or none) is a valid configuration. A bad key or value
is reported as one line naming it, e.g. ``gmrun.yaml: algorithm.eps: Input should be greater than 0``.
The plan embeds the parsed configuration, so a worker needs only the plan.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from runner.common.errors import UserInputError

#: Sentinel-2 L2A surface reflectance bands of the GeoMAD product (DE Africa ``gm_s2_annual``).
DEFAULT_BANDS: tuple[str, ...] = (
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B8A",
    "B11",
    "B12",
)

#: ``input.groupby``: which items make one observation (a time step of the cube): those of one
#: solar day (overlapping granules fused) or of one exact acquisition time.
GroupBy = Literal["solar_day", "time"]
#: ``input.signing``: how input hrefs are made readable (``none``: as they are).
SigningMethod = Literal["none", "planetary-computer"]
#: Planetary Computer's SAS token API (``{url}/{account}/{container}``).
PC_TOKEN_URL = "https://planetarycomputer.microsoft.com/api/sas/v1/token"
#: ``algorithm.backend``: whose geomedian/MAD code runs (see :mod:`algos`).
Backend = Literal["numba", "geomad", "hdstats"]

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,62}$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ProductConfig(_Frozen):
    """Product identity; it names the output folders and files. Without a ``name``, the
    algorithm's own (``gm_s2_annual`` for the geomedian, ``median_s2_annual`` for the median)."""

    name: str = "gm_s2_annual"
    version: str = "0-1-0"

    @field_validator("name", "version")
    @classmethod
    def _safe(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError("must be lower-case letters, digits, '_' or '-' (at most 63)")
        return v


class MaskConfig(_Frozen):
    """Sentinel-2 Scene Classification Layer (SCL) masking.

    ``nodata_classes`` are invalid as they are; ``cloud_classes`` form a cloud mask that is first
    *opened* (removes specks smaller than ``opening`` pixels in radius) and then *dilated* by
    ``dilation`` pixels, as in Digital Earth Africa's GeoMAD. Pixels are at the output resolution.
    """

    band: str = "SCL"
    nodata_classes: tuple[int, ...] = (0, 1)
    cloud_classes: tuple[int, ...] = (3, 8, 9, 10)
    opening: int = Field(2, ge=0, le=50)
    dilation: int = Field(5, ge=0, le=100)


class AlgorithmConfig(_Frozen):
    """Which reducer a tile runs (``name``, :data:`runner.reducers.REDUCERS`) and its parameters.

    ``eps`` and ``maxiters`` are the geomedian's; ``backend`` is the geomedian's implementation
    (the median runs on ``numba`` only); ``num_threads`` and ``row_block`` apply to every reducer.
    """

    #: ``geomedian`` (geomedian + SMAD/EMAD/BCMAD + count) or ``median`` (per-band median + count)
    name: str = "geomedian"
    backend: Backend = "numba"
    eps: float = Field(
        1e-4, gt=0, description="stop when the Weiszfeld step is below this (reflectance)"
    )
    maxiters: int = Field(1000, ge=1)
    num_threads: int | None = Field(None, ge=1)
    #: Rows of the cube reduced at once: bounds the float scratch memory of the reduction.
    row_block: int = Field(64, ge=1)

    @model_validator(mode="after")
    def _known(self) -> AlgorithmConfig:
        from runner.reducers import REDUCERS

        reducer = REDUCERS.get(self.name)
        if reducer is None:
            raise ValueError(f"unknown algorithm {self.name!r}: use one of {', '.join(REDUCERS)}")
        if self.backend not in reducer.backends:
            raise ValueError(
                f"the {self.name} runs on backend {' or '.join(reducer.backends)}, not {self.backend!r}"
            )
        return self


class InputConfig(_Frozen):
    """How the Sentinel-2 L2A pixels are read and interpreted."""

    #: Surface reflectance = DN * scale + offset (L2A processing baseline >= 04.00 uses -0.1).
    scale: float = 1e-4
    offset: float = -0.1
    nodata: int = Field(0, ge=0, le=65535)
    #: Group acquisitions into one observation per solar day (fuses overlapping swaths).
    groupby: GroupBy = "solar_day"
    resampling: Literal["nearest", "bilinear", "cubic", "average"] = "nearest"
    #: Dask chunk edge in pixels for the lazy load.
    chunk: int = Field(1024, ge=64)
    #: Observations per Dask chunk: the sink then writes that many time-contiguous values per
    #: pixel and band at once (the cube is (y, x, band, time)) instead of one; 8 loads 20 %
    #: faster than 1 (docs/performance.md). The outputs do not depend on it.
    time_chunk: int = Field(8, ge=1, le=512)
    #: Threads for GDAL reads in the single-worker Dask scheduler.
    threads: int | None = Field(None, ge=1)
    #: Retries of an unreadable asset before the tile fails (names the asset).
    retries: int = Field(3, ge=0, le=20)
    max_cloud_cover: float = Field(100.0, ge=0, le=100)
    #: GDAL HTTP/S3 reads (``GDAL_HTTP_TIMEOUT``, ``GDAL_HTTP_RETRY_DELAY``, ``VSI_CACHE`` and
    #: ``VSI_CACHE_SIZE``); an environment variable of that name wins over the key.
    #: Seconds a single HTTP request may take (``None``: curl's default, no limit).
    http_timeout: int | None = Field(None, ge=1)
    #: Seconds between GDAL's HTTP retries (doubled on each; ``GDAL_HTTP_MAX_RETRY`` = ``retries``).
    retry_delay: float = Field(1.0, ge=0)
    #: GDAL's per-file cache of remote reads; off by default (each COG block is read once).
    vsi_cache: bool = False
    #: Size of that cache per open file, in MiB.
    vsi_cache_size_mib: int = Field(25, ge=1, le=4096)
    #: Drop the items of assets still unreadable after retries instead of failing the tile
    #: (``--skip-bad-inputs`` / ``--no-skip-bad-inputs`` / ``GMRUN_SKIP_BAD_INPUTS`` win).
    skip_bad_inputs: bool = False
    #: Sign input hrefs at read time: ``planetary-computer`` appends Planetary Computer SAS
    #: tokens to Azure Blob hrefs (:mod:`runner.worker.signing`); ``gmrun plan --catalog
    #: planetary-computer`` sets it. ``none``: hrefs are read as they are.
    signing: SigningMethod = "none"
    #: The SAS token API (``{url}/{account}/{container}``) used by ``signing``.
    sas_token_url: str = PC_TOKEN_URL

    @field_validator("sas_token_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not re.match(r"https?://[^/\s]+", v):
            raise ValueError("must be an http:// or https:// URL")
        return v


class GridConfig(_Frozen):
    """The tiling grid. The default is Digital Earth Africa's ``africa_10`` (odc-stats)."""

    crs: str = "EPSG:6933"
    resolution: float = Field(10.0, gt=0)
    tile_size: float = Field(96_000.0, gt=0, description="tile edge in CRS units (metres)")
    #: (x, y) of the corner of tile x000y000, in CRS units (africa_10: -17376000, -7392000).
    origin: tuple[float, float] = (-17_376_000.0, -7_392_000.0)


#: S3 canned ACLs (``output.acl``).
CannedAcl = Literal[
    "private",
    "public-read",
    "public-read-write",
    "authenticated-read",
    "aws-exec-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
]


class OutputConfig(_Frozen):
    location: str = "./gmrun-out"
    overwrite: bool = False
    #: Canned ACL of every S3 object written (e.g. ``bucket-owner-full-control``); ``None``: none.
    acl: CannedAcl | None = None


class KubernetesConfig(_Frozen):
    """Defaults for ``gmrun k8s`` (each has a CLI flag too)."""

    image: str = "ghcr.io/gmrun/gmrun:latest"
    namespace: str = "gmrun"
    service_account: str = "gmrun-worker"
    backoff_limit: int = Field(2, ge=0)
    active_deadline_seconds: int = Field(6 * 3600, ge=60)
    ttl_seconds_after_finished: int = Field(7 * 24 * 3600, ge=0)
    cpu: str = "2"
    s3_secret_name: str | None = None
    kueue_queue: str | None = None
    #: Seconds: each Job runs ``run-tile --max-processing-time N`` and its activeDeadlineSeconds
    #: becomes N plus a margin for startup (see ``runner.fanout.k8s.build_job``).
    max_processing_time: int | None = Field(None, ge=60)


class MemoryConfig(_Frozen):
    """The worker's memory model (:mod:`runner.planner.sizing`): local runs and Jobs alike."""

    #: Memory added to the cube and result estimates for the worker's own needs, in MiB.
    overhead_mib: int = Field(1024, ge=0)


class RunConfig(_Frozen):
    """Everything a run needs besides the region, period and catalog."""

    product: ProductConfig = ProductConfig()
    bands: tuple[str, ...] = DEFAULT_BANDS
    mask: MaskConfig = MaskConfig()
    algorithm: AlgorithmConfig = AlgorithmConfig()
    input: InputConfig = InputConfig()
    grid: GridConfig = GridConfig()
    output: OutputConfig = OutputConfig()
    memory: MemoryConfig = MemoryConfig()
    kubernetes: KubernetesConfig = KubernetesConfig()

    @model_validator(mode="before")
    @classmethod
    def _migrate_and_default(cls, data: Any) -> Any:
        """``kubernetes.memory_overhead_mib`` (plans before 0.2) is ``memory.overhead_mib``; an
        unnamed product takes its algorithm's name (``gm_s2_annual``, ``median_s2_annual``)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        kube = data.get("kubernetes")
        if isinstance(kube, dict) and "memory_overhead_mib" in kube:
            kube = dict(kube)
            legacy = kube.pop("memory_overhead_mib")
            memory = dict(data.get("memory") or {})
            if memory.get("overhead_mib", legacy) != legacy:
                raise ValueError(
                    "kubernetes.memory_overhead_mib is now memory.overhead_mib: give only the latter"
                )
            data["kubernetes"], data["memory"] = kube, {**memory, "overhead_mib": legacy}
        product = data.get("product")
        if product is None or (isinstance(product, dict) and "name" not in product):
            from runner.reducers import REDUCERS

            alg = data.get("algorithm")
            name = alg.get("name") if isinstance(alg, dict) else None
            reducer = REDUCERS.get(name if isinstance(name, str) else "geomedian")
            if reducer is not None:
                data["product"] = {**(product or {}), "name": reducer.default_product}
        return data

    @field_validator("bands")
    @classmethod
    def _bands(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("at least one band is needed")
        if len(set(v)) != len(v):
            raise ValueError("bands must be unique")
        return v


def _format_validation_error(source: str, err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    return f"{source}: {where}: {msg}"


def parse_config(data: object, source: str = "config") -> RunConfig:
    """Validate a mapping into a :class:`RunConfig`; errors become one-line :class:`UserInputError`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserInputError(f"{source}: expected a mapping at the top level")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise UserInputError(_format_validation_error(source, err)) from None


def load_config(path: str | Path | None) -> RunConfig:
    """Read ``gmrun.yaml``; ``None`` gives the defaults."""
    if path is None:
        return RunConfig()
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise UserInputError(f"cannot read config {p}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UserInputError(f"{p}: not valid YAML: {str(e).splitlines()[0]}") from None
    return parse_config(data, str(p))
