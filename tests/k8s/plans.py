"""Small plans for the Kubernetes tests, made without a catalog (tiles and sizes only)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from runner.common.config import parse_config
from runner.planner.grid import TileId
from runner.planner.period import Period
from runner.planner.plan import Plan, make_tile_plan


def tile_ids(n: int, x0: int = 100, y0: int = 100, width: int = 100) -> list[TileId]:
    """``n`` distinct tile ids in rows of ``width``."""
    return [TileId(x0 + i % width, y0 + i // width) for i in range(n)]


def make_plan(
    folder: Path, n_tiles: int, config: dict[str, Any] | None = None, with_items: bool = True
) -> Plan:
    """Save a plan of ``n_tiles`` tiles (no STAC items) in ``folder`` and load it back."""
    cfg = parse_config(
        {"output": {"location": str(folder / "out")}, **(config or {})}, "test config"
    )
    tiles = tuple(
        make_tile_plan(cfg, t, n_items=10, n_obs=5 + i % 40)
        for i, t in enumerate(tile_ids(n_tiles))
    )
    plan = Plan(cfg, Period(date(2023, 1, 1), date(2023, 12, 31)), tiles, source="test")
    if with_items:
        plan.save(str(folder), {})
    else:  # just plan.json: fast for thousands of tiles
        import json

        folder.mkdir(parents=True, exist_ok=True)
        (folder / "plan.json").write_text(json.dumps(plan.to_dict()))
    return Plan.load(str(folder))


#: A lon/lat box of ~2 km astride the boundary of the africa_10 tiles x210y074 and x211y074
#: (x = 29.8488° E): a synthetic catalog of it gives an Africa plan of 3456 tiles, 2 not empty.
AFRICA_BBOX = (29.838, -2.0, 29.858, -1.99)


def africa_plan(folder: Path, dates: int = 2) -> Plan:
    """``gmrun synth`` over :data:`AFRICA_BBOX`, then ``gmrun plan --region africa --year 2023``
    of that catalog (the default africa_10 grid) into ``folder/plan``, outputs to
    ``folder/out``."""
    from click.testing import CliRunner

    from runner.cli import cli

    bbox = ",".join(str(v) for v in AFRICA_BBOX)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gmrun.yaml").write_text(f"output:\n  location: {folder / 'out'}\n")
    for args in (
        ["synth", str(folder / "catalog"), "--bbox", bbox, "--dates", str(dates), "--seed", "1"],
        [
            "plan",
            "--catalog",
            str(folder / "catalog/items.ndjson"),
            "--region",
            "africa",
            "--year",
            "2023",
            "--config",
            str(folder / "gmrun.yaml"),
            "-o",
            str(folder / "plan"),
        ],
    ):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 0, r.output
    return Plan.load(str(folder / "plan"))
