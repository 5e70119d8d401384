"""The ``gmrun`` command line: one verb per job, each a thin face over a library call.

    gmrun demo                      # synthetic catalog → plan → run 2×2 tiles → mosaic.png
    gmrun synth OUT --bbox ...      # write a synthetic Sentinel-2 L2A catalog (COGs + STAC)
    gmrun plan --catalog ... --bbox ... --year 2023 -o PLAN
    gmrun run --plan PLAN           # every tile locally, one process per tile
    gmrun run-tile --plan PLAN --tile x017y156   # one tile (what each Kubernetes Job runs)
    gmrun collect --plan PLAN       # the run assembled: collection, mosaics, maps, report
    gmrun k8s submit|status|rerun|render ...     # one Kubernetes Job per tile
    gmrun grid locate|show ...      # the output grid's tiles

The verbs live in :mod:`runner.cli.plan`, :mod:`~runner.cli.run`, :mod:`~runner.cli.collect`, :mod:`~runner.cli.demo` and
:mod:`~runner.cli.k8s`; each imports what it needs when it runs, so ``--help`` is instant.
"""

from __future__ import annotations

import click

from runner import __version__
from runner.cli.collect import collect_cmd
from runner.cli.demo import demo, synth
from runner.cli.k8s import k8s
from runner.cli.plan import grid, plan
from runner.cli.run import run_cmd, run_tile_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="gmrun")
def cli() -> None:
    """gmrun: cloud-free Sentinel-2 geomedian + MAD mosaics, one tile per process or Kubernetes Job.

    A plan splits a region into grid tiles and lists the STAC items of each; each tile is then
    loaded, cloud-masked, reduced (by default to its geometric median and EMAD/SMAD/BCMAD,
    count; algorithm.name: median for a per-band median) and written as COGs plus a STAC item.
    Start with `gmrun demo`.
    """


for _command in (synth, plan, grid, run_tile_cmd, run_cmd, collect_cmd, demo, k8s):
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="gmrun")


__all__ = ["cli", "main"]
