"""Hostile inputs against revision parsing and selection (issue 9, section 6): no traceback, a clear refusal
naming the problem and nothing planned, or the controller's own reading of the input."""

import copy
import json

import pytest

from ansible_collections.governed.rollback.plugins.module_utils import _revisions as rev
from ansible_collections.governed.rollback.plugins.module_utils._common import Refused

UID = "uid-deploy"
IMAGES = {1: "aureus/frontend:v0.1.0", 2: "aureus/frontend:v0.1.1", 3: "aureus/frontend:v0.1.2"}


def template(image):
    return {"metadata": {"labels": {"component": "frontend"}},
            "spec": {"containers": [{"name": "web", "image": image}]}}


def deployment(image, revision=3):
    return {"metadata": {"name": "aureus-frontend", "namespace": "aureus", "uid": UID, "generation": 5,
                         "resourceVersion": "1000", "annotations": {rev.REVISION_ANNOTATION: str(revision)}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"component": "frontend"}}, "template": template(image)},
            "status": {"observedGeneration": 5}}


def replicaset(image, annotation, name):
    annotations = {} if annotation is None else {rev.REVISION_ANNOTATION: annotation}
    tmpl = template(image)
    tmpl["metadata"]["labels"]["pod-template-hash"] = name
    return {"metadata": {"name": name, "uid": "rs-" + name, "annotations": annotations,
                         "labels": {"component": "frontend", "pod-template-hash": name},
                         "creationTimestamp": "2024-01-01T00:00:00Z",
                         "ownerReferences": [{"kind": "Deployment", "uid": UID, "controller": True}]},
            "spec": {"template": tmpl}, "status": {"replicas": 0}}


def world(current=3):
    return deployment(IMAGES[current], current), [replicaset(IMAGES[n], str(n), "rs-%d" % n) for n in (1, 2, 3)]


def statefulset(image):
    return {"metadata": {"name": "db", "namespace": "data", "uid": "uid-sts", "generation": 2, "resourceVersion": "77"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"component": "frontend"}}, "template": template(image),
                     "updateStrategy": {"type": "RollingUpdate"}},
            "status": {"observedGeneration": 2, "readyReplicas": 2}}


def controller_revision(image, number, name):
    return {"metadata": {"name": name, "uid": "cr-" + name, "labels": {"component": "frontend"},
                         "ownerReferences": [{"kind": "StatefulSet", "uid": "uid-sts", "controller": True}]},
            "revision": number, "data": {"spec": {"template": template(image)}}}


# --- Go's strconv.ParseInt(s, 10, 64), exactly ------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("3", 3),
    ("0", 0),
    ("+3", 3),                           # Go accepts a leading sign
    ("-3", -3),
    ("003", 3),                          # leading zeros are fine in base 10
    ("-0", 0),
    ("9223372036854775807", 2 ** 63 - 1),
    ("-9223372036854775808", -2 ** 63),
    ("0000000000000000000000000000042", 42),
])
def test_revisions_go_accepts_are_read_as_go_reads_them(text, expected):
    assert rev.parse_go_int64(text) == expected


@pytest.mark.parametrize("text", [
    " 3 ", " 3", "3 ", "3\n", "\t3",     # no spaces, no trailing newline
    "3_000", "1_0",                      # underscores only with base 0
    "", "+", "-", "+-3", "--3", "3-",
    "٣", "３", "³", "৩",                 # Arabic-Indic, fullwidth, superscript, Bengali digits
    "9223372036854775808",               # 2^63
    "-9223372036854775809",
    "1" * 5000,                          # would exceed Python's int() digit limit too
    "0x10", "1e3", "3.0", "three", "NaN",
    None, True, False, 3, 3.0, ["3"], {"3": 3},
])
def test_revisions_go_rejects_are_not_numbers(text):
    assert rev.parse_go_int64(text) is None


@pytest.mark.parametrize("annotation", [" 3 ", "3_000", "٣", "9223372036854775808", "+", "", "１"])
def test_a_replicaset_with_an_annotation_go_rejects_is_skipped_like_the_controller_does(annotation):
    deploy, rss = world()
    rss.append(replicaset("aureus/frontend:hostile", annotation, "rs-hostile"))
    history = rev.deployment_history(deploy, rss)
    assert [r.name for r in history] == ["rs-1", "rs-2", "rs-3"]


@pytest.mark.parametrize("annotation,number", [("+4", 4), ("004", 4), ("-4", -4)])
def test_a_replicaset_with_an_annotation_go_accepts_keeps_that_number(annotation, number):
    deploy, rss = world()
    rss.append(replicaset("aureus/frontend:odd", annotation, "rs-odd"))
    history = rev.deployment_history(deploy, rss)
    assert (number, "rs-odd") in [(r.number, r.name) for r in history]


# --- to_revision of the wrong type or size ------------------------------------------------------------------------

@pytest.mark.parametrize("to_revision", [True, False, "1", "2", 1.0, 2.5, [1], {"revision": 1}, b"1"])
def test_to_revision_that_is_not_an_int_is_refused_and_never_means_revision_one(to_revision):
    deploy, rss = world()
    with pytest.raises(Refused) as err:
        rev.plan_rollback("Deployment", deploy, rss, to_revision=to_revision)
    assert err.value.code == "bad_revision"
    assert "to_revision must be an integer" in err.value.msg


@pytest.mark.parametrize("to_revision", [2 ** 63, 2 ** 64, 10 ** 30, 10 ** 4000])
def test_to_revision_beyond_int64_is_refused_as_out_of_range(to_revision):
    deploy, rss = world()
    with pytest.raises(Refused) as err:
        rev.plan_rollback("Deployment", deploy, rss, to_revision=to_revision)
    assert err.value.code == "bad_revision" and "out of range" in err.value.msg
    assert len(err.value.msg) < 300


@pytest.mark.parametrize("to_revision", [-1, -(2 ** 63), -(10 ** 30)])
def test_negative_to_revision_is_refused(to_revision):
    deploy, rss = world()
    with pytest.raises(Refused) as err:
        rev.plan_rollback("Deployment", deploy, rss, to_revision=to_revision)
    assert err.value.code == "bad_revision"


@pytest.mark.parametrize("to_image", [True, 3, ["aureus/frontend:v0.1.1"], {"image": "x"}])
def test_to_image_that_is_not_a_string_is_refused(to_image):
    deploy, rss = world()
    with pytest.raises(Refused) as err:
        rev.plan_rollback("Deployment", deploy, rss, to_image=to_image)
    assert err.value.code == "bad_revision"


def test_a_valid_explicit_revision_still_works_after_the_hardening():
    deploy, rss = world()
    plan = rev.plan_rollback("Deployment", deploy, rss, to_revision=1)
    assert plan.target.name == "rs-1"


# --- the same revision number twice ----------------------------------------------------------------------------------

@pytest.mark.parametrize("duplicated,to_revision", [(2, 2), (2, 0), (3, 1), (3, 0), (1, 1)])
def test_two_replicasets_with_the_same_revision_are_refused_as_ambiguous_naming_both(duplicated, to_revision):
    deploy, rss = world()
    twin = replicaset("aureus/frontend:impostor", str(duplicated), "rs-impostor")
    if duplicated == 3:
        twin["spec"]["template"] = copy.deepcopy(deploy["spec"]["template"])
    rss.append(twin)
    pristine = copy.deepcopy((deploy, rss))
    with pytest.raises(Refused) as err:
        rev.plan_rollback("Deployment", deploy, rss, to_revision=to_revision)
    assert err.value.code == "ambiguous_revision"
    assert "rs-impostor" in err.value.msg and "rs-%d" % duplicated in err.value.msg
    assert "nothing was changed" in err.value.msg
    assert sorted(err.value.details["ambiguous"]) == sorted(["rs-impostor", "rs-%d" % duplicated])
    assert (deploy, rss) == pristine


def test_a_duplicate_not_involved_in_the_rollback_does_not_block_it():
    deploy, rss = world()
    rss.append(replicaset("aureus/frontend:old", "1", "rs-old-twin"))
    plan = rev.plan_rollback("Deployment", deploy, rss, to_revision=2)
    assert plan.target.name == "rs-2"


@pytest.mark.parametrize("to_revision", [1, 0])
def test_two_controller_revisions_with_the_same_number_are_refused_as_ambiguous(to_revision):
    sts = statefulset("db:2")
    crs = [controller_revision("db:1", 1, "db-a"), controller_revision("db:1b", 1, "db-b"),
           controller_revision("db:2", 2, "db-c")]
    with pytest.raises(Refused) as err:
        rev.plan_rollback("StatefulSet", sts, crs, to_revision=to_revision)
    assert err.value.code == "ambiguous_revision"
    assert "db-a" in err.value.msg and "db-b" in err.value.msg


@pytest.mark.parametrize("revision", [True, "2", 2.0, None, [2], 2 ** 63, -(2 ** 63) - 1])
def test_a_controller_revision_with_a_non_int64_revision_is_skipped(revision):
    sts = statefulset("db:2")
    crs = [controller_revision("db:1", 1, "db-1"), controller_revision("db:2", 2, "db-2"),
           controller_revision("db:x", revision, "db-x")]
    history = rev.controller_revision_history(sts, crs)
    names = [r.name for r in history]
    if revision is None:          # a missing revision is 0, as the API's zero value
        assert names[0] == "db-x"
    else:
        assert names == ["db-1", "db-2"]
    assert all(isinstance(r.number, int) and not isinstance(r.number, bool) for r in history)


# --- structures no API server returns ----------------------------------------------------------------------------

def nested(depth, leaf):
    value = leaf
    for _level in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize("where", ["workload-template", "workload-annotation-free", "replicaset-template", "list"])
def test_deeply_nested_objects_are_refused_before_any_recursive_walk(where):
    deploy, rss = world()
    if where == "workload-template":
        deploy["spec"]["template"]["spec"]["x"] = nested(5000, "leaf")
    elif where == "workload-annotation-free":
        deploy["status"]["deep"] = nested(2000, [])
    elif where == "replicaset-template":
        rss[0]["spec"]["template"]["spec"]["x"] = nested(3000, 1)
    else:
        value = []
        for _level in range(4000):
            value = [value]
        rss[1]["status"]["conditions"] = value
    with pytest.raises(Refused) as err:
        rev.plan_rollback("Deployment", deploy, rss)
    assert err.value.code == "bad_object" and "nested deeper" in err.value.msg


def test_deeply_nested_json_text_in_an_annotation_is_only_text():
    deploy, rss = world()
    deploy["metadata"]["annotations"]["x"] = "[" * 100000 + "]" * 100000
    plan = rev.plan_rollback("Deployment", deploy, rss)
    assert plan.target.number == 2
    json.dumps(plan.plan())


@pytest.mark.parametrize("workload,items", [
    ([], []),
    ({"metadata": "x"}, []),
    ({"metadata": {"name": "a"}}, "not-a-list"),
    ({"metadata": {"name": "a"}}, [1, 2]),
    ({"metadata": {"name": "a"}}, [{"metadata": ["x"]}]),
    ({"metadata": {"name": "a"}}, [{"metadata": {"annotations": "x"}}]),
])
def test_objects_of_the_wrong_shape_are_refused(workload, items):
    with pytest.raises(Refused) as err:
        rev.plan_rollback("Deployment", workload, items)
    assert err.value.code == "bad_object"


@pytest.mark.parametrize("field,value", [
    ("generation", "5"), ("generation", True), ("generation", 10 ** 40), ("generation", None),
])
def test_hostile_integer_fields_do_not_raise(field, value):
    deploy, rss = world()
    deploy["metadata"][field] = value
    deploy["status"]["observedGeneration"] = value
    plan = rev.plan_rollback("Deployment", deploy, rss)
    assert plan.target.number == 2


@pytest.mark.parametrize("containers", ["x", [1, None, "c"], {"name": "web"}, None])
def test_hostile_container_lists_do_not_raise(containers):
    deploy, rss = world()
    rss[1]["spec"]["template"]["spec"]["containers"] = containers
    plan = rev.plan_rollback("Deployment", deploy, rss, to_revision=2)
    assert plan.target.images == []


@pytest.mark.parametrize("history_annotation", ["1,2,x", " 1 ,2", "9" * 50, ",,,", "1_0,2"])
def test_hostile_revision_history_annotations_keep_only_go_numbers(history_annotation):
    deploy, rss = world()
    rss[0]["metadata"]["annotations"][rev.REVISION_HISTORY_ANNOTATION] = history_annotation
    history = rev.deployment_history(deploy, rss)
    assert all(isinstance(n, int) and -2 ** 63 <= n < 2 ** 63 for n in history[0].previous_numbers)
