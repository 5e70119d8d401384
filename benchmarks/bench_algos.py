"""Benchmark: algos (numba) vs geomad 1.0.0 on the standard synthetic stack.

Usage::

    .venv/bin/python benchmarks/bench_algos.py [--ny 200 --nx 200 --repeats 5]

Standard stack: 200 x 200 pixels, 10 bands, 75 dates, 35 % of observations
masked (NaN), 15 % bright outliers, reflectance 0-1, eps 1e-4.  Both
implementations run side by side in the same process, interleaved, for 1
thread and for all threads; medians over the repeats are reported.

The process holds two OpenMP runtimes: numba's (system libgomp) and the one
geomad's wheel bundles.  By default idle OpenMP threads spin-wait after a
parallel region, and those spinning threads steal the cores from the other
library's next call, which cost 10-15 % of the 2-thread wall time in the
interleaved runs.  The benchmark therefore sets ``OMP_WAIT_POLICY=PASSIVE``
(idle threads sleep) unless the caller set it; the header prints the policy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

# before numba / geomad load their OpenMP runtimes (see the module docstring)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import algos
from algos.testing import synthetic_stack

MADS = ("emad", "smad", "bcmad")


def _burn(n: int) -> float:
    s = 0
    for i in range(n):
        s += i * i
    return float(s)


def effective_cores(nproc: int, n: int = 3_000_000) -> float:
    """How many cores the machine gives us right now: nproc CPU-bound processes' total
    work divided by their wall time, relative to one process (1.0 = no parallelism)."""
    import multiprocessing as mp

    t0 = time.perf_counter()
    _burn(n)
    one = time.perf_counter() - t0
    with mp.get_context("fork").Pool(nproc) as pool:
        pool.map(_burn, [1000] * nproc)  # start the workers
        t0 = time.perf_counter()
        pool.map(_burn, [n] * nproc)
        many = time.perf_counter() - t0
    return nproc * one / many


def timeit(fn: Callable[[], Any]) -> tuple[tuple[float, float], Any]:
    """((wall seconds, process CPU seconds summed over threads), result) of the
    second of two back-to-back calls.

    The untimed first call wakes the cores: on this kind of VM a vCPU that sat
    idle (e.g. during the 1-thread runs) runs the next 2-thread call up to 45 %
    slower in CPU time, which is the hypervisor, not the code under test.
    """
    fn()
    c0 = time.process_time()
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0, time.process_time() - c0), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ny", type=int, default=200)
    ap.add_argument("--nx", type=int, default=200)
    ap.add_argument("--nb", type=int, default=10)
    ap.add_argument("--nt", type=int, default=75)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--eps", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="'all threads' count")
    args = ap.parse_args()

    import geomad

    warnings.simplefilter("ignore", RuntimeWarning)
    X = synthetic_stack(args.ny, args.nx, args.nb, args.nt)
    npx = args.ny * args.nx
    eps = args.eps
    cube = np.where(np.isnan(X), 0, np.clip(np.round(np.nan_to_num(X) * 10000), 1, 65535))
    cube = cube.astype(np.uint16)

    # warm up / compile (numba cache=True: only the first run ever compiles)
    t_compile, _ = timeit(lambda: algos.nangeomedian_pcm(X[:2, :2], eps=eps))
    for name in MADS:
        getattr(algos, f"{name}_pcm")(X[:2, :2], np.zeros((2, 2, args.nb), np.float32))
    algos.geomedian_mads_u16(cube[:2, :2], scale=1e-4, offset=0.0)

    threads = sorted({1, args.threads})
    load0 = os.getloadavg()
    cores0 = effective_cores(args.threads) if args.threads > 1 else 1.0
    times: dict[tuple[str, str, int], list[float]] = {}
    cpu: dict[tuple[str, str, int], list[float]] = {}

    def rec(impl: str, what: str, nth: int, dt: tuple[float, float]) -> None:
        times.setdefault((impl, what, nth), []).append(dt[0])
        cpu.setdefault((impl, what, nth), []).append(dt[1])

    def call(f: Callable[..., Any], *a: Any, **k: Any) -> Callable[[], Any]:
        return lambda: f(*a, **k)

    gm_o = gm_r = it_o = None
    for _ in range(args.repeats):
        for nth in threads:
            dt, (gm_o, it_o) = timeit(
                call(algos.nangeomedian_pcm, X, eps=eps, num_threads=nth, return_iterations=True)
            )
            rec("ours", "geomedian", nth, dt)
            dt, gm_r = timeit(call(geomad.nangeomedian_pcm, X, eps=eps, num_threads=nth))
            rec("geomad", "geomedian", nth, dt)
            for name in MADS:
                dt, _ = timeit(call(getattr(algos, f"{name}_pcm"), X, gm_o, num_threads=nth))
                rec("ours", name, nth, dt)
                dt, _ = timeit(call(getattr(geomad, f"{name}_pcm"), X, gm_r, num_threads=nth))
                rec("geomad", name, nth, dt)
            dt, _ = timeit(
                call(
                    algos.geomedian_mads_u16, cube, scale=1e-4, offset=0.0, eps=eps, num_threads=nth
                )
            )
            rec("ours", "u16 fused gm+3 MADs", nth, dt)
            rec(
                "geomad",
                "u16 fused gm+3 MADs",
                nth,
                (
                    sum(times[("geomad", w, nth)][-1] for w in ("geomedian", *MADS)),
                    sum(cpu[("geomad", w, nth)][-1] for w in ("geomedian", *MADS)),
                ),
            )

    assert gm_o is not None and gm_r is not None and it_o is not None
    med = {k: statistics.median(v) for k, v in times.items()}
    cmed = {k: statistics.median(v) for k, v in cpu.items()}
    print(
        f"# algos vs geomad {geomad.__version__}: {args.ny}x{args.nx} px, {args.nb} bands, "
        f"{args.nt} dates, 35% masked, 15% outliers, eps={eps:g}, repeats={args.repeats} "
        f"(medians), cpus={os.cpu_count()}, "
        f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}"
    )
    print(f"# first-call time incl. numba load/compile: {t_compile[0]:.2f} s")
    cores1 = effective_cores(args.threads) if args.threads > 1 else 1.0
    print(
        f"# load average before/after: {load0[0]:.2f} / {os.getloadavg()[0]:.2f}; "
        f"cores effectively available to {args.threads} CPU-bound processes before/after: "
        f"{cores0:.2f} / {cores1:.2f}\n"
    )
    print(
        "kpx/s = 1000 pixels per second of wall time (median of the repeats); speed-up = "
        "ratio of those medians; paired speed-up = median over repeats of the ratio of the "
        "two back-to-back calls; 'CPU' columns: per second of process CPU time summed over "
        "threads (robust to other load on the machine).\n"
    )
    print(
        "| step | threads | ours kpx/s | geomad kpx/s | speed-up | paired speed-up | "
        "ours kpx/CPU-s | geomad kpx/CPU-s | speed-up (CPU) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for what in ("geomedian", *MADS, "u16 fused gm+3 MADs"):
        for nth in threads:
            o = npx / med[("ours", what, nth)] / 1e3
            r = npx / med[("geomad", what, nth)] / 1e3
            oc = npx / cmed[("ours", what, nth)] / 1e3
            rc = npx / cmed[("geomad", what, nth)] / 1e3
            paired = statistics.median(
                g / u
                for g, u in zip(
                    times[("geomad", what, nth)], times[("ours", what, nth)], strict=True
                )
            )
            note = " (geomad: sum of its 4 calls)" if what.startswith("u16") else ""
            print(
                f"| {what}{note} | {nth} | {o:.0f} | {r:.0f} | {o / r:.2f}x | {paired:.2f}x | "
                f"{oc:.0f} | {rc:.0f} | {oc / rc:.2f}x |"
            )
    if len(threads) > 1:
        n2 = threads[-1]
        print(
            f"\n| scaling 1 -> {n2} threads (wall) | ours | geomad | ours: cores "
            f"actually used (CPU/wall at {n2} thr.) | ours: CPU-time overhead of {n2} thr. |"
        )
        print("|---|---:|---:|---:|---:|")
        for what in ("geomedian", *MADS, "u16 fused gm+3 MADs"):
            so = med[("ours", what, 1)] / med[("ours", what, n2)]
            sr = med[("geomad", what, 1)] / med[("geomad", what, n2)]
            used = cmed[("ours", what, n2)] / med[("ours", what, n2)]
            ovh = cmed[("ours", what, n2)] / cmed[("ours", what, 1)] - 1
            print(f"| {what} | {so:.2f}x | {sr:.2f}x | {used:.2f} | {ovh * 100:+.0f}% |")

    ok = ~np.isnan(gm_r).any(axis=2)
    err = np.linalg.norm(gm_o - gm_r, axis=-1)[ok]
    Xd = X.astype(np.float64)
    f_o = np.nansum(np.linalg.norm(Xd - gm_o[..., None], axis=2), axis=2)[ok]
    f_r = np.nansum(np.linalg.norm(Xd - gm_r[..., None], axis=2), axis=2)[ok]
    rel = (f_o - f_r) / f_r
    print("\n## accuracy vs geomad (reflectance units)")
    print(
        f"- geomedian ||ours - geomad||: median {np.median(err):.2e}, "
        f"p99.9 {np.quantile(err, 0.999):.2e}, max {err.max():.2e}"
    )
    print(
        f"- objective sum_t||x_t - m||, (ours - geomad)/geomad: median {np.median(rel):.1e}, "
        f"max {rel.max():.1e}; ours better on {np.mean(rel < 0) * 100:.1f}% of pixels, "
        f"worse by >1e-6 on {np.sum(rel > 1e-6)}"
    )
    for name in MADS:
        a = getattr(algos, f"{name}_pcm")(X, gm_o)
        b = getattr(geomad, f"{name}_pcm")(X, gm_r, num_threads=args.threads)
        d = np.abs(a - b)[ok]
        print(
            f"- {name} |ours - geomad|: median {np.median(d):.1e}, p99.9 "
            f"{np.quantile(d, 0.999):.1e}, max {d.max():.1e}"
        )
    it = it_o[ok].astype(np.float64)
    t1 = cmed[("ours", "geomedian", 1)]
    print(f"\n## Weiszfeld iterations per pixel (eps={eps:g})")
    print(f"- mean {it.mean():.2f}, p99 {np.quantile(it, 0.99):.0f}, max {it.max():.0f}")
    print(
        f"- ours, 1 thread: {it.sum() / t1 / 1e6:.2f} M pixel-iterations per CPU-second "
        f"({t1 / it.sum() * 1e9:.0f} ns per pixel-iteration)"
    )


if __name__ == "__main__":
    main()
