"""``gmrun k8s collect``: ``gmrun collect`` with the tiles' states read from a batch's Jobs."""

from __future__ import annotations

import click

from runner.cli.k8s.options import (
    batch_option,
    batch_rows,
    cluster_options,
    namespace_option,
    plan_option,
)
from runner.common.errors import UserInputError, exit_on_error

#: a Job's state (``gmrun k8s status``) as the state of a tile that is not done
_AS_ATTEMPT = {
    "failed": "failed",
    "running": "running",
    "pending": "pending",
    "suspended": "pending",
}


@click.command("collect")
@batch_option
@plan_option(required=False)
@namespace_option
@click.option(
    "--output",
    "location",
    metavar="URL",
    help="Where the tiles were written, if not the plan's output.location.",
)
@cluster_options
@exit_on_error
def k8s_collect_cmd(
    batch: str,
    plan_url: str | None,
    namespace: str | None,
    location: str | None,
    kubeconfig: str | None,
    context: str | None,
) -> None:
    """Assemble a batch's run (as `gmrun collect`), its tiles' states from its Jobs.

    \b
    Failed tiles are drawn red in status.png and listed in report.html with
    their reason (OOMKilled, DeadlineExceeded, exit 2: bad input, and the
    worker's last log line); running and pending Jobs are shown as such.
    Run it while the batch runs, and again when it ends.

    \b
    Example:
      gmrun k8s collect --batch 2023a
    """
    from runner.cli.collect import assemble
    from runner.planner.grid import TileId
    from runner.product.collect import Attempt

    plan, rows = batch_rows(batch, plan_url, namespace, kubeconfig, context)
    attempts = {}
    for r in rows:
        state = _AS_ATTEMPT.get(r.state)
        if state is not None and not r.done:
            try:
                tile = TileId.parse(r.tile)
            except UserInputError:  # a Job of the batch that is not a tile of the plan
                continue
            attempts[tile] = Attempt(state, r.message)
    assemble(plan, location, attempts)
