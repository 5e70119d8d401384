"""A worker that loses nothing under faults (real CLI in subprocesses, real files and servers).

* SIGKILL during the load, the reduction and the write: no done marker; the rerun's COGs are
  byte-identical to an uninterrupted run's;
* ``--max-processing-time``: exit 1 with the reason, no done marker; the heartbeat file is
  touched while the work progresses;
* inputs over HTTP (a local Range server with injected faults): 5xx bursts and slow responses
  are retried and the outputs are identical to the local-file run; a 404 fails the tile naming
  the asset; a truncated COG is skipped with ``--skip-bad-inputs`` and listed in the item;
  connection resets mid-response: transient ones are retried (identical outputs), a persistent
  one fails naming the asset (or is skipped with ``input.skip_bad_inputs``) and the rerun after
  it is lifted is identical; a response slower than ``input.http_timeout`` fails naming the asset.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from runner.common.errors import UserInputError
from runner.planner.grid import TileId
from runner.planner.plan import Plan
from runner.worker.outputs import TileOutputs
from tests.conftest import (
    REPO,
    Synth,
    assert_clean_error,
    gmrun,
    make_plan,
    start_run_tile,
    tile_cogs,
    tile_items,
    with_changes,
)
from tests.servers import HttpServer, http_files

TILE = TileId(1, 0)


@dataclass(frozen=True)
class Baseline:
    plan: Plan
    out: TileOutputs
    touches: int  #: distinct heartbeat mtimes seen during the run


def _plan(synth: Synth, folder: Path, **input_cfg: object) -> Plan:
    cfg = with_changes(
        synth.layout.config,
        output={"location": str(folder / "out")},
        input={"retries": 1, **input_cfg},
    )
    return make_plan(synth, folder / "plan", cfg, tiles=[TILE])


def _worker(plan: Plan, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return start_run_tile(plan, TILE, *args, env=env)


def _records(proc: subprocess.Popen[str]) -> Iterator[dict]:
    assert proc.stderr is not None
    for line in proc.stderr:
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue


@pytest.fixture(scope="module")
def baseline(synth_catalog: Synth, tmp_path_factory: pytest.TempPathFactory) -> Baseline:
    """One uninterrupted run of the tile from local files, watching its heartbeat file."""
    root = tmp_path_factory.mktemp("baseline")
    plan = _plan(synth_catalog, root)
    hb = root / "heartbeat"
    proc = _worker(plan, env={"GMRUN_HEARTBEAT": str(hb)})
    seen: set[int] = set()
    while proc.poll() is None:
        if hb.exists():
            seen.add(hb.stat().st_mtime_ns)
        time.sleep(0.05)
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert proc.returncode == 0, err
    out = TileOutputs.of(plan.config, TILE, plan.period)
    assert out.is_done()
    return Baseline(plan, out, len(seen))


@pytest.mark.slow
def test_heartbeat_is_touched_while_working(baseline: Baseline) -> None:
    assert baseline.touches >= 3, baseline.touches


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["load", "reduce", "write"])
def test_sigkill_leaves_no_done_marker_and_rerun_is_identical(
    synth_catalog: Synth, baseline: Baseline, tmp_path: Path, stage: str
) -> None:
    plan = _plan(synth_catalog, tmp_path)
    out = TileOutputs.of(plan.config, TILE, plan.period)
    proc = _worker(plan)
    written = 0
    for rec in _records(proc):
        if rec.get("stage") != stage:
            continue
        written += "band" in rec
        if (
            (stage == "load" and rec.get("progress", 0) >= 30)  # a third of the reads done
            or stage == "reduce"
            or written >= 3  # after 3 of the 14 COGs
        ):
            proc.send_signal(signal.SIGKILL)
            break
    else:
        pytest.fail(f"the worker ended before its {stage} stage: {proc.wait()}")
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert not Path(out.item_url).exists(), "a killed worker must leave no done marker"
    assert not out.is_done()
    if stage == "write":
        assert len(tile_cogs(out)) >= 3, "some COGs were written before the kill"
    # the same command again: the incomplete tile is redone, identical to an uninterrupted run
    again = gmrun("run-tile", "--plan", plan.url, "--tile", str(TILE))
    assert again.returncode == 0, again.stderr
    assert out.is_done()
    assert tile_cogs(out) == tile_cogs(baseline.out)


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_is_logged_with_its_stage_and_exits_as_a_disruption(
    synth_catalog: Synth, tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    """What Kubernetes sends on eviction, preemption or a drain: one line says which tile stopped,
    in which stage and why, even mid-load (in GDAL's reads); the exit code is the signal's
    (128 + n), not the bad-input code."""
    plan = _plan(synth_catalog, tmp_path)
    out = TileOutputs.of(plan.config, TILE, plan.period)
    proc = _worker(plan)
    for rec in _records(proc):
        if rec.get("stage") == "load" and rec.get("progress", 0) >= 10:
            proc.send_signal(sig)
            break
    else:
        pytest.fail(f"the worker ended before its load stage: {proc.wait()}")
    assert proc.wait(timeout=30) == code
    assert proc.stderr is not None
    rest = proc.stderr.read().splitlines()
    last = json.loads(next(line for line in reversed(rest) if line.startswith("{")))
    assert last["level"] == "error" and last["reason"] == sig.name and last["tile"] == str(TILE)
    assert last["msg"].startswith(f"tile {TILE} stopped by {sig.name} during load")
    assert rest[-1] == f"error: {last['msg']}"
    assert not Path(out.item_url).exists()


@pytest.mark.slow
def test_max_processing_time(synth_catalog: Synth, tmp_path: Path) -> None:
    plan = _plan(synth_catalog, tmp_path)
    hb = tmp_path / "heartbeat"
    proc = gmrun(
        "run-tile",
        "--plan",
        plan.url,
        "--tile",
        str(TILE),
        "--max-processing-time",
        "2",
        env={"GMRUN_HEARTBEAT": str(hb)},
    )
    assert_clean_error(proc, "exceeded --max-processing-time 2 s", str(TILE), code=1)
    assert hb.exists(), "the heartbeat was touched before the deadline"
    out = TileOutputs.of(plan.config, TILE, plan.period)
    assert not Path(out.item_url).exists()
    # through `gmrun run` too: the tile is reported failed, the run exits 1
    run = gmrun("run", "--plan", plan.url, "--max-processing-time", "2")
    assert run.returncode == 1, run.stderr
    assert "failed" in run.stderr
    assert not Path(out.item_url).exists()


# --- inputs over HTTP -----------------------------------------------------------------------------------
@pytest.fixture
def http(synth_catalog: Synth, tmp_path: Path) -> Iterator[HttpServer]:
    with http_files(synth_catalog.root, tmp_path / "rules.json") as srv:
        yield srv


def _over_http(plan: Plan, srv: HttpServer) -> list[dict]:
    """Rewrite the tile's item hrefs to the HTTP server; returns the items."""
    with tile_items(plan, TILE) as items:
        for it in items:
            for a in it["assets"].values():
                a["href"] = srv.url(a["href"])
    return items


def _rel(srv: HttpServer, url: str) -> str:
    return url[len(srv.base) + 1 :]


def _per_asset(
    srv: HttpServer, items: list[dict], picks: tuple[tuple[int, str], ...], value: float
) -> dict:
    """A fault rule ``{path: value}`` for the assets ``(item index, band)`` picked."""
    return {_rel(srv, items[i]["assets"][b]["href"]): value for i, b in picks}


@pytest.mark.slow
def test_http_transient_5xx_and_slow_are_retried(
    synth_catalog: Synth, baseline: Baseline, http: HttpServer, tmp_path: Path
) -> None:
    plan = _plan(synth_catalog, tmp_path, retries=3)
    items = _over_http(plan, http)
    burst = _per_asset(http, items, ((2, "B04"), (5, "SCL"), (9, "B11")), 2)
    slow = _per_asset(http, items, ((7, "B08"),), 0.3)
    http.set_rules(fail_first=burst, slow=slow, status=503)
    proc = gmrun("run-tile", "--plan", plan.url, "--tile", str(TILE))
    assert proc.returncode == 0, proc.stderr
    out = TileOutputs.of(plan.config, TILE, plan.period)
    assert out.is_done()
    assert tile_cogs(out) == tile_cogs(baseline.out), (
        "HTTP inputs must give the local-file run's outputs"
    )
    metrics = json.loads(Path(out.metrics_url).read_text())
    assert (metrics["loader"], metrics["loader_fallback"]) == ("gather", None), "no fallback"


@pytest.mark.slow
def test_http_404_fails_naming_the_asset_truncated_is_skipped(
    synth_catalog: Synth, http: HttpServer, tmp_path: Path
) -> None:
    plan = _plan(synth_catalog, tmp_path)
    items = _over_http(plan, http)
    out = TileOutputs.of(plan.config, TILE, plan.period)
    missing = items[3]["assets"]["B04"]["href"]
    http.set_rules(**{"404": [_rel(http, missing)]})
    proc = gmrun("run-tile", "--plan", plan.url, "--tile", str(TILE))
    assert_clean_error(proc, "unreadable", missing)
    assert not Path(out.item_url).exists()

    cut = items[6]["assets"]["B11"]["href"]
    size = (synth_catalog.root / _rel(http, cut)).stat().st_size
    http.set_rules(truncate={_rel(http, cut): size // 2})
    proc = gmrun("run-tile", "--plan", plan.url, "--tile", str(TILE))
    assert_clean_error(proc, "unreadable", cut)
    assert not Path(out.item_url).exists()
    # with --skip-bad-inputs the item is dropped and listed
    proc = gmrun("run-tile", "--plan", plan.url, "--tile", str(TILE), "--skip-bad-inputs")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(Path(out.item_url).read_text())
    assert doc["properties"]["gmrun:skipped_inputs"] == [items[6]["id"]]
    assert items[6]["id"] in proc.stderr
    # `gmrun run --skip-bad-inputs` passes the option to its workers
    Path(out.item_url).unlink()
    run = gmrun("run", "--plan", plan.url, "--skip-bad-inputs")
    assert run.returncode == 0, run.stderr
    assert json.loads(Path(out.item_url).read_text())["properties"]["gmrun:skipped_inputs"] == [
        items[6]["id"]
    ]


# --- ids never reach a path ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "tile",
    [
        "../x001y001",
        "x001y001/../../",
        "x001y001;rm -rf ~",
        "x001y001$(id)",
        "x001y001\n",
        "x" + "1" * 300 + "y001",
    ],
)
def test_hostile_tile_ids_are_refused_before_any_path(tmp_path: Path, tile: str) -> None:
    with pytest.raises(UserInputError, match="invalid tile id"):
        TileId.parse(tile)
    marker = tmp_path / "touched"
    proc = gmrun(
        "run-tile",
        "--plan",
        str(tmp_path / "plan"),
        "--tile",
        tile,
        "--output",
        str(tmp_path / "out"),
        env={"HOME": str(marker)},
    )
    assert_clean_error(proc, "invalid tile id")
    assert not (tmp_path / "out").exists() and not marker.exists()


@pytest.mark.slow
def test_http_transient_connection_resets_are_retried(
    synth_catalog: Synth, baseline: Baseline, http: HttpServer, tmp_path: Path
) -> None:
    """The first GET of three COGs is reset mid-response: retried, identical outputs."""
    plan = _plan(synth_catalog, tmp_path, retries=2)
    items = _over_http(plan, http)
    flaky = _per_asset(http, items, ((1, "B03"), (4, "SCL"), (8, "B8A")), 1)
    http.set_rules(reset=flaky)
    proc = gmrun("run-tile", "--plan", plan.url, "--tile", str(TILE))
    assert proc.returncode == 0, proc.stderr
    out = TileOutputs.of(plan.config, TILE, plan.period)
    assert tile_cogs(out) == tile_cogs(baseline.out), (
        "retried resets must give the local-file run's outputs"
    )


@pytest.mark.slow
def test_http_persistent_connection_reset(
    synth_catalog: Synth, baseline: Baseline, http: HttpServer, tmp_path: Path
) -> None:
    """Every GET of one COG is reset mid-response (headers and half the body, then a TCP RST)."""
    plan = _plan(synth_catalog, tmp_path, retries=1, skip_bad_inputs=True)
    items = _over_http(plan, http)
    out = TileOutputs.of(plan.config, TILE, plan.period)
    dead = items[5]["assets"]["B04"]["href"]
    http.set_rules(reset={_rel(http, dead): 10**6})
    # --no-skip-bad-inputs wins over the config's true: the tile fails naming the asset
    proc = gmrun("run-tile", "--plan", plan.url, "--tile", str(TILE), "--no-skip-bad-inputs")
    assert_clean_error(proc, "unreadable", dead)
    assert not Path(out.item_url).exists()
    # input.skip_bad_inputs: true (no flag): the item is dropped and listed
    proc = gmrun("run-tile", "--plan", plan.url, "--tile", str(TILE))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(Path(out.item_url).read_text())["properties"]["gmrun:skipped_inputs"] == [
        items[5]["id"]
    ]
    Path(out.item_url).unlink()
    # the fault lifted (GMRUN_SKIP_BAD_INPUTS=0 wins over the config too): the rerun completes,
    # identical to the uninterrupted local-file run
    http.set_rules()
    proc = gmrun(
        "run-tile", "--plan", plan.url, "--tile", str(TILE), env={"GMRUN_SKIP_BAD_INPUTS": "0"}
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(Path(out.item_url).read_text())["properties"]["gmrun:skipped_inputs"] == []
    assert tile_cogs(out) == tile_cogs(baseline.out)


@pytest.mark.slow
def test_http_timeout_fails_naming_the_asset(
    synth_catalog: Synth, http: HttpServer, tmp_path: Path
) -> None:
    """input.http_timeout → GDAL_HTTP_TIMEOUT: a response slower than it is an unreadable asset."""
    plan = _plan(synth_catalog, tmp_path, retries=1, http_timeout=1, retry_delay=0.1)
    items = _over_http(plan, http)
    slow = items[2]["assets"]["B05"]["href"]
    http.set_rules(slow={_rel(http, slow): 4})
    t0 = time.monotonic()
    proc = gmrun("run-tile", "--plan", plan.url, "--tile", str(TILE))
    assert_clean_error(proc, "unreadable", slow)
    assert "timed out" in proc.stderr.lower() or "timeout" in proc.stderr.lower(), proc.stderr
    assert not Path(TileOutputs.of(plan.config, TILE, plan.period).item_url).exists()
    assert time.monotonic() - t0 < 120


def test_gdal_settings_from_config_endpoint_and_env() -> None:
    """input.* and the S3 endpoint become GDAL settings; a variable already set wins."""
    code = (
        "import json; from runner.common.config import parse_config; from runner.worker.gdal import gdal_environment;"
        "print(json.dumps(gdal_environment(parse_config({'input': {'http_timeout': 7, 'retry_delay': 0.5,"
        " 'retries': 4, 'vsi_cache': True, 'vsi_cache_size_mib': 8}}))))"
    )
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("GDAL_", "AWS_", "VSI_", "CPL_"))
    }
    env.update(AWS_ENDPOINT_URL="https://minio.local:9000", GDAL_HTTP_TIMEOUT="30")
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["GDAL_HTTP_TIMEOUT"] == "30"  # the environment wins over input.http_timeout
    assert got["GDAL_HTTP_RETRY_DELAY"] == "0.5" and got["GDAL_HTTP_MAX_RETRY"] == "4"
    assert got["VSI_CACHE"] == "TRUE" and got["VSI_CACHE_SIZE"] == str(8 * 2**20)
    assert got["AWS_S3_ENDPOINT"] == "minio.local:9000" and got["AWS_HTTPS"] == "YES"
    assert got["AWS_VIRTUAL_HOSTING"] == "FALSE"
