"""Benchmark ``gmrun k8s submit`` and ``status`` against a real kube-apiserver on loopback.

Starts the test control plane of ``tests/k8s/cluster.py`` (etcd on tmpfs, kube-apiserver,
kube-controller-manager with the Job controller, so every Job also gets its pod), plans N tiles
(no catalog needed), then measures:

* submit: Jobs created per second (N Jobs, concurrent requests);
* status: seconds for one ``batch_status`` over the batch (paginated Jobs + pods + done markers)
  and for the whole ``gmrun k8s status -o json`` command in a fresh process;
* submit again: seconds to find that nothing is left to create.

No kubelet runs, so pods stay Pending. Needs ``bash .ci/k8s-setup.sh`` first.

    .venv/bin/python benchmarks/bench_k8s.py --jobs 5000 --workers 32
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runner.fanout import k8s  # noqa: E402
from tests.k8s.cluster import start_cluster  # noqa: E402
from tests.k8s.plans import make_plan  # noqa: E402


def count_pods(cl: k8s.Cluster, namespace: str) -> int:
    """Pods of the batch (the Job controller creates one per Job)."""
    return len(cl.list_pods(namespace, "bench"))


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--jobs", type=int, default=5000, help="tiles/Jobs to submit (default 5000)")
    ap.add_argument(
        "--workers", type=int, default=32, help="concurrent create requests (default 32)"
    )
    ap.add_argument(
        "--settle-timeout",
        type=float,
        default=300,
        help="seconds to wait for the Job controller to create the pods",
    )
    ap.add_argument("--json", dest="json_out", help="also write the results to this JSON file")
    args = ap.parse_args()

    t0 = time.perf_counter()
    cluster = start_cluster()
    startup = time.perf_counter() - t0
    try:
        with tempfile.TemporaryDirectory(prefix="gmrun-bench-k8s-") as tmp:
            plan = make_plan(Path(tmp) / "plan", args.jobs, with_items=False)
            cl = k8s.Cluster(str(cluster.kubeconfig), pool=args.workers)
            opts = k8s.JobOptions.from_config(plan.config.kubernetes)

            res = k8s.submit(cl, plan, "bench", opts, workers=args.workers)
            assert len(res.created) == args.jobs, (len(res.created), len(res.existed))
            submit_rate = args.jobs / res.seconds

            t = time.perf_counter()
            again = k8s.submit(cl, plan, "bench", opts, workers=args.workers)
            resubmit_s = time.perf_counter() - t
            assert not again.created and len(again.existed) == args.jobs

            # steady state: wait until the Job controller has made every Job's pod
            t = time.perf_counter()
            n_pods = count_pods(cl, opts.namespace)
            while n_pods < args.jobs and time.perf_counter() - t < args.settle_timeout:
                time.sleep(5)
                n_pods = count_pods(cl, opts.namespace)
            settle_s = time.perf_counter() - t

            t = time.perf_counter()
            rows = k8s.batch_status(cl, opts.namespace, "bench", plan)
            status_s = time.perf_counter() - t
            assert len(rows) == args.jobs

            # a fresh process, as a user runs it; bytecode cached (as in an installed image)
            env = dict(
                os.environ,
                KUBECONFIG=str(cluster.kubeconfig),
                PYTHONPATH=str(REPO),
                PYTHONPYCACHEPREFIX=str(Path(tmp) / "pycache"),
            )
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            cmd = [
                sys.executable,
                "-c",
                "import sys; from runner.cli.k8s import k8s; sys.exit(k8s())",
                "status",
                "--batch",
                "bench",
                "-o",
                "json",
            ]
            # warm the bytecode cache
            subprocess.run(cmd, env=env, capture_output=True, check=False)
            t = time.perf_counter()
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            cli_status_s = time.perf_counter() - t
            assert p.returncode == 0, p.stderr
            assert len(json.loads(p.stdout)) == args.jobs
            cl.close()
    finally:
        cluster.stop()

    out = {
        "jobs": args.jobs,
        "workers": args.workers,
        "pods_created_by_job_controller": n_pods,
        "pods_settle_s": round(settle_s, 1),
        "cluster_startup_s": round(startup, 1),
        "submit_s": round(res.seconds, 2),
        "submit_jobs_per_s": round(submit_rate, 1),
        "resubmit_noop_s": round(resubmit_s, 2),
        "status_s": round(status_s, 2),
        "status_cli_s": round(cli_status_s, 2),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    print(json.dumps(out, indent=1))
    print(
        f"| {args.jobs} | {args.workers} | {res.seconds:.1f} s | {submit_rate:.0f} | "
        f"{resubmit_s:.2f} s | {status_s:.2f} s | {cli_status_s:.2f} s |"
    )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
