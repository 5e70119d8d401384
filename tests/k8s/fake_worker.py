"""A stand-in for ``gmrun run-tile`` in the fast Kubernetes tests: writes the tile's done marker.

``python -m tests.k8s.fake_worker run-tile --plan URL --tile ID [...]``. A file
``{plan folder}/fail/{tile}`` makes it fail instead: its content ``exit N`` exits with N (after
printing an error line), ``oom`` kills the process with SIGKILL (the executor reports OOMKilled).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from runner.common import store
from runner.planner.plan import Plan
from runner.worker.outputs import TileOutputs, output_bands


def main(argv: list[str]) -> int:
    args = dict(zip(argv[1::2], argv[2::2], strict=False)) if argv[:1] == ["run-tile"] else {}
    plan = Plan.load(args["--plan"])
    tile = plan.tile(args["--tile"]).tile
    hb = os.environ.get("GMRUN_HEARTBEAT")
    if hb:
        Path(hb).touch()
    time.sleep(float(os.environ.get("FAKE_WORKER_SECONDS", "0.2")))
    fail = Path(store.dirname(plan.url)) / "fail" / str(tile)
    if fail.exists():
        what = fail.read_text().strip()
        if what == "oom":
            os.kill(os.getpid(), signal.SIGKILL)
        code = int(what.split()[-1]) if what.startswith("exit") else 1
        print(json.dumps({"level": "error", "message": f"cannot read asset {fail} (injected)"}))
        return code
    out = TileOutputs.of(plan.config, tile, plan.period)
    item = {
        "type": "Feature",
        "id": out.stem,
        "assets": {b: {"href": out.band_url(b)} for b in output_bands(plan.config)},
    }
    store.write_bytes(out.item_url, json.dumps(item).encode())
    print(json.dumps({"level": "info", "message": f"tile {tile} done"}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
