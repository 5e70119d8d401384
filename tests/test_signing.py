"""Planetary Computer signing at read time (``input.signing: planetary-computer``), against the
tests' HTTP server standing in for PC's SAS token API and for Azure Blob Storage (reached as
GDAL's HTTP proxy; it refuses a blob read without a valid, unexpired token of its container)."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.common.config import RunConfig
from runner.planner.grid import TileId
from runner.planner.plan import Plan
from runner.planner.stac_api import config_for_catalog
from runner.worker.outputs import TileOutputs
from runner.worker.signing import SasSigner, blob_container, redact_tokens
from tests.conftest import (
    Synth,
    assert_clean_error,
    gmrun,
    make_plan,
    tile_cogs,
    tile_items,
    with_changes,
)
from tests.servers import HttpServer, http_files

TILE = TileId(1, 0)
ACCOUNT, CONTAINER = "gmrunsynth", "sentinel2-l2"
TOKEN = re.compile(r"sig=[0-9a-f]{32}")


@pytest.fixture
def server(synth_catalog: Synth, tmp_path: Path) -> Iterator[HttpServer]:
    with http_files(synth_catalog.root, tmp_path / "rules.json") as srv:
        yield srv


# --- units ----------------------------------------------------------------------------------
def test_blob_containers_and_redaction() -> None:
    assert blob_container(f"https://{ACCOUNT}.blob.core.windows.net/{CONTAINER}/a/b.tif") == (
        ACCOUNT,
        CONTAINER,
    )
    assert blob_container("https://x.blob.core.windows.net/c/a.tif?st=1&sig=x") is None  # signed
    assert blob_container("https://example.com/c/a.tif") is None
    assert blob_container("/data/a.tif") is None
    assert redact_tokens("GET http://h/c/a.tif?se=1&sig=0123abcd&sp=rl: 403") == (
        "GET http://h/c/a.tif?se=1&sig=<redacted>&sp=rl: 403"
    )


def test_planetary_computer_preset_turns_signing_on() -> None:
    assert (
        config_for_catalog(RunConfig(), "planetary-computer").input.signing == "planetary-computer"
    )
    assert config_for_catalog(RunConfig(), "earth-search").input.signing == "none"
    assert config_for_catalog(RunConfig(), "items.ndjson").input.signing == "none"


def test_signer_caches_renews_and_refetches(server: HttpServer) -> None:
    now = [time.time()]
    signer = SasSigner(server.sas_token_url, clock=lambda: now[0])
    href = f"http://{ACCOUNT}.blob.core.windows.net/{CONTAINER}/catalog/x.tif"
    a = signer.sign(href)
    assert a.startswith(href + "?") and TOKEN.search(a)
    assert signer.sign(href.replace("x.tif", "y.tif")).split("?")[1] == a.split("?")[1]
    assert signer.sign("https://example.com/z.tif") == "https://example.com/z.tif"
    assert server.tokens_issued() == [f"{ACCOUNT}/{CONTAINER} 1"], "one token per container"
    signer.sign(f"http://{ACCOUNT}.blob.core.windows.net/other/x.tif")
    assert len(server.tokens_issued()) == 2
    assert not signer.expiring()
    now[0] += 3600 - 599  # within the 600 s renewal margin of the tokens' (3600 s) expiry
    assert signer.expiring()
    b = signer.sign(href)
    assert b != a and len(server.tokens_issued()) == 3
    c = signer.sign(href, fresh=True)  # a token the storage refused: fetched anew
    assert c != b and len(server.tokens_issued()) == 4
    assert signer.plain(c) == href and signer.redact(f"error: {c}") == f"error: {href}"


def test_token_api_errors_are_one_line(tmp_path: Path) -> None:
    from runner.common.errors import InputAssetError

    signer = SasSigner("http://127.0.0.1:9/api/sas/v1/token", retries=0, timeout=2)
    with pytest.raises(
        InputAssetError, match=r"cannot get a SAS token from http://127\.0\.0\.1:9/"
    ):
        signer.sign(f"http://{ACCOUNT}.blob.core.windows.net/{CONTAINER}/x.tif")


# --- the worker -----------------------------------------------------------------------------
def _blob_plan(synth: Synth, folder: Path, srv: HttpServer, **input_cfg: object) -> Plan:
    """A plan of the tile whose item hrefs are unsigned Azure blob URLs served by ``srv``."""
    cfg = with_changes(
        synth.layout.config,
        output={"location": str(folder / "out")},
        input={"retries": 1, "sas_token_url": srv.sas_token_url, **input_cfg},
    )
    plan = make_plan(synth, folder / "plan", cfg, tiles=[TILE])
    with tile_items(plan, TILE) as items:
        for it in items:
            for a in it["assets"].values():
                a["href"] = srv.blob_url(a["href"], ACCOUNT, CONTAINER)
    return plan


def _run(plan: Plan, srv: HttpServer, *args: str):
    env = {"GDAL_HTTP_PROXY": srv.base, "NO_PROXY": "", "no_proxy": ""}
    return gmrun(
        "run-tile", "--plan", plan.url, "--tile", str(TILE), "--log-format", "json", *args, env=env
    )


@pytest.mark.slow
def test_worker_signs_blob_hrefs_at_read_time(
    synth_catalog: Synth, server: HttpServer, tmp_path: Path
) -> None:
    """Unsigned: every read is refused (403) and the tile fails naming the plain asset. Signed:
    one token for the whole tile, outputs byte-identical to the local-file run. A token the
    storage refuses (revoked) costs one reload with a fresh token. No token reaches stderr."""
    local = make_plan(
        synth_catalog,
        tmp_path / "local" / "plan",
        with_changes(
            synth_catalog.layout.config, output={"location": str(tmp_path / "local" / "out")}
        ),
        tiles=[TILE],
    )
    proc = gmrun("run-tile", "--plan", local.url, "--tile", str(TILE))
    assert proc.returncode == 0, proc.stderr
    want = tile_cogs(TileOutputs.of(local.config, TILE, local.period))

    unsigned = _blob_plan(synth_catalog, tmp_path / "unsigned", server)
    proc = _run(unsigned, server)
    assert_clean_error(proc, "unreadable", f"http://{ACCOUNT}.blob.core.windows.net/{CONTAINER}/")
    assert "403" in proc.stderr and not server.tokens_issued()

    signed = _blob_plan(synth_catalog, tmp_path / "signed", server, signing="planetary-computer")
    proc = _run(signed, server)
    assert proc.returncode == 0, proc.stderr
    assert server.tokens_issued() == [f"{ACCOUNT}/{CONTAINER} 1"], "one token for the tile"
    out = TileOutputs.of(signed.config, TILE, signed.period)
    assert tile_cogs(out) == want
    item = json.loads(Path(out.item_url).read_text())
    assert not TOKEN.search(json.dumps(item)), "the STAC item records plain hrefs"
    metrics = json.loads(Path(out.metrics_url).read_text())
    assert (metrics["loader"], metrics["loader_fallback"]) == ("gather", None), "signed, gathered"

    server.set_rules(sas_revoked=2)  # tokens 1-2 refused by the storage (1 is already out)
    proc = _run(signed, server, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert len(server.tokens_issued()) == 3, "the refused token was replaced once"
    assert "transient read failure" in proc.stderr
    assert not TOKEN.search(proc.stderr), "no SAS token in the logs"
    assert tile_cogs(out) == want


def test_signer_renews_between_row_bands(
    synth_catalog: Synth, server: HttpServer, tmp_path: Path
) -> None:
    """In-process load in 3 row bands with the signer's clock moved on by 3000 s after each
    band: the tokens are due, so the hrefs are signed again before the next band."""
    import logging

    from runner.worker.load import TileLoader

    plan = _blob_plan(synth_catalog, tmp_path, server, signing="planetary-computer", chunk=120)
    now = [time.time()]
    signer = SasSigner(plan.config.input.sas_token_url, clock=lambda: now[0])
    bands: list[int] = []
    loader = TileLoader(
        plan.items(TILE),
        plan.config,
        plan.grid.geobox(TILE),
        logging.LoggerAdapter(logging.getLogger("test")),
        row_bands=3,
        signer=signer,
    )
    os.environ["GDAL_HTTP_PROXY"] = server.base
    try:
        for _cube, band in loader.bands():
            bands.append(band.index)
            now[0] += 3000
    finally:
        del os.environ["GDAL_HTTP_PROXY"]
    stats = loader.stats
    assert bands == [0, 1, 2] and stats.restarts == 0
    assert len(server.tokens_issued()) == 3, server.tokens_issued()


@pytest.mark.parametrize("skew", [-36000.0, 7200.0])
def test_a_skewed_clock_neither_hammers_nor_keeps_stale_tokens(
    server: HttpServer, skew: float
) -> None:
    """The token's life is taken from the server's Date header: a clock 10 h behind or 2 h ahead
    of the server (past the token's expiry by its own reckoning) still uses one token per
    container, and renews it 600 s before the end of its life."""
    now = [time.time() + skew]
    signer = SasSigner(server.sas_token_url, clock=lambda: now[0])
    for name in ("a", "b", "c"):
        signer.sign(f"http://{ACCOUNT}.blob.core.windows.net/{CONTAINER}/{name}.tif")
    assert len(server.tokens_issued()) == 1 and not signer.expiring()
    now[0] += 3600 - 590
    assert signer.expiring()
