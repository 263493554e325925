# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Is a rollout done, still progressing, or failed? And a wait loop built on that answer.

The predicate follows ``kubectl rollout status`` for Deployments, StatefulSets and DaemonSets, with two
differences that matter after a rollback: a ``ProgressDeadlineExceeded`` condition older than our patch is
ignored (the controller keeps a stale one until it sees progress, so kubectl reports a successful undo as failed),
and a fresh one fails at once instead of burning the whole timeout. The wait loop also keeps the Deployment's
progress deadline itself: after a rollback to an existing ReplicaSet the controller can miss the rollout's only
sign of progress (its status goes from 2 updated of 2 straight to 1 updated of 3) and then never marks the
Deployment ``ProgressDeadlineExceeded`` (its timeout check skips a condition still reading ``NewReplicaSetAvailable``,
kubernetes/kubernetes#52127; the symptom is kubernetes/kubernetes#40496), so ``kubectl rollout status`` waits until
its own timeout. The wait loop takes a fetch function, so it is tested with plain dicts and driven by the module
with a real API client.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time
from dataclasses import dataclass
from datetime import datetime, timezone

from ansible_collections.governed.rollback.plugins.module_utils._common import backoff_interval

DONE = "done"
PROGRESSING = "progressing"
FAILED = "failed"
TIMEOUT = "timeout"
DELETED = "deleted"

TIMED_OUT_REASON = "ProgressDeadlineExceeded"


@dataclass
class RolloutState:
    state: str
    message: str


def parse_time(value):
    """An RFC 3339 timestamp from the API (``2024-01-15T10:00:00Z``) as an aware datetime, or None."""
    if not value:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    text = str(value).strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def patch_time(obj, field_manager):
    """When the API server recorded our write, from our managedFields entry (server clock, whole seconds)."""
    latest = None
    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") == field_manager and entry.get("operation") == "Update":
            when = parse_time(entry.get("time"))
            if when and (latest is None or when > latest):
                latest = when
    return latest


def _condition(status, kind):
    for cond in status.get("conditions") or []:
        if cond.get("type") == kind:
            return cond
    return None


def _is_fresh(cond, patched_at):
    if patched_at is None:
        return True
    when = parse_time(cond.get("lastUpdateTime")) or parse_time(cond.get("lastTransitionTime"))
    if when is None:
        return True
    # API timestamps have whole-second resolution.
    return when >= patched_at.replace(microsecond=0)


def _unobserved(meta, status):
    """The controller has not yet seen the latest spec (its status still describes an older one)."""
    return (meta.get("generation") or 0) > (status.get("observedGeneration") or 0)


def _parts(obj):
    meta = obj.get("metadata") or {}
    return meta, obj.get("spec") or {}, obj.get("status") or {}, meta.get("name")


def _not_rolling(noun, name, spec):
    """kubectl only reports rollout status for RollingUpdate; with OnDelete pods change only when deleted."""
    strategy_type = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate")
    if strategy_type != "RollingUpdate":
        return RolloutState(FAILED, "rollout status is only available for the RollingUpdate strategy; %s %r uses %s, "
                                    "so delete its pods to roll them" % (noun, name, strategy_type))
    return None


def deployment_state(obj, patched_at=None):
    meta, spec, status, name = _parts(obj)
    if spec.get("paused"):
        return RolloutState(FAILED, "deployment %r is paused, so the rollout cannot progress; resume it "
                                    "(kubectl rollout resume deployment/%s)" % (name, name))
    if _unobserved(meta, status):
        return RolloutState(PROGRESSING, "waiting for deployment %r spec update to be observed" % name)
    cond = _condition(status, "Progressing")
    if cond and cond.get("reason") == TIMED_OUT_REASON and _is_fresh(cond, patched_at):
        return RolloutState(FAILED, "deployment %r exceeded its progress deadline: %s"
                            % (name, cond.get("message") or TIMED_OUT_REASON))
    replicas = spec.get("replicas", 1)
    updated = status.get("updatedReplicas") or 0
    if updated < replicas:
        return RolloutState(PROGRESSING, "waiting for deployment %r rollout to finish: %d out of %d new replicas "
                                         "have been updated" % (name, updated, replicas))
    total = status.get("replicas") or 0
    if total > updated:
        return RolloutState(PROGRESSING, "waiting for deployment %r rollout to finish: %d old replicas are pending "
                                         "termination" % (name, total - updated))
    available = status.get("availableReplicas") or 0
    if available < updated:
        return RolloutState(PROGRESSING, "waiting for deployment %r rollout to finish: %d of %d updated replicas "
                                         "are available" % (name, available, updated))
    return RolloutState(DONE, "deployment %r successfully rolled out" % name)


def statefulset_state(obj):
    meta, spec, status, name = _parts(obj)
    refused = _not_rolling("statefulset", name, spec)
    if refused:
        return refused
    observed = status.get("observedGeneration") or 0
    if observed == 0 or (meta.get("generation") or 0) > observed:
        return RolloutState(PROGRESSING, "waiting for statefulset %r spec update to be observed" % name)
    replicas = spec.get("replicas", 1)
    ready = status.get("readyReplicas") or 0
    if ready < replicas:
        return RolloutState(PROGRESSING, "waiting for %d pods of statefulset %r to be ready" % (replicas - ready, name))
    rolling = (spec.get("updateStrategy") or {}).get("rollingUpdate")
    if rolling is not None:
        partition = rolling.get("partition")
        updated = status.get("updatedReplicas") or 0
        if partition is not None and updated < replicas - partition:
            return RolloutState(PROGRESSING, "waiting for partitioned roll out of statefulset %r to finish: %d out "
                                             "of %d new pods have been updated" % (name, updated, replicas - partition))
        return RolloutState(DONE, "statefulset %r partitioned roll out complete: %d new pods have been updated"
                            % (name, updated))
    if status.get("updateRevision") != status.get("currentRevision"):
        return RolloutState(PROGRESSING, "waiting for statefulset %r rolling update to complete %d pods at revision "
                                         "%s" % (name, status.get("updatedReplicas") or 0, status.get("updateRevision")))
    return RolloutState(DONE, "statefulset %r rolling update complete %d pods at revision %s"
                        % (name, status.get("currentReplicas") or 0, status.get("currentRevision")))


def daemonset_state(obj):
    meta, spec, status, name = _parts(obj)
    refused = _not_rolling("daemon set", name, spec)
    if refused:
        return refused
    if _unobserved(meta, status):
        return RolloutState(PROGRESSING, "waiting for daemon set %r spec update to be observed" % name)
    desired = status.get("desiredNumberScheduled") or 0
    updated = status.get("updatedNumberScheduled") or 0
    if updated < desired:
        return RolloutState(PROGRESSING, "waiting for daemon set %r rollout to finish: %d out of %d new pods have "
                                         "been updated" % (name, updated, desired))
    available = status.get("numberAvailable") or 0
    if available < desired:
        return RolloutState(PROGRESSING, "waiting for daemon set %r rollout to finish: %d of %d updated pods are "
                                         "available" % (name, available, desired))
    return RolloutState(DONE, "daemon set %r successfully rolled out" % name)


def rollout_state(kind, obj, patched_at=None):
    """DONE, PROGRESSING or FAILED for a workload, with kubectl-like wording."""
    if kind == "Deployment":
        return deployment_state(obj, patched_at)
    if kind == "StatefulSet":
        return statefulset_state(obj)
    if kind == "DaemonSet":
        return daemonset_state(obj)
    return RolloutState(FAILED, "no rollout status for kind %s" % kind)


@dataclass
class WaitResult:
    state: str
    reason: str
    elapsed_seconds: float
    last: dict = None

    @property
    def done(self):
        return self.state == DONE

    def as_dict(self):
        return {"done": self.done, "state": self.state, "reason": self.reason,
                "elapsed_seconds": round(self.elapsed_seconds, 3)}


# How long past progressDeadlineSeconds the wait lets the controller record the timeout itself before saying so.
DEADLINE_GRACE_SECONDS = 2.0


class ProgressClock:
    """When a Deployment last made progress, by the controller's own measure, seen from the waiting side.

    Progress is what the deployment controller counts as progress between two looks at the status: more updated,
    ready or available replicas, or fewer old ones; and any new ``lastUpdateTime`` the controller writes on a
    ``Progressing=True`` condition, which catches progress that came and went between two polls. Only statuses
    that reflect the rolled-back template count (observedGeneration caught up). The clock starts at the rollback's
    patch (the first poll). A paused Deployment never gets here: the wait fails it first.
    """

    def __init__(self, started):
        self.since = started
        self.previous = None
        self.previous_mark = None

    @staticmethod
    def _counts(obj):
        status = obj.get("status") or {}
        total = status.get("replicas") or 0
        updated = status.get("updatedReplicas") or 0
        return (updated, status.get("readyReplicas") or 0, status.get("availableReplicas") or 0, -(total - updated))

    def observe(self, obj, now):
        meta, status = obj.get("metadata") or {}, obj.get("status") or {}
        if _unobserved(meta, status):
            return
        counts = self._counts(obj)
        cond = _condition(status, "Progressing") or {}
        mark = cond.get("lastUpdateTime") if cond.get("status") == "True" else None
        if self.previous is not None and (any(new > old for new, old in zip(counts, self.previous))
                                          or (mark is not None and mark != self.previous_mark)):
            self.since = now
        self.previous, self.previous_mark = counts, mark

    def overdue(self, obj, now):
        """Whether the rollout has gone without progress for longer than its deadline (plus the grace)."""
        deadline = (obj.get("spec") or {}).get("progressDeadlineSeconds")
        return bool(deadline) and now - self.since - deadline > DEADLINE_GRACE_SECONDS


def _missed_deadline(obj, stalled_for):
    name = (obj.get("metadata") or {}).get("name")
    deadline = obj["spec"]["progressDeadlineSeconds"]
    return ("deployment %r exceeded its progress deadline: no progress for %ds (progressDeadlineSeconds is %d); "
            "the controller has not marked it %s (it can miss the progress of a rollback to an existing "
            "ReplicaSet), so the wait enforced the deadline itself" % (name, stalled_for, deadline, TIMED_OUT_REASON))


def wait_for_rollout(fetch, kind, timeout, patched_at=None, uid=None, clock=time.monotonic, sleep=time.sleep,
                     interval=backoff_interval):
    """Poll ``fetch()`` until the rollout is done, has failed, the object is gone, or ``timeout`` seconds pass.

    ``fetch`` returns the workload as a dict, or None once it no longer exists. ``uid`` detects an object that was
    deleted and re-created under the same name. A Deployment that makes no progress for longer than its
    ``progressDeadlineSeconds`` fails even when the controller has not said so (see the module docstring).
    """
    start = clock()
    last_obj = None
    progress = ProgressClock(start)
    while True:
        obj = fetch()
        if obj is None:
            return WaitResult(DELETED, "the %s was deleted while waiting for its rollout" % kind.lower(),
                              clock() - start, last_obj)
        obj_uid = (obj.get("metadata") or {}).get("uid")
        if uid and obj_uid and obj_uid != uid:
            return WaitResult(DELETED, "the %s was deleted and re-created while waiting for its rollout (uid %s, "
                                       "now %s)" % (kind.lower(), uid, obj_uid), clock() - start, obj)
        last_obj = obj
        last = rollout_state(kind, obj, patched_at)
        if last.state != PROGRESSING:
            return WaitResult(last.state, last.message, clock() - start, obj)
        now = clock()
        elapsed = now - start
        if kind == "Deployment":
            progress.observe(obj, now)
            if progress.overdue(obj, now):
                return WaitResult(FAILED, _missed_deadline(obj, now - progress.since), elapsed, obj)
        if elapsed >= timeout:
            return WaitResult(TIMEOUT, "timed out after %ds: %s" % (timeout, last.message), elapsed, obj)
        sleep(max(0.0, min(interval(elapsed), timeout - elapsed)))
