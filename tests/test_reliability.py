"""Faults found by attack (issue: nothing silent, nothing late): names that could leave their
folder, look-alike digits in tile ids, an output that cannot be written found before any work,
and no partial file left by a failed write."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.common import store
from runner.common.config import parse_config
from runner.common.errors import UserInputError
from runner.planner.grid import TileId
from runner.planner.period import Period
from runner.worker.outputs import TileOutputs, output_bytes_bound, preflight
from tests.conftest import REPO, Synth, assert_clean_error, gmrun, make_plan


@pytest.mark.parametrize(
    "bands", [["B02", "../../x/ESCAPED"], ["B02", "a/b"], ["B02", ".hidden"], ["B02", "x" * 64]]
)
def test_band_names_that_reach_paths_are_refused(bands: list[str]) -> None:
    with pytest.raises(UserInputError, match=r"bands: band name"):
        parse_config({"bands": bands})
    with pytest.raises(UserInputError, match=r"mask.band: band name"):
        parse_config({"mask": {"band": bands[1]}})


def test_a_plan_with_a_hostile_band_name_is_refused_before_any_path(
    synth_catalog: Synth, tmp_path: Path
) -> None:
    """The worker reads its config from the plan: a band name edited into plan.json is refused
    when the plan is read, and nothing is written, inside or outside the output folder."""
    plan = make_plan(synth_catalog, tmp_path / "plan", synth_catalog.layout.config)
    doc = json.loads((tmp_path / "plan" / "plan.json").read_text())
    doc["config"]["bands"] = ["B02", "../../x/ESCAPED"]
    (tmp_path / "plan" / "plan.json").write_text(json.dumps(doc))
    out = tmp_path / "deep" / "er" / "out"
    proc = gmrun(
        "run-tile", "--plan", plan.url, "--tile", str(plan.tiles[0].tile), "--output", str(out)
    )
    assert_clean_error(proc, "band name '../../x/ESCAPED'")
    assert not (tmp_path / "deep").exists()


def test_tile_ids_take_ascii_digits_only() -> None:
    assert TileId.parse("x001y001") == TileId(1, 1)
    for text in ("x00\u0661y001", "x001y\uff10\uff10\uff11", "x\u0967\u0968\u0969y001"):
        with pytest.raises(UserInputError, match="invalid tile id"):
            TileId.parse(text)


def test_an_unwritable_output_fails_before_the_load(synth_catalog: Synth, tmp_path: Path) -> None:
    plan = make_plan(synth_catalog, tmp_path / "plan", synth_catalog.layout.config)
    tile = str(plan.tiles[0].tile)
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    for location in ("/proc/gmrun-out", str(blocker / "out")):
        t0 = time.monotonic()
        proc = gmrun("run-tile", "--plan", plan.url, "--tile", tile, "--output", location)
        assert_clean_error(proc, "is not writable", "nothing computed")
        assert '"stage": "load"' not in proc.stderr, "found before loading anything"
        assert time.monotonic() - t0 < 60
    # and through `gmrun run`: the tile fails with the same line, the run exits 1
    run = gmrun("run", "--plan", plan.url, "--tiles", tile, "--output", "/proc/gmrun-out")
    assert run.returncode == 1 and "is not writable" in run.stderr, run.stderr


def test_no_room_for_the_outputs_fails_before_the_load(tmp_path: Path) -> None:
    cfg = parse_config({"output": {"location": str(tmp_path)}})
    out = TileOutputs.of(cfg, TileId(1, 1), Period.parse("2023"))
    preflight(out, (256, 256))  # a small tile fits
    assert not list(Path(out.folder).iterdir()), "the probe is removed"
    huge = (10**6, 10**6)
    assert output_bytes_bound(cfg, huge) > 10**13
    with pytest.raises(UserInputError, match=r"MiB free, and the tile's COGs may take up to"):
        preflight(out, huge)


def test_a_failed_write_leaves_no_partial_file(tmp_path: Path) -> None:
    """The file system refuses mid-write (here RLIMIT_FSIZE, as a full disk would with ENOSPC):
    a one-line StorageError, and no ``.name.tmpPID`` left behind."""
    target = tmp_path / "x" / "band.tif"
    code = f"""
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
from runner.common import store
try:
    store.write_bytes({str(target)!r}, b"x" * 100_000)
except store.StorageError as e:
    print("StorageError:", e)
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"StorageError: cannot write {target}: File too large")
    assert list(target.parent.iterdir()) == []
    store.write_bytes(str(target), b"fine")  # and a write that fits still works
    assert target.read_bytes() == b"fine"


@pytest.mark.slow
def test_items_without_what_the_tile_needs_are_bad_inputs(
    synth_catalog: Synth, tmp_path: Path
) -> None:
    """An item without one of the configured bands (or the mask band), or dated outside the
    plan's period, was used silently (the date dropped, every COG changed): now the tile fails
    naming the item and why, or with --skip-bad-inputs drops it and lists it in the STAC item."""
    from tests.conftest import tile_items

    cfg = synth_catalog.layout.config
    tile = synth_catalog.layout.tiles[0]
    plan = make_plan(synth_catalog, tmp_path / "plan", cfg, tiles=[tile])
    with tile_items(plan, tile) as items:
        no_red, no_scl, late = items[2], items[4], items[6]
        del no_red["assets"]["B04"]
        del no_scl["assets"]["SCL"]
        late["properties"]["datetime"] = "2024-06-15T08:00:00Z"
    out = TileOutputs.of(plan.config, tile, plan.period, str(tmp_path / "out"))
    args = ("run-tile", "--plan", plan.url, "--tile", str(tile), "--output", str(tmp_path / "out"))
    proc = gmrun(*args)
    assert_clean_error(proc, f"input item {no_red['id']}: no asset B04", "--skip-bad-inputs")
    assert "loading" not in proc.stderr, "found before the load"
    assert not out.is_done()

    proc = gmrun(*args, "--skip-bad-inputs")
    assert proc.returncode == 0, proc.stderr
    item = json.loads(Path(out.item_url).read_text())
    assert item["properties"]["gmrun:skipped_inputs"] == [no_red["id"], no_scl["id"], late["id"]]
    assert (
        f"skipping item {late['id']}: its datetime 2024-06-15 is outside the period" in proc.stderr
    )
    inputs = item["properties"]["gmrun:inputs"]
    assert no_red["id"] not in inputs and len(inputs) == len(items) - 3


def _workers_of(plan_url: str) -> list[int]:
    """PIDs of the `gmrun run-tile` processes of a plan running on this machine."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"run-tile" in argv and plan_url.encode() in argv:
            pids.append(int(d.name))
    return pids


@pytest.mark.slow
def test_sigterm_to_gmrun_run_stops_its_workers(synth_catalog: Synth, tmp_path: Path) -> None:
    """SIGTERM to `gmrun run` used to orphan its workers, which went on writing tiles: now it is
    passed on (the worker says where it stopped), no new tile starts, and the run exits 143."""
    import signal

    plan = make_plan(synth_catalog, tmp_path / "plan", synth_catalog.layout.config)
    assert len(plan.tiles) >= 2
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner.cli", "run", "--plan", plan.url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    deadline = time.monotonic() + 120
    while not _workers_of(plan.url):
        assert proc.poll() is None and time.monotonic() < deadline, "no worker started"
        time.sleep(0.1)
    time.sleep(3)  # into its work
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert "error: stopped by SIGTERM" in err and "not started" in err, err
    record = json.loads((tmp_path / "plan" / "runs" / "local.json").read_text())["tiles"]
    (first,) = record.values()  # the tile that was running; the others never started
    assert first["exit_code"] == 143 and first["status"] == "failed", first
    assert first["message"].startswith(f"tile {plan.tiles[0].tile} stopped by SIGTERM during")
    assert _workers_of(plan.url) == [], "no orphan worker"
    assert not any(
        TileOutputs.of(plan.config, tp.tile, plan.period).is_done() for tp in plan.tiles[1:]
    )


def test_credentials_in_urls_are_never_echoed(synth_catalog: Synth, tmp_path: Path) -> None:
    """`s3://KEY:SECRET@bucket/...` given as --plan or --output: a one-line refusal that names
    the URL without its credentials, exit 2, no traceback (and nothing in any log line)."""
    from runner.common.errors import redact_credentials

    assert (
        redact_credentials("s3://AK:SE@b/k and https://u:p@h/x")
        == "s3://***@b/k and https://***@h/x"
    )
    plan = make_plan(synth_catalog, tmp_path / "plan", synth_catalog.layout.config)
    secret = "s3://AKIAEXAMPLE:wJalrXUtnSECRET@bucket"
    tile = str(plan.tiles[0].tile)
    for args in (
        ("run-tile", "--plan", f"{secret}/plan", "--tile", tile),
        ("run-tile", "--plan", plan.url, "--tile", tile, "--output", f"{secret}/out"),
        ("run", "--plan", plan.url, "--output", f"{secret}/out"),
        ("collect", "--plan", f"{secret}/plan"),
    ):
        proc = gmrun(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr, proc.stderr
        assert "wJalrXUtnSECRET" not in proc.stderr + proc.stdout, (args, proc.stderr)
        assert "credentials do not belong in a URL" in proc.stderr, proc.stderr


def test_a_tile_is_done_only_with_every_file_its_item_lists(tmp_path: Path) -> None:
    """The item existed, but a COG it lists was deleted or cut short afterwards: the tile used
    to stay "done" forever; now it is redone."""
    from runner.worker.outputs import output_bands

    cfg = parse_config({"output": {"location": str(tmp_path)}})
    out = TileOutputs.of(cfg, TileId(3, 4), Period.parse("2023"))
    Path(out.folder).mkdir(parents=True)
    assets = {}
    for b in output_bands(cfg):
        Path(out.band_url(b)).write_bytes(b"x" * 100)
        assets[b] = {"href": f"./{Path(out.band_url(b)).name}", "file:size": 100}
    Path(out.item_url).write_text(json.dumps({"type": "Feature", "assets": assets}))
    assert out.is_done()
    Path(out.band_url("B04")).write_bytes(b"x" * 40)  # cut short
    assert not out.is_done()
    Path(out.band_url("B04")).unlink()  # gone
    assert not out.is_done()
    Path(out.band_url("B04")).write_bytes(b"x" * 100)
    assert out.is_done()


def _malformed() -> list[bytes]:
    """Bytes that are not what a plan, a config or an item file should hold."""
    import random

    rng = random.Random(7)
    out = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))) for _ in range(40)]
    out += [
        b"\xff\xfe\x00{",  # not UTF-8
        '{"schema": "gmrun/plan/1", "x": "\u00e9"}'.encode("latin-1"),
        b"[" * 20_000,  # nested too deeply
        b'{"a":' * 20_000,
        b"1e999999",
        b'{"schema": "gmrun/plan/1", "period": {"start": "2023-13-45"}, "tiles": []}',
        b'{"schema": "gmrun/plan/1", "period": {"start": "2023-01-01", "end": "2023-12-31"},'
        b' "tiles": [{"tile": "x001y001", "n_items": 1e999, "n_obs": 1, "cube_bytes": 1,'
        b' "memory_bytes": 1, "cpu": "1", "items": "items/x001y001.ndjson"}]}',
        b'{"schema": "gmrun/plan/1", "period": {"start": "2023-01-01", "end": "2023-12-31"},'
        b' "tiles": [{"tile": "x001y001", "n_items": 1, "n_obs": 1, "cube_bytes": 1,'
        b' "memory_bytes": 1, "cpu": "1", "items": "../../../../etc/passwd"}]}',
        b"null",
        b'"a string"',
        b"- a\n- list\n",
        b"grid: {crs: 'EPSG:99999'}\n",
        b"input: {scale: .nan}\n",
        b"grid: {tile_size: 1e308}\n",
    ]
    return out


def test_malformed_bytes_are_one_line_errors_never_tracebacks(tmp_path: Path) -> None:
    """A fuzz of the three readers of user files — plan.json, gmrun.yaml, an item file: every
    input either parses or is a UserInputError of one line naming the file (and the line of an
    item file); nothing else escapes (no UnicodeDecodeError, RecursionError, CRSError, …)."""
    from runner.common.config import load_config
    from runner.planner.plan import Plan, TilePlan
    from runner.planner.sizing import Resources

    tile = TileId(1, 1)
    good = Plan(
        parse_config({}),
        Period.parse("2023"),
        (TilePlan(tile, 1, 1, 1, Resources(2**30, "2"), "items/x001y001.ndjson"),),
    ).save(str(tmp_path / "good"), {tile: [{"type": "Feature", "id": "a", "assets": {}}]})
    items_file = tmp_path / "good" / "items" / "x001y001.ndjson"
    for i, raw in enumerate(_malformed()):
        plan_file = tmp_path / f"p{i}" / "plan.json"
        plan_file.parent.mkdir()
        plan_file.write_bytes(raw)
        cfg_file = tmp_path / f"c{i}.yaml"
        cfg_file.write_bytes(raw)
        items_file.write_bytes(b'{"type": "Feature", "id": "ok", "assets": {}}\n' + raw)
        for read, arg, where in (
            (Plan.load, str(plan_file), str(plan_file)),
            (load_config, cfg_file, str(cfg_file)),
            (good.items, tile, f"{items_file}:2"),
        ):
            try:
                read(arg)  # type: ignore[operator]
            except UserInputError as e:
                msg = str(e)
                assert "\n" not in msg and len(msg) < 600, (i, msg)
                assert where in msg, (i, where, msg)
            # anything else propagates and fails the test, naming the input by its index


def test_the_cli_answers_malformed_files_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "plan").mkdir()
    for raw in (b"\xff\xfe{", b"[" * 20_000):
        (tmp_path / "plan" / "plan.json").write_bytes(raw)
        proc = gmrun("run-tile", "--plan", str(tmp_path / "plan"), "--tile", "x001y001")
        assert_clean_error(proc, str(tmp_path / "plan" / "plan.json"))
    (tmp_path / "gmrun.yaml").write_bytes(b"\xff\xfe")
    proc = gmrun(
        "plan",
        "--config",
        str(tmp_path / "gmrun.yaml"),
        "--bbox",
        "30,-2,30.1,-1.9",
        "--year",
        "2023",
        "--dry-run",
    )
    assert_clean_error(proc, "not UTF-8")


def test_numbers_are_finite_and_in_range(synth_catalog: Synth, tmp_path: Path) -> None:
    for data, key in (
        ({"input": {"scale": float("nan")}}, "input.scale: Input should be a finite number"),
        ({"algorithm": {"eps": float("inf")}}, "algorithm.eps: Input should be a finite number"),
        ({"grid": {"tile_size": 1e308}}, "a tile must be 1 to 100000 pixels across"),
        ({"grid": {"crs": "EPSG:99999"}}, "grid.crs: 'EPSG:99999' is not a CRS pyproj knows"),
        ({"grid": {"crs": "EPSG:4326"}}, "is not a projected CRS"),
    ):
        with pytest.raises(UserInputError, match=key.replace(".", r"\.").replace("(", r"\(")):
            parse_config(data)
    plan = make_plan(synth_catalog, tmp_path / "plan", synth_catalog.layout.config)
    tile = str(plan.tiles[0].tile)
    for flag, needle in (
        ("--max-memory=infGi", "invalid memory 'infGi'"),
        ("--max-memory=0Gi", "invalid memory '0Gi'"),
        ("--max-memory=", "invalid memory ''"),
        ("--max-processing-time=inf", "--max-processing-time"),
    ):
        proc = gmrun("run-tile", "--plan", plan.url, "--tile", tile, flag)
        assert proc.returncode == 2 and needle in proc.stderr, (flag, proc.stderr)
        assert "Traceback" not in proc.stderr


def test_local_runs_budget_the_memory_the_machine_has(
    synth_catalog: Synth, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside a pod a worker sizes its row bands to what the process can use (the cgroup limit,
    else MemAvailable) instead of assuming the tile fits, and says so; in a pod (the Job's limit
    is the plan's) it does not."""
    from runner.common.memory import BUDGET_SHARE, local_budget, usable_memory

    total = next(
        int(line.split()[1]) * 1024
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    u = usable_memory()
    assert u is not None and 0 < u.bytes <= total
    lb = local_budget(2)
    assert lb is not None and abs(lb.bytes - u.bytes * BUDGET_SHARE / 2) < 2**30
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    assert local_budget() is None
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")

    plan = make_plan(synth_catalog, tmp_path / "plan", synth_catalog.layout.config)
    tile = str(plan.tiles[0].tile)
    proc = gmrun("run-tile", "--plan", plan.url, "--tile", tile, "--output", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr
    budget = next(json.loads(ln) for ln in proc.stderr.splitlines() if "memory budget" in ln)
    assert budget["msg"].endswith("(outside a pod; --max-memory sets another)")
    assert 0 < budget["memory_budget"] <= total
    done = json.loads(next(ln for ln in proc.stderr.splitlines() if '"status": "done"' in ln))
    assert done["metrics"]["row_bands"] == 1  # this small tile fits: one band, as before
    # in a pod, no budget line: the Job's memory limit is the plan's size class
    pod = gmrun(
        "run-tile",
        "--plan",
        plan.url,
        "--tile",
        tile,
        "--output",
        str(tmp_path / "p"),
        env={"KUBERNETES_SERVICE_HOST": "10.0.0.1"},
    )
    assert pod.returncode == 0 and "memory budget" not in pod.stderr, pod.stderr


def test_an_s3_endpoint_that_is_down_is_one_line() -> None:
    env = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_MAX_ATTEMPTS": "1"}
    for args in (
        ("run", "--plan", "s3://bucket/plan"),
        ("run-tile", "--plan", "s3://bucket/plan", "--tile", "x001y001"),
        ("collect", "--plan", "s3://bucket/plan"),
    ):
        proc = gmrun(*args, "--endpoint-url", "http://127.0.0.1:1", env=env)
        assert_clean_error(proc, "cannot read s3://bucket/plan/plan.json", code=1)
