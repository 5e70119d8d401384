"""Where the pods go and what else they carry: node selector, tolerations, affinity, priority
class, image pull secrets, extra labels and annotations, and a user patch of the pod template.

From ``kubernetes:`` of the plan's config, each overridable by a flag of ``render``, ``submit``
and ``rerun`` (:func:`placement_from`); :func:`apply_placement` is the last step of
:func:`runner.fanout.k8s.manifests.build_job`, so the three produce the same pod spec.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from runner.common.config import KubernetesConfig
from runner.common.errors import UserInputError

#: label prefixes gmrun's selectors rely on: extra labels may not set these
_OWN = ("gmrun.io/", "app.kubernetes.io/name", "kueue.x-k8s.io/queue-name")
_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


@dataclass(frozen=True)
class Placement:
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    affinity: dict[str, Any] | None = None
    priority_class_name: str | None = None
    image_pull_secrets: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    pod_patch: dict[str, Any] | None = None


def parse_pairs(values: Sequence[str], what: str) -> dict[str, str]:
    """``["a=1", "b=2"]`` → ``{"a": "1", "b": "2"}``; one line naming the flag otherwise."""
    out: dict[str, str] = {}
    for v in values:
        key, sep, val = v.partition("=")
        if not sep or not key.strip():
            raise UserInputError(f"{what} {v!r}: use KEY=VALUE")
        out[key.strip()] = val
    return out


def parse_toleration(text: str) -> dict[str, Any]:
    """``key=value:Effect``, ``key:Effect`` (operator Exists) or ``key`` (any effect), as
    ``kubectl taint`` writes taints."""
    spec, _, effect = text.partition(":")
    if effect and effect not in _EFFECTS:
        raise UserInputError(
            f"--toleration {text!r}: the effect must be one of {', '.join(_EFFECTS)}"
        )
    key, sep, value = spec.partition("=")
    if not key:
        raise UserInputError(f"--toleration {text!r}: use KEY[=VALUE][:EFFECT]")
    tol: dict[str, Any] = {"key": key, "operator": "Equal" if sep else "Exists"}
    if sep:
        tol["value"] = value
    if effect:
        tol["effect"] = effect
    return tol


def read_document(text: str, what: str) -> dict[str, Any]:
    """A YAML/JSON mapping given inline or as ``@FILE`` (``--affinity``, ``--pod-patch``)."""
    if text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise UserInputError(f"{what}: cannot read {text[1:]}: {e.strerror}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else "invalid"
        raise UserInputError(f"{what}: not YAML or JSON ({first})") from None
    if not isinstance(doc, dict):
        raise UserInputError(f"{what}: must be a mapping (YAML or JSON object)")
    return doc


def placement_from(
    cfg: KubernetesConfig,
    *,
    node_selector: Sequence[str] = (),
    tolerations: Sequence[str] = (),
    affinity: str | None = None,
    priority_class: str | None = None,
    image_pull_secrets: Sequence[str] = (),
    labels: Sequence[str] = (),
    annotations: Sequence[str] = (),
    pod_patch: str | None = None,
) -> Placement:
    """The config's placement with the flags over it: ``--node-selector``/``--label``/
    ``--annotation`` add keys (a flag wins over the config's), ``--toleration`` and
    ``--image-pull-secret`` add to the config's, ``--affinity``/``--priority-class``/
    ``--pod-patch`` replace the config's."""
    extra_labels = {**cfg.labels, **parse_pairs(labels, "--label")}
    for k in extra_labels:
        if k.startswith(_OWN):
            raise UserInputError(f"label {k!r} is gmrun's own: it cannot be set")
    return Placement(
        node_selector={**cfg.node_selector, **parse_pairs(node_selector, "--node-selector")},
        tolerations=(*cfg.tolerations, *map(parse_toleration, tolerations)),
        affinity=read_document(affinity, "--affinity") if affinity else cfg.affinity,
        priority_class_name=priority_class or cfg.priority_class_name,
        image_pull_secrets=tuple(dict.fromkeys((*cfg.image_pull_secrets, *image_pull_secrets))),
        labels=extra_labels,
        annotations={**cfg.annotations, **parse_pairs(annotations, "--annotation")},
        pod_patch=read_document(pod_patch, "--pod-patch") if pod_patch else cfg.pod_patch,
    )


def merge_patch(target: Any, patch: Any) -> Any:
    """``patch`` over ``target``: mappings merge key by key, ``None`` removes a key, lists of
    mappings that all have a ``name`` merge by name (as a strategic merge patch does for
    containers, env and volumes), any other value replaces."""
    if isinstance(patch, Mapping):
        out = dict(target) if isinstance(target, Mapping) else {}
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = merge_patch(out.get(k), v)
        return out
    if _named(patch) and _named(target):
        merged = [dict(t) for t in target]
        index = {t["name"]: i for i, t in enumerate(merged)}
        for item in patch:
            if item["name"] in index:
                merged[index[item["name"]]] = merge_patch(merged[index[item["name"]]], item)
            else:
                merged.append(copy.deepcopy(dict(item)))
        return merged
    return copy.deepcopy(patch)


def _named(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(i, Mapping) and "name" in i for i in v)


def apply_placement(job: dict[str, Any], p: Placement) -> dict[str, Any]:
    """``job`` (a gmrun Job manifest, changed in place and returned) with ``p`` applied."""
    meta, template = job["metadata"], job["spec"]["template"]
    pod = template["spec"]
    if p.labels:
        meta["labels"] = {**p.labels, **meta["labels"]}
        template["metadata"]["labels"] = {**p.labels, **template["metadata"]["labels"]}
    if p.annotations:
        meta["annotations"] = {**p.annotations, **meta.get("annotations", {})}
        template["metadata"]["annotations"] = {
            **p.annotations,
            **template["metadata"].get("annotations", {}),
        }
    if p.node_selector:
        pod["nodeSelector"] = dict(p.node_selector)
    if p.tolerations:
        pod["tolerations"] = [dict(t) for t in p.tolerations]
    if p.affinity:
        pod["affinity"] = copy.deepcopy(p.affinity)
    if p.priority_class_name:
        pod["priorityClassName"] = p.priority_class_name
    if p.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": n} for n in p.image_pull_secrets]
    if p.pod_patch:
        patched = merge_patch(template, p.pod_patch)
        labels = template["metadata"]["labels"]  # gmrun's selectors stay
        patched.setdefault("metadata", {})["labels"] = {
            **(patched["metadata"].get("labels") or {}),
            **labels,
        }
        if (patched.get("spec") or {}).get("restartPolicy") != "Never":
            raise UserInputError(
                "--pod-patch / kubernetes.pod_patch: restartPolicy must stay Never"
            )
        job["spec"]["template"] = patched
    return job
