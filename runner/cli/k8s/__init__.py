"""``gmrun k8s``: run a plan on Kubernetes, one Job per tile.

The group is here; its verbs are in :mod:`~runner.cli.k8s.submit` (render, submit) and
:mod:`~runner.cli.k8s.status` (status), :mod:`~runner.cli.k8s.rerun` and :mod:`~runner.cli.k8s.collect`, their shared options in
:mod:`~runner.cli.k8s.options`. Registered by the main CLI with ``cli.add_command(k8s)``.
"""

from __future__ import annotations

import click

from runner.cli.k8s.collect import k8s_collect_cmd
from runner.cli.k8s.rerun import rerun_cmd
from runner.cli.k8s.status import status_cmd
from runner.cli.k8s.submit import render_cmd, submit_cmd

k8s = click.Group(
    "k8s",
    help="""Run a plan on Kubernetes: one Job per tile.

\b
A batch is one submission of a plan under a short name (e.g. 2023a). Each
tile becomes the Job gm-{batch}-{tile} (gm-2023a-x017y156), labelled
gmrun.io/batch and gmrun.io/tile, whose container runs
  gmrun run-tile --plan PLAN --tile TILE
with the tile's memory from the plan. The Job controller retries a failed
pod backoffLimit times. Tiles whose outputs exist are never resubmitted.

\b
Typical session:
  kubectl apply -k k8s/                         # once: namespace, RBAC
  gmrun k8s submit --plan s3://b/plans/2023 --batch 2023a --max-active 200
  gmrun k8s status --batch 2023a                # table of tiles
  gmrun k8s status --batch 2023a --state failed -o ids
  gmrun k8s status --batch 2023a --watch         # until it settles
  gmrun k8s rerun  --batch 2023a --reason OOMKilled   # more memory for those
  gmrun k8s collect --batch 2023a               # collection, mosaics, report

Jobs record their plan in the gmrun.io/plan annotation, so status and rerun
need --plan only when that location has moved. The cluster comes from
--kubeconfig/--context, else $KUBECONFIG or ~/.kube/config, else the pod's
service account. Errors print one line: exit code 2 for bad input or a
refusal (RBAC, bad names, no kubeconfig), 1 when the cluster cannot be
reached, 3 for a bug.

\b
A Job's worker exits 0 done, 1 processing/transient failure (retried),
2 bad input or empty (its podFailurePolicy fails the Job at once), 3 a bug;
disruptions (node drain, preemption) are not counted as failures.""",
)

for _command in (render_cmd, submit_cmd, status_cmd, rerun_cmd, k8s_collect_cmd):
    k8s.add_command(_command)

__all__ = ["k8s"]
