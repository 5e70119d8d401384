"""Placement and overrides on the real test control plane: what ``render`` writes is what
``submit`` creates is what ``rerun`` creates again (nodeSelector, tolerations, affinity, priority
class, pull secrets, labels, annotations, a pod patch), and the namespace of the kubeconfig
context."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from runner.fanout import k8s
from tests.k8s.cluster import TestCluster, get_cluster
from tests.k8s.plans import make_plan
from tests.test_k8s_cluster import _read_job as read_job
from tests.test_k8s_cluster import gm

pytestmark = [pytest.mark.k8s, pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(scope="session")
def cluster() -> TestCluster:
    return get_cluster()


_PLACEMENT_CONFIG = {
    "kubernetes": {
        "node_selector": {"node-pool": "highmem"},
        "tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "gmrun", "effect": "NoSchedule"}
        ],
        "priority_class_name": "gmrun-batch",
        "labels": {"app.kubernetes.io/part-of": "geomad"},
        "annotations": {"example.com/owner": "team-geo"},
    }
}
_PLACEMENT_FLAGS = (
    "--toleration",
    "spot=true:NoExecute",
    "--label",
    "team=geo",
    "--annotation",
    "karpenter.sh/do-not-disrupt=true",
    "--image-pull-secret",
    "regcred",
    "--affinity",
    json.dumps(
        {
            "nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 1,
                        "preference": {
                            "matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]
                        },
                    }
                ]
            }
        }
    ),
    "--pod-patch",
    json.dumps(
        {
            "spec": {
                "containers": [{"name": "gmrun", "env": [{"name": "EXTRA", "value": "1"}]}],
                "terminationGracePeriodSeconds": 60,
            }
        }
    ),
)


def _subset(small: Any, big: Any, path: str = "") -> None:
    """Every field of ``small`` is in ``big`` with the same value (the API server adds its
    defaults to what it stores)."""
    if isinstance(small, dict):
        assert isinstance(big, dict), path
        for k, v in small.items():
            assert k in big, f"{path}.{k} missing"
            _subset(v, big[k], f"{path}.{k}")
    elif isinstance(small, list):
        assert isinstance(big, list) and len(small) == len(big), path
        for i, (a, b) in enumerate(zip(small, big, strict=True)):
            _subset(a, b, f"{path}[{i}]")
    else:
        assert small == big or str(small) == str(big), f"{path}: {small!r} != {big!r}"


def test_render_submit_and_rerun_make_the_same_pod_spec(
    cluster: TestCluster, tmp_path: Path
) -> None:
    from kubernetes import client

    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    c = cluster
    sched = client.SchedulingV1Api(c.api_client())
    try:
        sched.create_priority_class({"metadata": {"name": "gmrun-batch"}, "value": 1000})
    except client.exceptions.ApiException as e:
        assert e.status == 409
    plan = make_plan(tmp_path / "plan", 2, _PLACEMENT_CONFIG)
    tile = plan.tiles[0].tile
    name = k8s.job_name("pl", tile)
    r = gm(c, "render", "--plan", plan.url, "--batch", "pl", "-o", str(tmp_path / "r"))
    assert r.exit_code == 0, r.output
    plain = yaml.safe_load((tmp_path / "r" / f"{name}.yaml").read_text())
    r = gm(
        c,
        "render",
        "--plan",
        plan.url,
        "--batch",
        "pl",
        "-o",
        str(tmp_path / "j"),
        *_PLACEMENT_FLAGS,
    )
    assert r.exit_code == 0, r.output
    rendered = yaml.safe_load((tmp_path / "j" / f"{name}.yaml").read_text())
    for version in ("1.29.0", "1.33.0"):
        kubernetes_validate.validate(rendered, version, strict=True)
    pod = rendered["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"node-pool": "highmem"}
    assert [t["key"] for t in pod["tolerations"]] == ["dedicated", "spot"]
    assert pod["priorityClassName"] == "gmrun-batch"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["affinity"]["nodeAffinity"] and pod["terminationGracePeriodSeconds"] == 60
    (ctr,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in ctr["env"]}
    assert env["EXTRA"] == "1" and env["GMRUN_HEARTBEAT"]  # merged by name, gmrun's kept
    assert ctr["args"] == plain["spec"]["template"]["spec"]["containers"][0]["args"]
    for meta in (rendered["metadata"], rendered["spec"]["template"]["metadata"]):
        assert meta["labels"]["team"] == "geo" and meta["labels"]["gmrun.io/tile"] == str(tile)
        assert meta["labels"]["app.kubernetes.io/part-of"] == "geomad"
        assert meta["annotations"]["karpenter.sh/do-not-disrupt"] == "true"
    # gmrun's own labels cannot be overridden
    r = gm(
        c,
        "render",
        "--plan",
        plan.url,
        "--batch",
        "pl",
        "-o",
        str(tmp_path / "x"),
        "--label",
        "gmrun.io/tile=x",
    )
    assert r.exit_code == 2 and "gmrun's own" in r.output

    r = gm(c, "submit", "--plan", plan.url, "--batch", "pl", *_PLACEMENT_FLAGS)
    assert r.exit_code == 0, r.output
    submitted = read_job(c, name)
    _subset(rendered["spec"]["template"], submitted["spec"]["template"], "template")
    r = gm(c, "rerun", "--batch", "pl", "--tiles", str(tile), *_PLACEMENT_FLAGS)
    assert r.exit_code == 0 and "deleted 1 Jobs, created 1" in r.output, r.output
    rerun = read_job(c, name)
    assert rerun["metadata"]["uid"] != submitted["metadata"]["uid"]
    assert rerun["spec"]["template"]["spec"] == submitted["spec"]["template"]["spec"]
    strip = ("controller-uid", "job-name")  # the API server's own labels, per Job
    labels = [
        {k: v for k, v in j["spec"]["template"]["metadata"]["labels"].items() if k not in strip}
        for j in (rerun, submitted)
    ]
    assert labels[0] == labels[1]


def test_namespace_defaults_to_the_kubeconfig_context(cluster: TestCluster, tmp_path: Path) -> None:
    from kubernetes import client

    c = cluster
    ns = "gmrun-ctx"
    try:
        client.CoreV1Api(c.api_client()).create_namespace({"metadata": {"name": ns}})
    except client.exceptions.ApiException as e:
        assert e.status == 409
    doc = yaml.safe_load(c.kubeconfig.read_text())
    for ctx in doc["contexts"]:
        ctx["context"]["namespace"] = ns
    kc = tmp_path / "kubeconfig"
    kc.write_text(yaml.safe_dump(doc))
    plan = make_plan(tmp_path / "plan", 1)
    assert plan.config.kubernetes.namespace is None
    r = gm(c, "submit", "--plan", plan.url, "--batch", "ctx", "--kubeconfig", str(kc))
    assert r.exit_code == 0 and f"(namespace {ns})" in r.output, r.output
    r = gm(c, "status", "--batch", "ctx", "--kubeconfig", str(kc), "-o", "json")
    assert (
        r.exit_code == 0
        and json.loads(r.stdout)[0]["job"] == "gm-ctx-" + plan.tiles[0].tile.dns_name
    )
