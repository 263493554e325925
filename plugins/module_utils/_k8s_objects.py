# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Facts about Kubernetes objects as plain dicts, no I/O: how messages name them, label selectors, controller
ownership, and GitOps/Helm ownership (whose tools would undo an in-cluster rollback on their next sync)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.governed.rollback.plugins.module_utils._common import Refused


def describe(kind, namespace, name):
    """``deployment aureus/aureus-frontend`` — how errors name the workload."""
    return "%s %s/%s" % (kind.lower(), namespace, name)


# --- label selectors and ownership ------------------------------------------------------------------------------


def selector_to_string(selector):
    """Render a LabelSelector (matchLabels and matchExpressions) as a list-call label selector string."""
    selector = selector or {}
    parts = ["%s=%s" % (key, value) for key, value in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, operator, values = expr.get("key"), expr.get("operator"), sorted(expr.get("values") or [])
        if operator == "In":
            parts.append("%s in (%s)" % (key, ",".join(values)))
        elif operator == "NotIn":
            parts.append("%s notin (%s)" % (key, ",".join(values)))
        elif operator == "Exists":
            parts.append(key)
        elif operator == "DoesNotExist":
            parts.append("!" + key)
        else:
            raise ValueError("unsupported label selector operator %r for key %r" % (operator, key))
    return ",".join(parts)


def selector_matches(selector, labels):
    """Whether ``labels`` satisfy the LabelSelector; an empty selector matches nothing (as for workloads)."""
    selector = selector or {}
    labels = labels or {}
    match_labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not match_labels and not expressions:
        return False
    for key, value in match_labels.items():
        if labels.get(key) != value:
            return False
    for expr in expressions:
        key, operator, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def is_controlled_by(obj, owner):
    """metav1.IsControlledBy: a controller ownerReference carrying the owner's UID."""
    uid = (owner.get("metadata") or {}).get("uid")
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("uid") == uid:
            return True
    return False


_GITOPS_PREFIXES = (
    ("Argo CD", "argocd.argoproj.io/"),
    ("Flux", "kustomize.toolkit.fluxcd.io/"),
    ("Flux", "helm.toolkit.fluxcd.io/"),
)
_HELM_ANNOTATIONS = ("meta.helm.sh/release-name", "meta.helm.sh/release-namespace")
# Flux leaves objects carrying these alone, so it will not revert an in-cluster rollback.
_FLUX_HANDS_OFF = (("kustomize.toolkit.fluxcd.io/reconcile", "disabled"), ("kustomize.toolkit.fluxcd.io/ssa", "ignore"),
                   ("kustomize.toolkit.fluxcd.io/ssa", "ifnotpresent"))


def gitops_owners(obj):
    """GitOps / Helm ownership evidence on an object: a list of ``{tool, where, key, value}``, empty when none."""
    meta = obj.get("metadata") or {}
    found = []
    sources = (("label", meta.get("labels") or {}), ("annotation", meta.get("annotations") or {}))
    hands_off = any(str(src.get(key, "")).lower() == value for _where, src in sources for key, value in _FLUX_HANDS_OFF)
    for where, source in sources:
        for key in sorted(source):
            value = source[key]
            for tool, prefix in _GITOPS_PREFIXES:
                if key.startswith(prefix) and not (tool == "Flux" and hands_off):
                    found.append({"tool": tool, "where": where, "key": key, "value": value})
            if where == "label" and key == "app.kubernetes.io/managed-by" and str(value).lower() == "helm":
                found.append({"tool": "Helm", "where": where, "key": key, "value": value})
            if where == "annotation" and key in _HELM_ANNOTATIONS:
                found.append({"tool": "Helm", "where": where, "key": key, "value": value})
    return found


def gitops_tools(owners):
    tools = []
    for owner in owners:
        if owner["tool"] not in tools:
            tools.append(owner["tool"])
    return tools


def check_gitops(what, obj, allow_gitops_drift=False, redeployed="what is being rolled back"):
    """Refuse an object a GitOps tool or Helm owns, or (with ``allow_gitops_drift``) return the warning to give.

    Returns ``(owners, warnings)``; raises Refused(code ``gitops_owned``) when owned and not allowed.
    """
    owners = gitops_owners(obj)
    if not owners:
        return owners, []
    tools = " and ".join(gitops_tools(owners))
    evidence = ", ".join("%s %s=%s" % (o["where"], o["key"], o["value"]) for o in owners)
    if not allow_gitops_drift:
        raise Refused(
            "refusing to roll back %s: it is managed by %s (%s), which would undo an in-cluster rollback on "
            "its next sync; revert the change in its source (Git / chart values) instead, or pass "
            "allow_gitops_drift=true to roll back in-cluster now and revert the source right after"
            % (what, tools, evidence), "gitops_owned", gitops_owners=owners)
    return owners, ["%s is managed by %s (%s): revert the change in the GitOps source too, or its next sync "
                    "will re-deploy %s" % (what, tools, evidence, redeployed)]


# --- Argo CD: which Application tracks an object ------------------------------------------------------------------

ARGOCD_TRACKING_ANNOTATION = "argocd.argoproj.io/tracking-id"
# Argo CD's label tracking uses its instance label key (app.kubernetes.io/instance by default, which Helm charts set
# too; Argo CD's docs advise a key of its own such as this one), so the default here is the unambiguous key.
ARGOCD_INSTANCE_LABEL = "argocd.argoproj.io/instance"


def _argocd_instance_name(value):
    """Argo CD's instance name: ``<app>``, or ``<namespace>_<app>`` for an Application outside its control plane's
    namespace (Kubernetes names cannot hold ``_``, so the split is unambiguous)."""
    namespace, sep, name = value.rpartition("_")
    return name, (namespace if sep else None)


def argocd_application(obj, label_key=ARGOCD_INSTANCE_LABEL):
    """The Argo CD Application tracking ``obj`` - ``{name, namespace, source, value}``, ``namespace`` None meaning
    Argo CD's own namespace - from its tracking annotation (``<app>:<group>/<kind>:<ns>/<name>``, Argo CD's
    default), else from its instance label; None when neither is there (or the annotation is not Argo CD's format)."""
    meta = obj.get("metadata") or {}
    value = (meta.get("annotations") or {}).get(ARGOCD_TRACKING_ANNOTATION)
    if value:
        parts = value.split(":", 2)
        if len(parts) != 3 or parts[1].count("/") != 1 or parts[2].count("/") != 1 or not parts[0]:
            return None
        name, namespace = _argocd_instance_name(parts[0])
        return {"name": name, "namespace": namespace, "source": "annotation " + ARGOCD_TRACKING_ANNOTATION,
                "value": value}
    value = (meta.get("labels") or {}).get(label_key)
    if value:
        name, namespace = _argocd_instance_name(value)
        return {"name": name, "namespace": namespace, "source": "label " + label_key, "value": value}
    return None
