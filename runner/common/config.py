"""The run configuration (``gmrun.yaml``), parsed once at the edge into typed, validated objects.

Every key has a default, so an empty file (or none) is a valid configuration. A bad key or value
is reported as one line naming it, e.g. ``gmrun.yaml: algorithm.eps: Input should be greater than 0``.
The plan embeds the parsed configuration, so a worker needs only the plan.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

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
#: an output band's name: a file-name suffix and a STAC asset key (``B02``, ``EMAD``)
_BAND_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,62}$")


def check_band_name(name: str) -> str:
    """A band name (an input asset key, an output file suffix and STAC asset key): letters,
    digits, ``_`` or ``-``, at most 63, so it can never make a path leave its folder."""
    if not isinstance(name, str) or not _BAND_RE.match(name):
        shown = name if isinstance(name, str) and len(name) <= 40 else repr(name)[:40] + "…"
        raise ValueError(
            f"band name {shown!r}: must be letters, digits, '_' or '-' (at most 63), "
            "starting with a letter or digit"
        )
    return name


#: ``algorithm.emad_units``: the input's digital numbers (odc-algo / DE Africa) or reflectance
EmadUnits = Literal["dn", "reflectance"]
#: ``preset``: configuration files shipped in ``runner/data/presets/`` (docs/deafrica.md)
PRESETS: dict[str, str] = {"deafrica": "deafrica.yaml"}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


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


#: a Kubernetes CPU quantity a Job may request: whole or decimal cores, or millicores
CPU_QUANTITY = r"[1-9][0-9]{0,3}(\.[0-9]{1,3})?|[1-9][0-9]{0,6}m"
#: a class value of the mask band (uint8 or uint16)
SclClass = Annotated[int, Field(ge=0, le=65535)]


class MaskConfig(_Frozen):
    """Sentinel-2 Scene Classification Layer (SCL) masking.

    ``nodata_classes`` are invalid as they are; ``cloud_classes`` form a cloud mask that is first
    *opened* (removes specks smaller than ``opening`` pixels in radius) and then *dilated* by
    ``dilation`` pixels, as in Digital Earth Africa's GeoMAD. Pixels are at the output resolution.
    """

    band: str = "SCL"
    nodata_classes: tuple[SclClass, ...] = (0, 1)
    cloud_classes: tuple[SclClass, ...] = (3, 8, 9, 10)
    opening: int = Field(2, ge=0, le=50)
    dilation: int = Field(5, ge=0, le=100)

    @field_validator("band")
    @classmethod
    def _band_name(cls, v: str) -> str:
        return check_band_name(v)


class AlgorithmConfig(_Frozen):
    """Which reducer a tile runs (``name``, :data:`runner.reducers.REDUCERS`) and its parameters.

    ``eps`` and ``maxiters`` are the geomedian's; ``backend`` is the geomedian's implementation
    (the median runs on ``numba`` only); ``num_threads`` and ``row_block`` apply to every reducer.
    ``num_threads`` (default and ceiling: the worker's CPU budget, :mod:`runner.common.threads`).
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
    #: The geomedian's EMAD band: ``dn``, in the input's digital numbers (reflectance distance
    #: / ``input.scale``, the COG's scale says so), as odc-algo's ``geomedian_with_mads`` and DE
    #: Africa's ``gm_s2_annual`` write it; or ``reflectance``.
    emad_units: EmadUnits = "dn"
    #: Other names for the geomedian's extra bands (keys ``smad``, ``emad``, ``bcmad``,
    #: ``count``), as odc-stats' ``aux_names``; the ``deafrica`` preset's are upper case.
    aux_names: dict[str, str] = Field(default_factory=dict)

    @field_validator("aux_names")
    @classmethod
    def _band_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v.values():
            check_band_name(name)
        return v

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
        aux: tuple[str, ...] = getattr(reducer, "aux_bands", ())
        unknown = sorted(set(self.aux_names) - set(aux))
        if unknown:
            can = (
                f"the {self.name}'s {', '.join(aux)}" if aux else f"none of the {self.name}'s bands"
            )
            raise ValueError(f"aux_names can rename {can}, not {unknown[0]!r}")
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
    #: How pixels are loaded: ``gather`` decodes each source window once and gathers through
    #: GDAL's nearest choice computed once per source grid (runner.worker.gather; same pixels
    #: as odc-stac); ``odc-stac`` warps per chunk, band and date; ``auto``: gather, falling back
    #: to odc-stac (logged with the reason) for inputs it cannot serve (docs/performance.md).
    loader: Literal["auto", "gather", "odc-stac"] = "auto"
    #: Dask chunk edge in pixels for the lazy load.
    chunk: int = Field(1024, ge=64)
    #: Observations per Dask chunk: the sink then writes that many time-contiguous values per
    #: pixel and band at once (the cube is (y, x, band, time)) instead of one; 8 loads 20 %
    #: faster than 1 (docs/performance.md). The outputs do not depend on it.
    time_chunk: int = Field(8, ge=1, le=512)
    #: Threads for GDAL reads in the single-worker Dask scheduler (default and ceiling: the
    #: worker's CPU budget, ``--threads`` / ``$GMRUN_THREADS``: runner.common.threads).
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

    #: the largest tile edge, pixels (africa_10: 9600): beyond it no cube fits a machine
    MAX_TILE_PIXELS: ClassVar[int] = 100_000

    @field_validator("crs")
    @classmethod
    def _known_crs(cls, v: str) -> str:
        from pyproj import CRS
        from pyproj.exceptions import CRSError

        try:
            crs = CRS.from_user_input(v)
        except CRSError:
            raise ValueError(f"{v!r} is not a CRS pyproj knows (e.g. EPSG:6933)") from None
        if not crs.is_projected:
            raise ValueError(f"{v!r} is not a projected CRS: the grid's units must be metres")
        return v

    @model_validator(mode="after")
    def _sane_tiles(self) -> GridConfig:
        n = self.tile_size / self.resolution
        if not 1 <= n <= self.MAX_TILE_PIXELS:
            raise ValueError(
                f"tile_size / resolution is {n:.6g} pixels: a tile must be 1 to "
                f"{self.MAX_TILE_PIXELS} pixels across"
            )
        return self


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

    #: the worker image; None: ``ghcr.io/gmrun/gmrun:{version}`` of the gmrun that renders the
    #: Jobs (a fixed tag, so every node runs the same code; ``latest`` is pulled ``Always``)
    image: str | None = None
    #: None: the kubeconfig context's namespace, else ``gmrun``
    namespace: str | None = None
    service_account: str = "gmrun-worker"
    backoff_limit: int = Field(2, ge=0)
    active_deadline_seconds: int = Field(6 * 3600, ge=60)
    ttl_seconds_after_finished: int = Field(7 * 24 * 3600, ge=0)
    cpu: str = "2"  #: the Job's CPU request, and so its worker's threads
    s3_secret_name: str | None = None
    kueue_queue: str | None = None
    #: Seconds: each Job runs ``run-tile --max-processing-time N`` and its activeDeadlineSeconds
    #: becomes N plus a margin for startup (see ``runner.fanout.k8s.build_job``).
    max_processing_time: int | None = Field(None, ge=60)
    #: the worker's ``/tmp`` emptyDir: its ``sizeLimit`` and the container's ephemeral-storage
    #: request and limit (numba cache, GDAL temporaries, the heartbeat; outputs are built in memory)
    tmp_size: str = Field("4Gi", pattern=r"^[1-9][0-9]{0,5}(Mi|Gi)$")
    #: ``rerun``: the memory of a tile whose last attempt was OOMKilled is multiplied by this
    #: (``--memory-factor``); other failures rerun with the memory they had
    oom_memory_factor: float = Field(1.5, gt=1.0, le=16.0)
    #: ``rerun``: no Job gets more memory than this (``--max-memory``; e.g. the largest node's
    #: allocatable memory): a rerun above it is refused instead of a pod that pends forever
    max_memory: str | None = Field(None, pattern=r"^[1-9][0-9]{0,6}(Mi|Gi|Ti)$")
    # -- placement: the same in every Job of render, submit and rerun (each also a flag) --
    #: the pods' ``nodeSelector`` (e.g. ``{node-pool: highmem}``)
    node_selector: dict[str, str] = {}
    #: the pods' ``tolerations`` (Kubernetes objects: ``{key, operator, value, effect}``)
    tolerations: tuple[dict[str, Any], ...] = ()
    #: the pods' ``affinity`` (a Kubernetes ``Affinity`` object)
    affinity: dict[str, Any] | None = None
    priority_class_name: str | None = None
    #: names of docker-registry Secrets for a private image
    image_pull_secrets: tuple[str, ...] = ()
    #: extra labels of the Jobs and their pods (``app.kubernetes.io/part-of: …``); gmrun's own
    #: (``app.kubernetes.io/name``, ``gmrun.io/*``) cannot be overridden
    labels: dict[str, str] = {}
    #: extra annotations of the Jobs and their pods (``karpenter.sh/do-not-disrupt: "true"``)
    annotations: dict[str, str] = {}
    #: a patch of the pod template (``spec.template``), applied last: mappings merge, ``null``
    #: removes a key, lists of named objects (containers, env, volumes) merge by ``name``
    pod_patch: dict[str, Any] | None = None

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, v: str) -> str:
        if not re.fullmatch(CPU_QUANTITY, v):
            raise ValueError(f"{v!r} is not a CPU quantity such as 4, 1.5 or 3500m")
        return v


class MemoryConfig(_Frozen):
    """The worker's memory model (:mod:`runner.planner.sizing`): local runs and Jobs alike."""

    #: Memory added to the cube and result estimates for the worker's own needs, in MiB.
    overhead_mib: int = Field(1024, ge=0)


def preset_data(name: str) -> dict[str, Any]:
    """The configuration mapping of a shipped preset (``runner/data/presets/{name}.yaml``)."""
    text = resources.files("runner").joinpath("data", "presets", PRESETS[name]).read_text()
    data = yaml.safe_load(text)
    assert isinstance(data, dict) and "preset" not in data, f"bad preset file {name}"
    return data


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, mapping by mapping (a list or scalar replaces)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class RunConfig(_Frozen):
    """Everything a run needs besides the region, period and catalog."""

    #: A shipped configuration the rest of the file is laid over, key by key (``deafrica``:
    #: odc-stats' ``gm_s2_annual`` settings, docs/deafrica.md); recorded in the plan.
    preset: str | None = None
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
        name = data.get("preset")
        if isinstance(name, str) and name in PRESETS:  # an unknown one: ``_known_preset`` says so
            data = _merged(preset_data(name), data)
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

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str | None) -> str | None:
        if v is not None and v not in PRESETS:
            raise ValueError(f"unknown preset {v!r}: use one of {', '.join(PRESETS)}")
        return v

    @field_validator("bands")
    @classmethod
    def _bands(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("at least one band is needed")
        if len(set(v)) != len(v):
            raise ValueError("bands must be unique")
        for name in v:
            check_band_name(name)
        return v

    @model_validator(mode="after")
    def _distinct_outputs(self) -> RunConfig:
        """Output bands name files and STAC assets: no two may share a name."""
        from runner.reducers import reducer_for

        names = [b.name for b in reducer_for(self).output_bands(self)]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(
                f"two output bands would be named {dup[0]!r} (see algorithm.aux_names)"
            )
        return self


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


def load_config(path: str | Path | None, preset: str | None = None) -> RunConfig:
    """Read ``gmrun.yaml``; ``None`` gives the defaults. ``preset`` (``--preset``) replaces the
    file's ``preset:`` key."""
    if preset is not None and preset not in PRESETS:
        raise UserInputError(
            f"--preset: unknown preset {preset!r}: use one of {', '.join(PRESETS)}"
        )
    if path is None:
        return parse_config({} if preset is None else {"preset": preset}, "--preset")
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise UserInputError(f"cannot read config {p}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise UserInputError(f"{p}: not UTF-8 text (byte {e.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UserInputError(f"{p}: not valid YAML: {str(e).splitlines()[0]}") from None
    except RecursionError:
        raise UserInputError(f"{p}: nested too deeply to be a gmrun.yaml") from None
    if preset is not None and isinstance(data, dict | None):
        data = {**(data or {}), "preset": preset}
    return parse_config(data, str(p))
