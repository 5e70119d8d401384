"""The worker's command line: ``gmrun run-tile --plan URL --tile ID [options]``.

The one place that spells it: the local runner (one process per tile) and the Kubernetes Jobs
both build a worker's arguments here, so a tile runs the same way wherever it runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.planner.grid import TileId


@dataclass(frozen=True)
class WorkerOptions:
    """The ``run-tile`` options a runner passes on to every tile's worker (None: not passed, so
    the worker's own default or the plan's configuration applies)."""

    location: str | None = None  #: ``--output``
    overwrite: bool = False  #: ``--overwrite``
    skip_bad_inputs: bool | None = None  #: ``--[no-]skip-bad-inputs``
    max_processing_time: float | None = None  #: ``--max-processing-time`` (seconds)
    endpoint_url: str | None = None  #: ``--endpoint-url`` (S3-compatible endpoint)
    max_memory: str | None = None  #: ``--max-memory`` (e.g. ``4Gi``)
    row_bands: int | None = None  #: ``--row-bands``
    threads: int | None = None  #: ``--threads`` (the worker's CPU budget)
    log_format: str | None = "json"  #: ``--log-format``: JSON lines, as runners parse them


def run_tile_args(plan_url: str, tile: TileId, opts: WorkerOptions = WorkerOptions()) -> list[str]:
    """The arguments after the program name: ``["run-tile", "--plan", URL, "--tile", ID, …]``.

    >>> run_tile_args("s3://b/plan", TileId(17, 156), WorkerOptions(overwrite=True))
    ['run-tile', '--plan', 's3://b/plan', '--tile', 'x017y156', '--log-format', 'json', '--overwrite']
    """
    args = ["run-tile", "--plan", plan_url, "--tile", str(tile)]
    if opts.log_format:
        args += ["--log-format", opts.log_format]
    if opts.location:
        args += ["--output", opts.location]
    if opts.overwrite:
        args.append("--overwrite")
    if opts.skip_bad_inputs is not None:
        args.append("--skip-bad-inputs" if opts.skip_bad_inputs else "--no-skip-bad-inputs")
    if opts.endpoint_url:
        args += ["--endpoint-url", opts.endpoint_url]
    if opts.max_processing_time:
        t = float(opts.max_processing_time)
        args += ["--max-processing-time", str(int(t)) if t.is_integer() else repr(t)]
    if opts.max_memory:
        args += ["--max-memory", opts.max_memory]
    if opts.row_bands:
        args += ["--row-bands", str(opts.row_bands)]
    if opts.threads:
        args += ["--threads", str(opts.threads)]
    return args
