"""Bad input gets one line on stderr and exit code 2 — never a traceback (real CLI, real files)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from runner.planner.grid import TileId
from runner.worker.outputs import TileOutputs
from tests.conftest import (
    DemoRun,
    Synth,
    assert_clean_error,
    gmrun,
    make_plan,
    tile_items,
    with_changes,
)


def test_missing_plan(tmp_path: Path) -> None:
    assert_clean_error(
        gmrun("run-tile", "--plan", str(tmp_path / "nope"), "--tile", "x001y001"), "plan not found"
    )


@pytest.mark.parametrize("tile", ["x1y1", "../../etc/passwd", "x001y001;ls", "x" + "9" * 80 + "y1"])
def test_bad_tile_id(tmp_path: Path, tile: str) -> None:
    assert_clean_error(
        gmrun("run-tile", "--plan", str(tmp_path), "--tile", tile), "invalid tile id"
    )


def test_bad_config_value(tmp_path: Path) -> None:
    cfg = tmp_path / "gmrun.yaml"
    cfg.write_text("algorithm:\n  maxiters: 0\n")
    items = tmp_path / "items.ndjson"
    items.write_text("")
    proc = gmrun(
        "plan",
        "--catalog",
        str(items),
        "--bbox",
        "30,-2,30.1,-1.9",
        "--year",
        "2023",
        "--config",
        str(cfg),
    )
    assert_clean_error(proc, "algorithm.maxiters")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--bbox", "30,-2,200,-1.9", "--year", "2023"], "out of range"),
        (["--bbox", "30,-2", "--year", "2023"], "invalid bbox"),
        (["--bbox", "30,-2,30.1,-1.9", "--period", "someday"], "invalid period"),
        (["--year", "2023"], "give a region"),
    ],
)
def test_bad_plan_arguments(tmp_path: Path, args: list[str], needle: str) -> None:
    items = tmp_path / "items.ndjson"
    items.write_text("")
    assert_clean_error(gmrun("plan", "--catalog", str(items), *args), needle)


@pytest.mark.slow
def test_tile_not_in_plan_and_empty_tile(synth_catalog: Synth, tmp_path: Path) -> None:
    cfg = with_changes(synth_catalog.layout.config, output={"location": str(tmp_path / "out")})
    far = TileId(40, 40)  # 144 km away: no items
    plan = make_plan(synth_catalog, tmp_path / "plan", cfg, tiles=[TileId(0, 0), far])
    assert plan.tile(far).n_items == 0
    assert_clean_error(
        gmrun("run-tile", "--plan", plan.url, "--tile", "x005y005"), "not in the plan"
    )
    proc = gmrun("run-tile", "--plan", plan.url, "--tile", str(far))
    assert_clean_error(proc, "empty")
    assert not (tmp_path / "out").exists(), "an empty tile writes nothing"


@pytest.mark.slow
def test_unreadable_asset_is_named_and_leaves_no_done_marker(
    synth_catalog: Synth, tmp_path: Path
) -> None:
    cfg = with_changes(
        synth_catalog.layout.config,
        output={"location": str(tmp_path / "out")},
        input={"retries": 1},
    )
    tile = TileId(1, 0)
    plan = make_plan(synth_catalog, tmp_path / "plan", cfg, tiles=[tile])
    with tile_items(plan, tile) as items:
        victim = items[5]["assets"]["B11"]
        good = Path(victim["href"])
        broken = tmp_path / "broken" / good.name
        broken.parent.mkdir()
        broken.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # a truncated COG
        victim["href"] = str(broken)
    proc = gmrun("run-tile", "--plan", plan.url, "--tile", str(tile))
    assert_clean_error(proc, "unreadable", str(broken))
    out = TileOutputs.of(plan.config, tile, plan.period)
    assert not Path(out.item_url).exists()
    # fix the asset: the same command now completes the tile
    shutil.copyfile(good, broken)
    again = gmrun("run-tile", "--plan", plan.url, "--tile", str(tile))
    assert again.returncode == 0, again.stderr
    assert out.is_done()


@pytest.mark.slow
def test_demo_command(demo_run: DemoRun) -> None:
    png = demo_run.folder / "mosaic.png"
    from PIL import Image

    with Image.open(png) as im:
        assert im.size == (192, 192)
        grey = im.convert("L").histogram()  # 256 counts
        assert sum(n > 0 for n in grey) > 20, "the mosaic should not be flat"
    # a second run skips the done tiles
    again = gmrun("demo", str(demo_run.folder), "--tile-px", "96", "--dates", "6")
    assert again.returncode == 0 and again.stderr.count("skipped") >= 4, again.stderr


#: ``gmrun`` with a bug injected into the worker: ``run_tile`` raises an unexpected exception
_BUGGY_GMRUN = """
import sys
import runner.worker.tile as tile

def run_tile(*args, **kwargs):
    return {}["no such key"]  # a bug: KeyError

tile.run_tile = run_tile
from runner.cli import main
sys.argv[0] = "gmrun"
main()
"""


def test_a_bug_is_exit_3_with_its_traceback_logged(tmp_path: Path) -> None:
    """An unexpected exception is not "bad input" (2, which a Job's podFailurePolicy fails at
    once) nor a processing failure (1): exit 3, the traceback in the JSON log, one line last."""
    import json
    import os
    import subprocess
    import sys

    from tests.k8s.plans import make_plan as k8s_plan

    plan = k8s_plan(tmp_path / "plan", 1)
    tile = str(plan.tiles[0].tile)
    args = ["run-tile", "--plan", plan.url, "--tile", tile, "--log-format", "json"]
    proc = subprocess.run(
        [sys.executable, "-c", _BUGGY_GMRUN, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == (
        f"error: tile {tile}: internal error (a bug in gmrun, exit 3): KeyError: 'no such key'"
    ), proc.stderr
    records = [json.loads(ln) for ln in lines[:-1] if ln.startswith("{")]
    (bug,) = [r for r in records if r.get("reason") == "bug"]
    assert bug["level"] == "error" and bug["tile"] == tile
    assert bug["exc"].startswith("Traceback") and "KeyError" in bug["exc"]
    # the traceback is in the log (JSON: machines), never loose on stderr
    assert not any(ln.startswith("Traceback") for ln in lines)


def test_any_command_answers_a_bug_with_one_line_and_exit_3() -> None:
    import click
    from click.testing import CliRunner

    from runner.common.errors import exit_on_error

    @click.command()
    @click.option("--n", type=int, default=0)
    @exit_on_error
    def cmd(n: int) -> None:
        raise ValueError(f"bad state s3://KEY:SECRET@bucket/x {n}\nsecond line")

    r = CliRunner().invoke(cmd, ["--n", "7"])
    assert r.exit_code == 3
    assert r.output == (
        "error: internal error (a bug in gmrun, exit 3): ValueError: bad state "
        "s3://***@bucket/x 7\n"
    )
    r = CliRunner().invoke(cmd, ["--n", "x"])  # click's own usage errors are left to click
    assert r.exit_code == 2 and "Invalid value" in r.output
