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
