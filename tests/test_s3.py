"""S3 inputs and outputs against a real ``moto_server`` subprocess: plan and items read from
s3://, COGs and the STAC item written there (multipart for large objects), read back through
boto3 and GDAL's /vsis3/."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner import store
from runner.grid import TileId
from runner.outputs import COG_TYPE, TileOutputs, output_bands
from runner.plan import Plan
from tests.conftest import Synth, gmrun, make_plan, with_changes
from tests.servers import S3Server, moto_s3

pytestmark = pytest.mark.slow
BUCKET = "gmrun-test"


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    with moto_s3() as srv:
        yield srv


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """This process talks to the server too (boto3 via runner.store; GDAL via /vsis3/)."""
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
    saved = make_plan(synth_catalog, plan_url, cfg, tiles=[tile])  # type: ignore[arg-type]
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
