"""S3 inputs and outputs against a real ``moto_server`` subprocess: plan and items read from
s3://, COGs and the STAC item written there (multipart for large objects), read back through
boto3 and GDAL's /vsis3/; input COGs read from s3:// (``--endpoint-url``); an S3 fault proxy
failing PUTs, UploadParts and CompleteMultipartUploads (transient: retried; persistent: a clean
failure with no done marker, and a byte-identical rerun)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from runner.common import store
from runner.planner.assign import build_plan
from runner.planner.catalog import read_items
from runner.planner.grid import TileId
from runner.planner.period import Period
from runner.planner.plan import Plan
from runner.worker.outputs import COG_TYPE, TileOutputs, output_bands
from tests.conftest import Synth, assert_clean_error, gmrun, make_plan, tile_items, with_changes
from tests.servers import S3Proxy, S3Server, moto_s3, s3_fault_proxy

pytestmark = pytest.mark.slow
BUCKET = "gmrun-test"


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    with moto_s3() as srv:
        yield srv


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """This process talks to the server too (boto3 via runner.common.store; GDAL via /vsis3/)."""
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    store.s3_client.cache_clear()
    client = store.s3_client()
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=BUCKET)
    yield s3_server
    store.s3_client.cache_clear()


def test_store_roundtrip_and_multipart(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"s3://{BUCKET}/t/big.bin"
    monkeypatch.setattr(store, "MULTIPART_THRESHOLD", 5 * 2**20)
    data = bytes(range(256)) * (6 * 2**20 // 256 + 7)  # > 6 MiB: two parts
    store.write_bytes(url, data, "application/x-test")
    assert store.read_bytes(url) == data
    head = store.s3_client().head_object(Bucket=BUCKET, Key="t/big.bin")
    assert head["ContentType"] == "application/x-test"
    assert head["ETag"].strip('"').endswith("-2"), head["ETag"]  # a two-part multipart upload
    assert store.exists(url)
    assert not store.exists(f"s3://{BUCKET}/t/missing")
    with pytest.raises(FileNotFoundError):
        store.read_bytes(f"s3://{BUCKET}/t/missing")


def test_run_with_s3_plan_and_outputs(synth_catalog: Synth, s3: S3Server, tmp_path: Path) -> None:
    import rasterio

    tile = TileId(0, 0)
    cfg = with_changes(synth_catalog.layout.config, output={"location": str(tmp_path / "unused")})
    plan_url = f"s3://{BUCKET}/plan"
    saved = make_plan(synth_catalog, plan_url, cfg, tiles=[tile])
    plan = Plan.load(plan_url)
    assert plan.url == f"{plan_url}/plan.json" and [tp.tile for tp in plan.tiles] == [tile]
    assert plan.items(tile) == saved.items(tile) and len(plan.items(tile)) > 0

    location = f"s3://{BUCKET}/out"
    out = TileOutputs.of(plan.config, tile, plan.period, location)
    assert not out.is_done()
    # credentials only from the environment (the standard AWS chain); a small multipart threshold
    env = {**s3.env(), "GMRUN_S3_MULTIPART_THRESHOLD": str(64 * 1024)}
    proc = gmrun("run", "--plan", plan_url, "--output", location, env=env)
    assert proc.returncode == 0, proc.stderr
    assert out.is_done()
    assert not (tmp_path / "unused").exists()

    client = store.s3_client()
    item = json.loads(store.read_bytes(out.item_url))
    assert item["properties"]["odc:region_code"] == str(tile)
    multipart = 0
    # GDAL's own settings (rasterio refuses credentials here: GDAL takes them from the environment)
    gdal_env = {k: s3.env()[k] for k in ("AWS_S3_ENDPOINT", "AWS_HTTPS", "AWS_VIRTUAL_HOSTING")}
    for band in output_bands(plan.config):
        asset = item["assets"][band]
        url = store.join(out.folder, asset["href"][2:])
        assert url == out.band_url(band)
        bucket, key = store.split_s3(url)
        obj = client.get_object(Bucket=bucket, Key=key)
        data = obj["Body"].read()
        assert obj["ContentType"] == COG_TYPE
        assert len(data) == asset["file:size"]
        assert asset["file:checksum"] == "1220" + hashlib.sha256(data).hexdigest()
        multipart += "-" in obj["ETag"]
        with rasterio.Env(**gdal_env), rasterio.open(f"/vsis3/{bucket}/{key}") as src:
            assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG", band
            assert src.shape == tuple(item["properties"]["proj:shape"])
    assert multipart > 0, "objects over the threshold go up as multipart uploads"
    head = client.head_object(Bucket=BUCKET, Key=store.split_s3(out.item_url)[1])
    assert head["ContentType"] == "application/geo+json"

    # done is done on S3 too: a second run skips; an incomplete tile (no item) is redone
    again = gmrun(
        "run-tile", "--plan", plan_url, "--tile", str(tile), "--output", location, env=env
    )
    assert again.returncode == 0 and '"skipped"' in again.stderr, again.stderr
    client.delete_object(Bucket=BUCKET, Key=store.split_s3(out.item_url)[1])
    assert not out.is_done()
    redo = gmrun("run-tile", "--plan", plan_url, "--tile", str(tile), "--output", location, env=env)
    assert redo.returncode == 0 and '"done"' in redo.stderr, redo.stderr
    assert json.loads(store.read_bytes(out.item_url))["assets"] == item["assets"]


def test_missing_s3_plan_is_a_clean_error(s3: S3Server) -> None:
    proc = gmrun("run-tile", "--plan", f"s3://{BUCKET}/nope", "--tile", "x000y000", env=s3.env())
    assert proc.returncode == 2, proc.stderr
    assert "plan not found" in proc.stderr and "Traceback" not in proc.stderr


# --- inputs from s3://, ACL, and PUT faults (a small tile: a quarter of the year) ---------------------
TILE = TileId(1, 0)
SMALL_PERIOD = Period(date(2023, 1, 1), date(2023, 3, 31))
#: Only the credentials: the endpoint comes from --endpoint-url, GDAL's /vsis3/ settings from it.
_GDAL_S3 = ("AWS_ENDPOINT_URL", "AWS_S3_ENDPOINT", "AWS_HTTPS", "AWS_VIRTUAL_HOSTING")


def _small_plan(synth: Synth, folder: Path | str, **sections: dict) -> Plan:
    cfg = with_changes(synth.layout.config, input={"retries": 1}, **sections)
    p, items = build_plan(cfg, [TILE], read_items(str(synth.result.catalog)), SMALL_PERIOD)
    return p.save(str(folder), items)


def _arrays(urls: dict[str, str]) -> dict[str, np.ndarray]:
    import rasterio

    out = {}
    for band, url in urls.items():
        path = f"/vsis3/{'/'.join(store.split_s3(url))}" if store.is_s3(url) else url
        with rasterio.open(path) as src:
            out[band] = src.read()
    return out


def _cog_bytes(out: TileOutputs) -> dict[str, bytes]:
    return {b: store.read_bytes(out.band_url(b)) for b in output_bands(out.config)}


@dataclass(frozen=True)
class Reference:
    """The small tile computed from local files into a local folder: what every S3 run must give."""

    plan: Plan
    out: TileOutputs
    cogs: dict[str, bytes]


@pytest.fixture(scope="module")
def reference(synth_catalog: Synth, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    root = tmp_path_factory.mktemp("s3ref")
    plan = _small_plan(synth_catalog, root / "plan", output={"location": str(root / "out")})
    assert 0 < len(plan.items(TILE)) < 30, "a small tile keeps these tests fast"
    proc = gmrun("run-tile", "--plan", plan.url, "--tile", str(TILE))
    assert proc.returncode == 0, proc.stderr
    out = TileOutputs.of(plan.config, TILE, plan.period)
    assert out.is_done()
    return Reference(plan, out, _cog_bytes(out))


def _unset_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in _GDAL_S3:
        monkeypatch.delenv(k, raising=False)


def test_s3_inputs_with_endpoint_url_match_local_files(
    synth_catalog: Synth,
    reference: Reference,
    s3: S3Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Input COGs on s3:// read through GDAL's /vsis3/, the endpoint given only as
    --endpoint-url; outputs written with output.acl; arrays equal to the local-file run's."""
    client = store.s3_client()
    location = f"s3://{BUCKET}/acl-out"
    plan = _small_plan(
        synth_catalog, tmp_path / "plan", output={"location": location, "acl": "public-read"}
    )
    uploaded = 0
    with tile_items(plan, TILE) as items:
        for it in items:
            for a in it["assets"].values():
                key = (
                    "inputs/" + Path(a["href"]).resolve().relative_to(synth_catalog.root).as_posix()
                )
                client.upload_file(a["href"], BUCKET, key)
                a["href"] = f"s3://{BUCKET}/{key}"
                uploaded += 1
    assert uploaded > 20

    _unset_endpoint(monkeypatch)  # the worker has credentials, but no endpoint but the flag
    proc = gmrun("run-tile", "--plan", plan.url, "--tile", str(TILE), "--endpoint-url", s3.endpoint)
    assert proc.returncode == 0, proc.stderr
    out = TileOutputs.of(plan.config, TILE, plan.period)
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    store.s3_client.cache_clear()
    assert out.is_done()
    bands = output_bands(plan.config)
    got = _arrays({b: out.band_url(b) for b in bands})
    want = _arrays({b: reference.out.band_url(b) for b in bands})
    for b in bands:
        np.testing.assert_array_equal(got[b], want[b], err_msg=b)
    assert _cog_bytes(out) == reference.cogs
    metrics = json.loads(store.read_bytes(out.metrics_url))
    assert (metrics["loader"], metrics["loader_fallback"]) == ("gather", None), "/vsis3/ gathered"

    # output.acl: every object written carries the canned ACL (moto records it)
    all_users = "http://acs.amazonaws.com/groups/global/AllUsers"
    keys = [
        store.split_s3(u)[1]
        for u in [out.item_url, out.metrics_url, out.thumbnail_url, *map(out.band_url, bands)]
    ]
    for key in keys:
        grants = store.s3_client().get_object_acl(Bucket=BUCKET, Key=key)["Grants"]
        assert any(
            g["Grantee"].get("URI") == all_users and g["Permission"] == "READ" for g in grants
        ), (key, grants)
    # ... and an object written without an ACL (an input) has none of it: the check can fail
    plain = client.get_object_acl(
        Bucket=BUCKET, Key=store.split_s3(items[0]["assets"]["B02"]["href"])[1]
    )
    assert not any(g["Grantee"].get("URI") == all_users for g in plain["Grants"])


@pytest.fixture
def proxy(s3: S3Server, tmp_path: Path) -> Iterator[S3Proxy]:
    with s3_fault_proxy(s3, tmp_path / "s3-rules.json") as px:
        yield px


def _put_run(plan: Plan, location: str, endpoint: str) -> subprocess.CompletedProcess[str]:
    env = {"GMRUN_S3_MULTIPART_THRESHOLD": str(64 * 1024), "AWS_MAX_ATTEMPTS": "3"}
    return gmrun(
        "run-tile",
        "--plan",
        plan.url,
        "--tile",
        str(TILE),
        "--output",
        location,
        "--endpoint-url",
        endpoint,
        env=env,
    )


def test_s3_put_faults_persistent_then_transient(
    reference: Reference, proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A persistent UploadPart fault (the 4th and every later one reset) fails the worker with
    one line, no done marker and no dangling multipart upload; with it lifted and transient
    faults on every kind of PUT instead, the same command's retries complete the tile,
    byte-identical to the local run."""
    px = proxy
    _unset_endpoint(monkeypatch)
    px.set_rules(UploadPart={"from": 4, "count": -1, "mode": "reset"})
    location = f"s3://{BUCKET}/put-faults"
    out = TileOutputs.of(reference.plan.config, TILE, reference.plan.period, location)
    proc = _put_run(reference.plan, location, px.endpoint)
    assert_clean_error(proc, "cannot write s3://", out.folder, code=1)
    assert len(px.failures()) >= 3, "every attempt (AWS_MAX_ATTEMPTS) of one object failed"
    assert not store.exists(out.item_url), "no done marker after a failed upload"
    assert not out.is_done()
    client = store.s3_client()
    written = client.list_objects_v2(Bucket=BUCKET, Prefix=store.split_s3(out.folder)[1])
    assert 0 < written.get("KeyCount", 0) < len(reference.cogs), (
        "some COGs went up before the fault"
    )
    assert not client.list_multipart_uploads(Bucket=BUCKET).get("Uploads"), (
        "a failed multipart upload is aborted"
    )

    px.set_rules(  # transient: each fails once or twice, then the request goes through
        UploadPart={"from": 6, "count": 2, "mode": "reset"},
        CompleteMultipartUpload={"from": 3, "count": 1},
        PutObject={"from": 1, "count": 1, "mode": "reset"},
        CreateMultipartUpload={"from": 5, "count": 1},
    )
    before = len(px.failures())
    again = _put_run(reference.plan, location, px.endpoint)
    assert again.returncode == 0, again.stderr
    fired = {f.split()[0] for f in px.failures()[before:]}
    assert fired == {"UploadPart", "CompleteMultipartUpload", "PutObject", "CreateMultipartUpload"}
    assert out.is_done()
    assert _cog_bytes(out) == reference.cogs


def test_sigkill_during_multipart_upload_then_rerun(
    reference: Reference, proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker is SIGKILLed while an UploadPart is in flight (the proxy holds it): no done
    marker; the killed upload stays incomplete on the server (a bucket lifecycle rule
    AbortIncompleteMultipartUpload reclaims it, docs/faults.md); the same command again
    completes the tile, byte-identical to the local run."""
    import signal
    import sys

    from tests.conftest import REPO

    px = proxy
    _unset_endpoint(monkeypatch)
    location = f"s3://{BUCKET}/killed-upload"
    out = TileOutputs.of(reference.plan.config, TILE, reference.plan.period, location)
    px.set_rules(UploadPart={"from": 3, "count": 1, "mode": "hang", "seconds": 60})
    env = {"GMRUN_S3_MULTIPART_THRESHOLD": str(64 * 1024), "AWS_MAX_ATTEMPTS": "3"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runner.cli",
            "run-tile",
            "--plan",
            reference.plan.url,
            "--tile",
            str(TILE),
            "--output",
            location,
            "--endpoint-url",
            px.endpoint,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
        env={**os.environ, **env},
    )
    try:
        deadline = time.monotonic() + 300
        while not px.failures() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert px.failures() == ["UploadPart 3 hang"], "the third part is held by the proxy"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        proc.kill()
    client = store.s3_client()
    assert not store.exists(out.item_url) and not out.is_done()
    prefix = store.split_s3(out.folder)[1]
    pending = client.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix).get("Uploads", [])
    assert len(pending) == 1, "the upload the kill interrupted is left incomplete"

    px.set_rules()
    again = _put_run(reference.plan, location, px.endpoint)
    assert again.returncode == 0, again.stderr
    assert out.is_done()
    assert _cog_bytes(out) == reference.cogs


def test_endpoint_url_is_validated(tmp_path: Path) -> None:
    proc = gmrun(
        "run-tile",
        "--plan",
        str(tmp_path / "plan"),
        "--tile",
        "x001y000",
        "--endpoint-url",
        "http://AKIA:secret@minio:9000",
    )
    assert_clean_error(proc, "invalid endpoint URL", "credentials")
    assert "secret" not in proc.stderr
    proc = gmrun(
        "plan",
        "--catalog",
        "s3://b/items.ndjson",
        "--tiles",
        "x001y000",
        "--year",
        "2023",
        "-o",
        str(tmp_path / "p"),
        "--endpoint-url",
        "minio:9000",
    )
    assert_clean_error(proc, "invalid endpoint URL 'minio:9000'")
    assert not (tmp_path / "p").exists()
