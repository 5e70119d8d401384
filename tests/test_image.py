"""The worker image built from the real Dockerfile and run exactly as a Kubernetes Job runs it.

The Job's own container spec (command, arguments, environment, user) from
:func:`runner.fanout.k8s.manifests.build_job` runs in the image with a read-only root, uid
10001, no network and a writable ``/tmp`` only, the plan and catalog mounted read-only; its
outputs must be byte-identical to the same tile computed outside the container, and its numba
kernels must come from the image's cache (none compiled in the pod). See tests/image.py for how
podman runs on a machine without a registry or systemd.
"""

from __future__ import annotations

import json
import math
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from runner.fanout.k8s.manifests import CONTAINER, RUN_AS_USER, JobOptions, build_job
from runner.planner.plan import Plan
from runner.worker.outputs import TileOutputs
from tests.conftest import DemoRun
from tests.image import base_image, build_image, missing_tools, run_container

pytestmark = [pytest.mark.slow, pytest.mark.image, pytest.mark.timeout(1800)]


def job_container(plan: Plan, tile: str) -> dict[str, Any]:
    """The worker container of the tile's Job, as ``gmrun k8s render`` writes it."""
    opts = JobOptions.from_config(plan.config.kubernetes, image="localhost/gmrun:test")
    job = build_job(plan.tile(tile), "image-test", plan.url, opts)
    spec = job["spec"]["template"]["spec"]
    (container,) = [c for c in spec["containers"] if c["name"] == CONTAINER]
    return container


def job_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet resolves it (the downward API's CPU request
    rounded up, divisor 1)."""
    env = {}
    for e in container["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        elif e.get("valueFrom", {}).get("resourceFieldRef", {}).get("resource") == "requests.cpu":
            cpu = str(container["resources"]["requests"]["cpu"])
            cores = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
            env[e["name"]] = str(math.ceil(cores))
        else:
            raise AssertionError(f"unhandled env entry {e}")
    return env


def log_times(stderr: str) -> dict[str, datetime]:
    """When the worker's JSON log first reached each stage (and ``done``)."""
    seen: dict[str, datetime] = {}
    for line in stderr.splitlines():
        if not line.startswith("{"):
            continue
        rec = json.loads(line)
        key = "done" if rec.get("status") == "done" else rec.get("stage")
        if key and key not in seen:
            seen[key] = datetime.fromisoformat(rec["ts"])
    return seen


def test_the_image_computes_a_tile_as_a_job_byte_identical_and_warm(
    demo_run: DemoRun, tmp_path: Path
) -> None:
    assert not missing_tools(), f"the image test needs {missing_tools()}: make test-packages"
    built = build_image(base_image())
    print(f"image built in {built.seconds:.0f} s")

    plan = Plan.load(str(demo_run.folder / "plan"))
    tile = str(plan.tiles[0].tile)
    container = job_container(plan, tile)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["runAsUser"] == RUN_AS_USER == 10001

    # The pod's /tmp (an emptyDir) and an empty output folder in place of the plan's, so the
    # tile computed outside (by the demo) stays to compare with.
    pod_tmp = tmp_path / "pod-tmp"
    pod_out = tmp_path / "pod-out"
    for d in (pod_tmp, pod_out):
        d.mkdir()
        os.chmod(d, 0o1777)
    out_root = Path(plan.config.output.location)
    started = datetime.now().astimezone()
    t0 = time.perf_counter()
    proc = run_container(
        built.tag,
        [*container["command"][1:], *container["args"]],
        tmp=pod_tmp,
        read_only=[demo_run.folder],
        env=job_env(container),
        extra_mounts=[(pod_out, out_root)],
    )
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-4000:]

    # Outputs: every COG and the thumbnail byte-identical to the tile computed outside; the
    # STAC item too, but for its self link and the run's metrics (times, RSS).
    outputs = TileOutputs.of(plan.config, plan.tile(tile).tile, plan.period)
    here = Path(outputs.folder)
    there = pod_out / here.relative_to(out_root)
    files = sorted(p.name for p in here.iterdir())
    assert files == sorted(p.name for p in there.iterdir())
    for name in files:
        if name.endswith((".stac-item.json", ".metrics.json")):
            continue
        assert (here / name).read_bytes() == (there / name).read_bytes(), name
    item_here = json.loads((here / outputs.item_file).read_text())
    item_there = json.loads((there / outputs.item_file).read_text())
    for item in (item_here, item_there):
        item["links"] = [ln for ln in item["links"] if ln["rel"] != "self"]
        item["properties"].pop("gmrun:metrics", None)
    assert item_here == item_there

    # Warm: the kernels came from the image's cache; numba wrote nothing new in the pod.
    cache = pod_tmp / "numba-cache"
    entries = [p for p in cache.rglob("*") if p.is_file()]
    assert entries, "the worker did not seed NUMBA_CACHE_DIR from the image"
    fresh = [p.name for p in entries if p.stat().st_mtime >= started.timestamp() - 1]
    assert not fresh, f"numba compiled in the pod: {fresh}"
    stages = log_times(proc.stderr)
    print(
        f"container: {wall:.1f} s wall; start → load {(stages['load'] - started).total_seconds():.1f} s,"
        f" → done {(stages['done'] - started).total_seconds():.1f} s"
    )
