"""The rollout-done predicate and the wait loop, on plain dicts shaped like API objects."""

from datetime import datetime, timedelta, timezone

import pytest

from ansible_collections.governed.rollback.plugins.module_utils import _rollout as ro

PATCHED_AT = datetime(2024, 1, 15, 10, 0, 0, 500000, tzinfo=timezone.utc)


def stamp(delta_seconds):
    return (PATCHED_AT.replace(microsecond=0) + timedelta(seconds=delta_seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def deployment(generation=2, observed=2, replicas=3, updated=3, total=3, available=3, conditions=None, **spec):
    body = {"replicas": replicas}
    body.update(spec)
    return {"metadata": {"name": "web", "generation": generation, "uid": "u1"}, "spec": body,
            "status": {"observedGeneration": observed, "updatedReplicas": updated, "replicas": total,
                       "availableReplicas": available, "conditions": conditions or []}}


def deadline_exceeded(at):
    return [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
             "message": 'ReplicaSet "web-abc" has timed out progressing.', "lastUpdateTime": at,
             "lastTransitionTime": at}]


# --- Deployment -----------------------------------------------------------------------------------------------------


def test_deployment_complete_is_done():
    assert ro.rollout_state("Deployment", deployment()).state == ro.DONE


def test_deployment_waits_for_the_spec_update_to_be_observed():
    state = ro.rollout_state("Deployment", deployment(generation=3, observed=2))
    assert state.state == ro.PROGRESSING and "observed" in state.message


@pytest.mark.parametrize("kwargs, words", [
    ({"updated": 1}, "1 out of 3 new replicas have been updated"),
    ({"total": 4}, "1 old replicas are pending termination"),
    ({"available": 2}, "2 of 3 updated replicas are available"),
])
def test_deployment_in_progress_says_what_it_waits_for(kwargs, words):
    state = ro.rollout_state("Deployment", deployment(**kwargs))
    assert state.state == ro.PROGRESSING and words in state.message


def test_progress_deadline_older_than_our_patch_is_ignored():
    obj = deployment(updated=1, conditions=deadline_exceeded(stamp(-60)))
    assert ro.rollout_state("Deployment", obj, PATCHED_AT).state == ro.PROGRESSING


def test_stale_progress_deadline_does_not_hide_a_completed_rollback():
    obj = deployment(conditions=deadline_exceeded(stamp(-60)))
    assert ro.rollout_state("Deployment", obj, PATCHED_AT).state == ro.DONE


def test_fresh_progress_deadline_fails_at_once():
    state = ro.rollout_state("Deployment", deployment(updated=1, conditions=deadline_exceeded(stamp(15))), PATCHED_AT)
    assert state.state == ro.FAILED and "exceeded its progress deadline" in state.message


def test_progress_deadline_in_the_same_second_as_the_patch_counts_as_fresh():
    obj = deployment(updated=1, conditions=deadline_exceeded(stamp(0)))
    assert ro.rollout_state("Deployment", obj, PATCHED_AT).state == ro.FAILED


def test_without_a_patch_time_any_progress_deadline_fails_like_kubectl():
    assert ro.rollout_state("Deployment", deployment(conditions=deadline_exceeded(stamp(-600)))).state == ro.FAILED


def test_paused_deployment_fails_instead_of_hanging():
    state = ro.rollout_state("Deployment", deployment(updated=1, paused=True))
    assert state.state == ro.FAILED and "rollout resume" in state.message


# --- StatefulSet ----------------------------------------------------------------------------------------------------


def statefulset(ready=3, updated=3, partition=0, strategy="RollingUpdate", observed=4, rolling=True,
                current_rev="web-1", update_rev="web-1"):
    update = {"type": strategy}
    if rolling and strategy == "RollingUpdate":
        update["rollingUpdate"] = {"partition": partition}
    return {"metadata": {"name": "db", "generation": 4}, "spec": {"replicas": 3, "updateStrategy": update},
            "status": {"observedGeneration": observed, "readyReplicas": ready, "updatedReplicas": updated,
                       "currentRevision": current_rev, "updateRevision": update_rev, "currentReplicas": 3}}


def test_statefulset_done_when_ready_and_updated():
    assert ro.rollout_state("StatefulSet", statefulset()).state == ro.DONE


def test_statefulset_waits_for_ready_pods():
    state = ro.rollout_state("StatefulSet", statefulset(ready=2))
    assert state.state == ro.PROGRESSING and "1 pods" in state.message


def test_statefulset_partition_only_needs_the_pods_above_it():
    assert ro.rollout_state("StatefulSet", statefulset(updated=1, partition=2)).state == ro.DONE
    assert ro.rollout_state("StatefulSet", statefulset(updated=0, partition=2)).state == ro.PROGRESSING


def test_statefulset_without_rolling_update_block_compares_revisions():
    assert ro.rollout_state("StatefulSet", statefulset(rolling=False, update_rev="web-2")).state == ro.PROGRESSING
    assert ro.rollout_state("StatefulSet", statefulset(rolling=False)).state == ro.DONE


def test_statefulset_with_unobserved_spec_waits():
    assert ro.rollout_state("StatefulSet", statefulset(observed=0)).state == ro.PROGRESSING


def test_statefulset_on_delete_cannot_be_awaited():
    state = ro.rollout_state("StatefulSet", statefulset(strategy="OnDelete"))
    assert state.state == ro.FAILED and "OnDelete" in state.message


# --- DaemonSet ------------------------------------------------------------------------------------------------------


def daemonset(desired=4, updated=4, available=4, strategy="RollingUpdate", generation=2, observed=2):
    return {"metadata": {"name": "agent", "generation": generation}, "spec": {"updateStrategy": {"type": strategy}},
            "status": {"observedGeneration": observed, "desiredNumberScheduled": desired,
                       "updatedNumberScheduled": updated, "numberAvailable": available}}


def test_daemonset_done_when_scheduled_and_available():
    assert ro.rollout_state("DaemonSet", daemonset()).state == ro.DONE


@pytest.mark.parametrize("kwargs, words", [
    ({"updated": 2}, "2 out of 4 new pods have been updated"),
    ({"available": 3}, "3 of 4 updated pods are available"),
    ({"generation": 3}, "spec update to be observed"),
])
def test_daemonset_in_progress(kwargs, words):
    state = ro.rollout_state("DaemonSet", daemonset(**kwargs))
    assert state.state == ro.PROGRESSING and words in state.message


def test_daemonset_on_delete_cannot_be_awaited():
    assert ro.rollout_state("DaemonSet", daemonset(strategy="OnDelete")).state == ro.FAILED


# --- helpers --------------------------------------------------------------------------------------------------------


def test_patch_time_comes_from_our_managed_fields_entry():
    obj = {"metadata": {"managedFields": [
        {"manager": "kube-controller-manager", "operation": "Update", "time": "2024-01-15T11:00:00Z"},
        {"manager": "governed-rollback", "operation": "Update", "time": "2024-01-15T10:00:00Z"}]}}
    assert ro.patch_time(obj, "governed-rollback") == datetime(2024, 1, 15, 10, 0, tzinfo=timezone.utc)
    assert ro.patch_time(obj, "someone-else") is None


def test_parse_time_accepts_api_timestamps_and_rejects_garbage():
    assert ro.parse_time("2024-01-15T10:00:00Z") == datetime(2024, 1, 15, 10, tzinfo=timezone.utc)
    assert ro.parse_time("not a time") is None
    assert ro.parse_time(None) is None


# --- the wait loop --------------------------------------------------------------------------------------------------


class FakeClock(object):
    """A clock that advances only when the loop sleeps, so waits take no real time."""

    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


# The schedule the deadline tests below count their polls in (half a second, two after thirty); the default
# schedule polls faster in the first seconds (test_the_wait_polls_fast_first_then_backs_off).
def STEADY(elapsed):
    return 0.5 if elapsed < 30 else 2.0


def sequence(*objects):
    items = list(objects)

    def fetch():
        return items.pop(0) if len(items) > 1 else items[0]

    return fetch


def test_wait_returns_done_once_the_rollout_completes():
    clock = FakeClock()
    result = ro.wait_for_rollout(sequence(deployment(updated=1), deployment(updated=2), deployment()), "Deployment",
                                 timeout=60, clock=clock, sleep=clock.sleep)
    assert result.done and result.state == ro.DONE
    assert clock.sleeps == [0.05, 0.05]
    assert result.as_dict() == {"done": True, "state": "done", "reason": "deployment 'web' successfully rolled out",
                                "elapsed_seconds": 0.1}


def test_wait_times_out_with_the_last_status():
    clock = FakeClock()
    result = ro.wait_for_rollout(sequence(deployment(available=1)), "Deployment", timeout=5, clock=clock,
                                 sleep=clock.sleep)
    assert result.state == ro.TIMEOUT and not result.done
    assert "timed out after 5s" in result.reason and "1 of 3 updated replicas are available" in result.reason
    assert result.elapsed_seconds == pytest.approx(5.0)


def test_wait_backs_off_after_thirty_seconds():
    clock = FakeClock()
    ro.wait_for_rollout(sequence(deployment(available=1)), "Deployment", timeout=40, clock=clock, sleep=clock.sleep)
    assert clock.sleeps[0] == 0.05 and clock.sleeps[-1] == 2.0
    assert sorted(set(clock.sleeps)) == [0.05, 0.2, 0.5, 2.0]


def test_wait_fails_fast_on_a_fresh_progress_deadline():
    clock = FakeClock()
    result = ro.wait_for_rollout(sequence(deployment(updated=1),
                                          deployment(updated=1, conditions=deadline_exceeded(stamp(15)))),
                                 "Deployment", timeout=300, patched_at=PATCHED_AT, clock=clock, sleep=clock.sleep,
                                 interval=STEADY)
    assert result.state == ro.FAILED and clock.now == 0.5


def test_wait_detects_deletion():
    clock = FakeClock()
    result = ro.wait_for_rollout(sequence(deployment(updated=1), None), "Deployment", timeout=60, clock=clock,
                                 sleep=clock.sleep)
    assert result.state == ro.DELETED and "deleted" in result.reason


def test_wait_detects_delete_and_recreate_under_the_same_name():
    clock = FakeClock()
    replaced = deployment()
    replaced["metadata"]["uid"] = "u2"
    result = ro.wait_for_rollout(sequence(replaced), "Deployment", timeout=60, uid="u1", clock=clock,
                                 sleep=clock.sleep)
    assert result.state == ro.DELETED and "re-created" in result.reason


# --- the progress deadline the controller did not record --------------------------------------------------------


def stuck_after_rollback(**kwargs):
    """What the sandbox's controller left behind: status jumped from 2/2 updated to 1 of 3, condition never moved."""
    cond = [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
             "lastUpdateTime": stamp(-600), "lastTransitionTime": stamp(-600)}]
    fields = dict(replicas=2, total=3, updated=1, available=2, conditions=cond, progressDeadlineSeconds=8)
    fields.update(kwargs)
    return deployment(**fields)


def test_wait_enforces_the_progress_deadline_the_controller_missed():
    clock = FakeClock()
    result = ro.wait_for_rollout(sequence(stuck_after_rollback()), "Deployment", timeout=120, patched_at=PATCHED_AT,
                                 clock=clock, sleep=clock.sleep)
    assert result.state == ro.FAILED
    assert "exceeded its progress deadline: no progress for 10s (progressDeadlineSeconds is 8)" in result.reason
    assert "has not marked it ProgressDeadlineExceeded" in result.reason
    # The controller gets DEADLINE_GRACE_SECONDS to say so itself first.
    assert 8 + ro.DEADLINE_GRACE_SECONDS < clock.now <= 8 + ro.DEADLINE_GRACE_SECONDS + 0.5


def test_progress_restarts_the_deadline():
    clock = FakeClock()
    steps = [stuck_after_rollback()] * 14 + [stuck_after_rollback(updated=2, total=4)] * 14 + [
        deployment(replicas=2, updated=2, total=2, available=2, progressDeadlineSeconds=8)]
    result = ro.wait_for_rollout(sequence(*steps), "Deployment", timeout=120, clock=clock, sleep=clock.sleep,
                                 interval=STEADY)
    # 7 s stalled, progress, 7 s stalled again, then done: never 8 s without progress.
    assert result.state == ro.DONE and clock.now == 14.0


def test_a_status_from_before_the_patch_is_not_progress():
    clock = FakeClock()
    unobserved = stuck_after_rollback(generation=3, observed=2, updated=2, total=2, available=2)
    steps = [unobserved] * 6 + [stuck_after_rollback(generation=3, observed=3)]
    result = ro.wait_for_rollout(sequence(*steps), "Deployment", timeout=120, clock=clock, sleep=clock.sleep)
    assert result.state == ro.FAILED and "no progress for 10s" in result.reason


def test_without_a_progress_deadline_the_wait_runs_to_its_timeout():
    clock = FakeClock()
    no_deadline = stuck_after_rollback()
    del no_deadline["spec"]["progressDeadlineSeconds"]
    result = ro.wait_for_rollout(sequence(no_deadline), "Deployment", timeout=30, clock=clock, sleep=clock.sleep)
    assert result.state == ro.TIMEOUT and clock.now == 30


def test_progress_the_controller_recorded_between_polls_restarts_the_deadline():
    clock = FakeClock()

    def recorded_at(seconds):
        obj = stuck_after_rollback()
        obj["status"]["conditions"] = [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                                        "lastUpdateTime": stamp(seconds), "lastTransitionTime": stamp(-600)}]
        return obj
    # Counts never move, but the controller saw progress (a pod Ready then not again) at 5 s and 10 s.
    steps = [recorded_at(0)] * 10 + [recorded_at(5)] * 10 + [recorded_at(10)] * 30
    result = ro.wait_for_rollout(sequence(*steps), "Deployment", timeout=120, clock=clock, sleep=clock.sleep,
                                 interval=STEADY)
    # Last progress seen at 10 s (the poll that showed the new time), so the deadline runs out after 20 s.
    assert result.state == ro.FAILED and 20 < clock.now <= 20.5


def test_the_wait_polls_fast_first_then_backs_off():
    from ansible_collections.governed.rollback.plugins.module_utils._common import backoff_interval as poll_interval

    intervals = [poll_interval(t) for t in (0.0, 0.5, 0.99, 1.0, 4.9, 5.0, 29.9, 30.0, 600.0)]
    assert intervals == [0.05, 0.05, 0.05, 0.2, 0.2, 0.5, 0.5, 2.0, 2.0]
    assert intervals == sorted(intervals)
