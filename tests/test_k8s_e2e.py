"""End to end on a real kube-apiserver + Job controller, with the real worker.

synthetic catalog (``gmrun synth``) → plan of 2 × 2 small tiles (``gmrun plan``) → ``gmrun k8s
submit`` → the pod executor runs ``gmrun run-tile`` for each pod → ``gmrun k8s status``. One tile's
items point at a missing asset: its Job fails (exit 2, bad input) after ``backoffLimit`` retries and
status says why; once the asset is fixed, ``rerun --failed`` completes it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from runner.planner.grid import TileId
from runner.planner.plan import Plan
from runner.worker.outputs import TileOutputs, output_bands
from tests.k8s.cluster import TestCluster, get_cluster
from tests.test_k8s_cluster import all_in, executor, gm, status, wait_for

pytestmark = [pytest.mark.k8s, pytest.mark.slow, pytest.mark.timeout(420)]

BROKEN_BAND = "B04"


@pytest.fixture(scope="session")
def cluster() -> TestCluster:
    return get_cluster()


def _gmrun(*args: str) -> str:
    """Run the main ``gmrun`` CLI in-process (synth, plan)."""
    from runner.cli import cli

    r = CliRunner().invoke(cli, list(args))
    assert r.exit_code == 0, r.output
    return r.output


@pytest.fixture(scope="module")
def synthetic_plan(tmp_path_factory: pytest.TempPathFactory) -> Plan:
    from runner.demo.layout import demo_layout, write_config

    root = tmp_path_factory.mktemp("e2e")
    layout = demo_layout(tile_px=64)
    cfg = root / "gmrun.yaml"
    write_config(layout, cfg)
    with cfg.open("a") as f:  # outputs where the "pods" can write; one retry per Job
        f.write(f"output:\n  location: {root / 'out'}\nkubernetes:\n  backoff_limit: 1\n")
    bbox = ",".join(f"{v:.6f}" for v in layout.bbox)
    _gmrun("synth", str(root / "catalog"), "--bbox", bbox, "--dates", "4", "--seed", "3")
    tiles = ",".join(str(t) for t in layout.tiles)
    _gmrun(
        "plan",
        "--catalog",
        str(root / "catalog/items.ndjson"),
        "--tiles",
        tiles,
        "--year",
        "2023",
        "--config",
        str(cfg),
        "-o",
        str(root / "plan"),
    )
    plan = Plan.load(str(root / "plan"))
    assert len(plan.tiles) >= 4
    return plan


def _break_asset(plan: Plan, tile: TileId) -> tuple[Path, str]:
    """Point one band of the tile's first item at a missing file; returns (file, original)."""
    path = Path(plan.folder) / plan.tile(tile).items_href
    original = path.read_text()
    items = [json.loads(line) for line in original.splitlines() if line.strip()]
    href = items[0]["assets"][BROKEN_BAND]["href"]
    items[0]["assets"][BROKEN_BAND]["href"] = href.replace(".tif", "-missing.tif")
    path.write_text("".join(json.dumps(it) + "\n" for it in items))
    return path, original


def _outputs_exist(plan: Plan, tile: str) -> bool:
    out = TileOutputs.of(plan.config, TileId.parse(tile), plan.period)
    return out.is_done() and all(Path(out.band_url(b)).exists() for b in output_bands(plan.config))


def test_end_to_end(cluster: TestCluster, synthetic_plan: Plan) -> None:
    c, plan = cluster, synthetic_plan
    tiles = [str(tp.tile) for tp in plan.tiles]
    bad = tiles[0]  # first, so its retries overlap the other tiles
    items_file, good_items = _break_asset(plan, TileId.parse(bad))

    ex = executor(c, "e2e", parallel=2, command_map=_real_gmrun())
    with ex:
        r = gm(c, "submit", "--plan", plan.url, "--batch", "e2e")
        assert r.exit_code == 0, r.output
        assert f"created {len(tiles)} Jobs" in r.output

        def finished() -> bool:
            return all_in(status(c, "e2e"), "succeeded", "failed")

        t0 = time.monotonic()
        wait_for("all Jobs finished", finished, timeout=300, every=1.0)
        print(f"first round: {time.monotonic() - t0:.1f}s")
        rows: dict[str, dict[str, Any]] = status(c, "e2e")
        for t in tiles:
            if t == bad:
                continue
            assert rows[t]["state"] == "succeeded" and rows[t]["done"], rows[t]
            assert _outputs_exist(plan, t)
        failed = rows[bad]
        assert failed["state"] == "failed" and not failed["done"]
        assert failed["attempts"] == 2 and failed["failures"] == 2  # backoffLimit 1
        assert failed["message"].startswith(
            "BackoffLimitExceeded; last attempt Error (exit 2: bad input)"
        )
        assert (failed["reason"], failed["exit_code"]) == ("bad-input", 2)
        assert f"{BROKEN_BAND}-missing.tif" in failed["message"]
        r = gm(c, "status", "--batch", "e2e")
        assert r.exit_code == 0 and "1 failed" in r.output and "3 succeeded" in r.output
        # the run assembled with the states of the Jobs: the failed tile and its reason
        r = gm(c, "collect", "--batch", "e2e")
        assert r.exit_code == 0 and f"{len(tiles) - 1} done, 1 failed" in r.output, r.output
        product = Path(TileOutputs.of(plan.config, TileId.parse(bad), plan.period).product_folder)
        csv_rows = (product / "tiles.csv").read_text().splitlines()
        assert any(
            row.startswith(f"{bad},failed,") and "BackoffLimitExceeded" in row for row in csv_rows
        ), csv_rows
        coll = json.loads((product / "collection.json").read_text())
        assert sum(ln["rel"] == "item" for ln in coll["links"]) == len(tiles) - 1

        # submitting again creates nothing; a done tile is not rerun
        r = gm(c, "submit", "--plan", plan.url, "--batch", "e2e")
        assert r.exit_code == 0 and f"created 0 Jobs, {len(tiles)} already existed" in r.output
        r = gm(c, "rerun", "--batch", "e2e", "--tiles", tiles[1])
        assert r.exit_code == 2 and "already done" in r.output

        # fix the asset; rerun the failed tile
        items_file.write_text(good_items)
        r = gm(c, "rerun", "--batch", "e2e", "--failed")
        assert r.exit_code == 0 and "deleted 1 Jobs, created 1" in r.output, r.output
        wait_for("the rerun", lambda: all_in(status(c, "e2e"), "succeeded"), timeout=180, every=1.0)
        rows = status(c, "e2e")
        assert all(row["done"] for row in rows.values())
        assert rows[bad]["attempts"] == 1
        assert _outputs_exist(plan, bad)
    assert not ex.errors, ex.errors
    assert sorted(ex.results.values()) == [0] * len(tiles) + [2, 2]


def _real_gmrun() -> Any:
    from tests.k8s.executor import map_command

    return map_command
