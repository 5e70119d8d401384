"""Shared fixtures: one synthetic Sentinel-2 catalog per test session, and plans over it."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

from runner.common.config import RunConfig, parse_config
from runner.demo.layout import DEMO_PERIOD, DemoLayout, demo_layout
from runner.demo.synth import SynthResult, synthesize
from runner.fanout.local import worker_command
from runner.planner.assign import build_plan
from runner.planner.catalog import read_items
from runner.planner.grid import TileGrid, TileId
from runner.planner.period import Period
from runner.planner.plan import Plan
from runner.worker.outputs import TileOutputs

REPO = Path(__file__).resolve().parents[1]
N_DATES = 40


@dataclass(frozen=True)
class Synth:
    root: Path
    layout: DemoLayout
    result: SynthResult


@pytest.fixture(scope="session")
def synth_catalog(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """A demo-like area (2×2 tiles of 360 px straddling 30° E), 40 dates of 2023, seed 7."""
    root = tmp_path_factory.mktemp("synth")
    layout = demo_layout(360)
    res = synthesize(root / "catalog", layout.bbox, *DEMO_PERIOD, n_dates=N_DATES, seed=7)
    return Synth(root, layout, res)


def make_plan(synth: Synth, folder: Path, config: RunConfig, tiles: list | None = None) -> Plan:
    grid = TileGrid.from_config(config.grid)
    from odc.geo import CRS
    from odc.geo.geom import box

    region = box(*synth.layout.bbox, CRS("EPSG:4326"))
    wanted = (
        tiles if tiles is not None else [t for t in grid.tiles(region) if t in synth.layout.tiles]
    )
    p, items = build_plan(
        config, wanted, read_items(str(synth.result.catalog)), Period(*DEMO_PERIOD)
    )
    return p.save(str(folder), items)


@contextlib.contextmanager
def tile_items(plan: Plan, tile: object) -> Iterator[list[dict]]:
    """The tile's items in a saved plan, to edit in place (hrefs, …): written back on exit."""
    path = Path(plan.folder) / plan.tile(tile).items_href
    items = [json.loads(line) for line in path.read_text().splitlines()]
    yield items
    path.write_text("".join(json.dumps(it) + "\n" for it in items))


def tile_cogs(out: TileOutputs) -> dict[str, bytes]:
    """The bytes of every COG a tile wrote to a local folder, by file name."""
    return {p.name: p.read_bytes() for p in sorted(Path(out.folder).glob("*.tif"))}


def with_changes(config: RunConfig, **sections: dict) -> RunConfig:
    data = config.model_dump(mode="json")
    for k, v in sections.items():
        data[k] = {**data[k], **v}
    return parse_config(data)


def gmrun(
    *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "runner.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def start_run_tile(
    plan: Plan, tile: TileId, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start the real ``gmrun run-tile`` of ``tile`` in the background, as ``gmrun run`` starts
    it (:func:`runner.fanout.local.worker_command`: JSON log lines on the ``stderr`` pipe), with
    ``args`` appended; stdout discarded."""
    return subprocess.Popen(
        [*worker_command(plan.url, tile), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def assert_clean_error(
    proc: subprocess.CompletedProcess[str], *needles: str, code: int = 2
) -> None:
    """The CLI failed the way users should see it: the exit code, one ``error:`` line naming
    ``needles``, and no traceback."""
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    for n in needles:
        assert n in errors[0], errors[0]


@dataclass(frozen=True)
class ExactRun:
    """All demo tiles computed with morphology off (opening 0, dilation 0): exact truth tests."""

    synth: Synth
    plan: Plan
    out: Path


@dataclass(frozen=True)
class DemoRun:
    folder: Path
    proc: subprocess.CompletedProcess[str]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """``gmrun demo`` once per session (2×2 tiles of 96 px, 6 dates), as a user runs it."""
    folder = tmp_path_factory.mktemp("demo") / "demo"
    proc = gmrun("demo", str(folder), "--tile-px", "96", "--dates", "6")
    assert proc.returncode == 0, proc.stderr
    return DemoRun(folder, proc)


@pytest.fixture(scope="session")
def exact_run(synth_catalog: Synth, tmp_path_factory: pytest.TempPathFactory) -> ExactRun:
    root = tmp_path_factory.mktemp("exact")
    cfg = with_changes(
        synth_catalog.layout.config,
        mask={"opening": 0, "dilation": 0},
        output={"location": str(root / "out")},
    )
    plan = make_plan(synth_catalog, root / "plan", cfg)
    proc = gmrun("run", "--plan", plan.url)
    assert proc.returncode == 0, proc.stderr
    return ExactRun(synth_catalog, plan, root / "out")


__all__ = [
    "N_DATES",
    "REPO",
    "DemoRun",
    "ExactRun",
    "Synth",
    "assert_clean_error",
    "date",
    "gmrun",
    "make_plan",
    "start_run_tile",
    "tile_cogs",
    "tile_items",
    "with_changes",
]
