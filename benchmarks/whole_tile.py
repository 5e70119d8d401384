"""The whole tile, gmrun against the odc-stats path: the second half of ``bench_load.py``.

Each run is a process of its own, watched from outside (wall time, RSS polled every 50 ms) and
reporting its own peak RSS (``VmHWM``: the worker's metrics, the odc-stats child's JSON line);
the two are interleaved, so that a noisy neighbour slows both. See ``bench_load.py``'s
docstring for what each path runs.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from bench_tile import Case, compare_outputs, run_watched, run_worker

HERE = Path(__file__).resolve().parent
MB = 1e6


def run_odc_stats(case: Case, plan_url: str, tile: Any, threads: int) -> dict[str, Any]:
    """``odc_stats_path.py`` on the tile into ``out-KEY/odc-stats``: wall, peak RSS, stages."""
    out = case.out_dir("odc-stats")
    cmd = [sys.executable, str(HERE / "odc_stats_path.py"), "--plan", plan_url]
    cmd += ["--tile", str(tile), "--out", str(out), "--threads", str(threads)]
    log = case.workdir / "logs" / f"{case.key}-odc-stats.log"
    p = run_watched(cmd, log)
    if p.returncode != 0:
        raise SystemExit(
            f"error: the odc-stats path failed (exit {p.returncode}):\n{p.stderr_tail}"
        )
    line = [ln for ln in log.read_text().splitlines() if ln.startswith('{"compute_s"')][-1]
    return {**json.loads(line), "wall_s": p.wall_s, "polled_peak_rss": p.polled_peak_rss}


def cog_hashes(folder: str) -> dict[str, str]:
    """sha256 of every COG of a tile folder."""
    return {
        f.name: hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(Path(folder).glob("*.tif"))
    }


def agreement(outputs: Any, odc_dir: Path, bands: list[str], aux: dict[str, str]) -> list[str]:
    """How gmrun's COGs agree with the odc-stats path's: count, geomedian (DN), MADs."""
    import numpy as np
    import rasterio

    def read(path: str | Path) -> Any:
        with rasterio.open(path) as src:
            return src.read(1)

    lines = []
    ours_n, odc_n = read(outputs.band_url(aux["count"])), read(odc_dir / "count.tif")
    equal = int((ours_n == odc_n).sum())
    lines.append(f"count: {equal} of {ours_n.size} pixels equal (exact: {equal == ours_n.size})")
    diffs = []
    for b in bands:
        d = np.abs(read(outputs.band_url(b)).astype(np.int64) - read(odc_dir / f"{b}.tif"))
        diffs.append(d[ours_n > 0])
    d = np.concatenate(diffs)
    q = np.percentile(d, [50, 99, 99.9]) if d.size else np.zeros(3)
    lines.append(
        f"geomedian (10 bands, DN): |diff| median {q[0]:g}, p99 {q[1]:g}, p99.9 {q[2]:g}, "
        f"max {int(d.max()) if d.size else 0}; equal {100 * float((d == 0).mean()):.1f} %, "
        f"<= 1 DN {100 * float((d <= 1).mean()):.2f} %"
    )
    for name in ("smad", "emad", "bcmad"):
        a, b = read(outputs.band_url(aux[name])), read(odc_dir / f"{name}.tif")
        ok = np.isfinite(a) & np.isfinite(b)
        d, typical = np.abs(a[ok] - b[ok]), float(np.median(np.abs(b[ok]))) if ok.any() else 0.0
        p = np.percentile(d, [50, 99, 99.9]) if d.size else np.zeros(3)
        lines.append(
            f"{name}: |diff| median {p[0]:.1e}, p99 {p[1]:.1e}, p99.9 {p[2]:.1e} (the median "
            f"{name} is {typical:.2e}); NaN where the other is not: "
            f"{int((np.isfinite(a) != np.isfinite(b)).sum())} px"
        )
    return lines


def bench_whole_tile(case: Case, plan_url: str, tile: Any, threads: int, repeats: int) -> None:
    """Print the whole-tile comparison (``repeats`` interleaved runs of each)."""
    from runner.planner.plan import Plan
    from runner.reducers import REDUCERS

    plan = Plan.load(plan_url)
    reducer = REDUCERS[plan.config.algorithm.name]
    names = {b.name for b in reducer.output_bands(plan.config)}
    aux = {k: plan.config.algorithm.aux_names.get(k, k) for k in ("count", "smad", "emad", "bcmad")}
    assert set(aux.values()) <= names, (aux, names)
    print(
        f"\nwhole tile: gmrun run-tile vs the odc-stats path, {repeats} runs each, {threads} threads"
    )
    ours: list[dict[str, Any]] = []
    odc: list[dict[str, Any]] = []
    hashes: list[dict[str, str]] = []
    for i in range(repeats):
        ours.append(run_worker(case, plan_url, tile, "gmrun", ["--threads", str(threads)]))
        hashes.append(cog_hashes(ours[-1]["folder"]))
        odc.append(run_odc_stats(case, plan_url, tile, threads))
        print(
            f"  run {i + 1}: gmrun {ours[-1]['wall_s']:.1f} s, "
            f"{ours[-1]['metrics']['peak_rss_bytes'] / MB:,.0f} MB; odc-stats path "
            f"{odc[-1]['wall_s']:.1f} s, {odc[-1]['peak_rss'] / MB:,.0f} MB",
            flush=True,
        )

    def med(rows: list[dict[str, Any]], f: Any) -> float:
        return float(statistics.median(f(r) for r in rows))

    wall_ours, wall_odc = med(ours, lambda r: r["wall_s"]), med(odc, lambda r: r["wall_s"])
    rss_ours = med(ours, lambda r: r["metrics"]["peak_rss_bytes"])
    rss_odc = med(odc, lambda r: r["peak_rss"])
    st = {
        k: med(ours, lambda r, k=k: r["metrics"]["seconds"].get(k, 0.0))
        for k in ("load", "reduce", "write")
    }
    cube = ours[-1]["metrics"].get("cube_bytes", 0)
    print(
        f"gmrun run-tile:  {wall_ours:6.1f} s (load {st['load']:.1f}, reduce {st['reduce']:.1f}, "
        f"write {st['write']:.1f}), peak RSS {rss_ours / MB:,.0f} MB (cube {cube / MB:,.0f} MB)"
    )
    print(
        f"odc-stats path:  {wall_odc:6.1f} s (load+mask+reduce "
        f"{med(odc, lambda r: r['compute_s']):.1f}, write {med(odc, lambda r: r['write_s']):.1f}), "
        f"peak RSS {rss_odc / MB:,.0f} MB"
    )
    print(
        f"gmrun is {wall_odc / wall_ours:.2f}x faster (target >= 3x); peak RSS "
        f"{rss_ours / rss_odc:.2f}x the odc-stats path's (target <= 0.7x)"
    )
    for line in agreement(
        ours[-1]["outputs"], case.out_dir("odc-stats"), list(plan.config.bands), aux
    ):
        print("  " + line)
    same = all(h == hashes[0] for h in hashes[1:])
    print(f"gmrun reruns: {len(hashes[0])} COGs byte-identical across {len(hashes)} runs: {same}")
    banded = run_worker(case, plan_url, tile, "gmrun-rowbands", ["--row-bands", "3"])
    bands = banded["metrics"].get("row_bands")
    differ = compare_outputs(ours[-1]["outputs"], banded["outputs"], sorted(names))
    print(
        f"row bands ({bands} bands): {len(names) - len(differ)} of {len(names)} COGs equal the "
        f"whole tile's" + (f"; differ: {', '.join(differ)}" if differ else "")
    )
