"""The Helm values pin's rule (plain data and text): several values shapes, none found, ambiguous, values_key, the
chart's values file behind the HelmRelease's spec.values, and the line-based edit that keeps everything else."""

import pytest

from ansible_collections.governed.rollback.plugins.module_utils import _gitops_helm as helm
from ansible_collections.governed.rollback.plugins.module_utils._common import Refused, RollbackError

GOOD = "sha256:" + "a" * 64
BAD = "sha256:" + "b" * 64

RELEASE = """---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: aureus-web
  namespace: aureus
spec:
  interval: 1m
  chart:
    spec:
      chart: ./charts/aureus-web
  values:
    replicaCount: 2
    # the release pipeline writes the digest
    image:
      repository: aureus/web
      tag: "1.1.0"   # human-readable
      digest: %s  # what runs
    service:
      port: 8080
""" % BAD

CHART_VALUES = """# Default values for aureus-web.
image:
  repository: aureus/web
  tag: "1.0.0"
  digest: ""
resources: {}
"""


def test_the_common_image_mapping_is_the_one_candidate():
    _index, doc = helm.helmrelease_doc(RELEASE)
    values = helm.release_values(doc)
    assert helm.candidates(values) == [{"path": ("image",), "shape": "mapping"}]
    assert helm.image_of(values, helm.select(values)) == {
        "image": "aureus/web@" + BAD, "digest": BAD, "tag": "1.1.0", "repository": "aureus/web"}


def test_a_nested_mapping_with_a_registry_and_a_string_image_are_candidates():
    values = {"api": {"image": {"registry": "registry.example.com", "repository": "aureus/api", "tag": "2"}},
              "worker": {"image": "aureus/worker:3.1"}, "note": "image: not-this"}
    assert helm.candidates(values) == [{"path": ("api", "image"), "shape": "mapping"},
                                       {"path": ("worker", "image"), "shape": "string"}]
    api = helm.select(values, "api.image")
    assert helm.image_of(values, api)["image"] == "registry.example.com/aureus/api:2"
    worker = helm.select(values, "worker.image")
    assert helm.image_of(values, worker) == {"image": "aureus/worker:3.1", "digest": None, "tag": "3.1",
                                             "repository": "aureus/worker"}


def test_ambiguous_values_are_refused_naming_the_candidates():
    values = {"api": {"image": {"repository": "a", "tag": "1"}}, "sidecar": {"image": {"repository": "b", "tag": "2"}}}
    with pytest.raises(Refused, match=r"hold 2 image candidates \(api.image, sidecar.image\); name the one to pin "
                                      r"with values_key") as err:
        helm.select(values)
    assert err.value.code == "no_image"


def test_no_candidate_is_refused_and_nothing_is_guessed():
    values = {"replicaCount": 2, "containerImage": "aureus/web:1", "image": {"pullPolicy": "IfNotPresent"}}
    with pytest.raises(Refused, match=r"hold 0 image candidates \(none\)"):
        helm.select(values)
    with pytest.raises(Refused, match=r"no image at values_key 'image'.*a dict"):
        helm.select(values, "image")
    with pytest.raises(Refused, match=r"no image at values_key 'web.image' \(absent\)"):
        helm.select(values, "web.image")
    with pytest.raises(RollbackError, match="not a dotted key path"):
        helm.select(values, "image..tag")


@pytest.mark.parametrize("field", ["image.tag", "image.repository", "image.digest"])
def test_a_values_key_naming_a_field_of_an_image_mapping_is_refused_pointing_at_the_image(field):
    values = {"image": {"repository": "aureus/web", "tag": "2.0.0", "digest": ""}}
    with pytest.raises(Refused, match=r"values_key '%s' names a field of the image at 'image', not an image; name "
                                      r"the image itself: values_key=image" % field) as err:
        helm.select(values, field)
    assert err.value.code == "no_image"


def test_values_key_names_a_string_reference_under_another_key():
    values = {"containerImage": "aureus/web@" + BAD}
    candidate = helm.select(values, "containerImage")
    assert candidate == {"path": ("containerImage",), "shape": "string"}
    assert helm.image_of(values, candidate)["digest"] == BAD


def test_the_pin_in_spec_values_changes_only_the_digest_line():
    target = helm.find_target(RELEASE, "apps/aureus-web/helmrelease.yaml", None)
    assert target["file"] == "release" and target["doc_index"] == 0
    pinned = helm.pin(RELEASE, target["candidate"], target["values_path"], digest=GOOD)
    assert pinned == RELEASE.replace("digest: %s  # what runs" % BAD, "digest: %s  # what runs" % GOOD)
    again = helm.current_image(pinned, "f", None)[0]
    assert again["image"] == "aureus/web@" + GOOD


def test_a_tag_pin_empties_the_digest_and_keeps_quotes_and_comments():
    target = helm.find_target(RELEASE, "f", None)
    pinned = helm.pin(RELEASE, target["candidate"], target["values_path"], tag="1.0.0")
    assert '      tag: "1.0.0"   # human-readable\n' in pinned
    assert '      digest: ""  # what runs\n' in pinned
    assert helm.current_image(pinned, "f", None)[0]["image"] == "aureus/web:1.0.0"
    assert len(pinned.splitlines()) == len(RELEASE.splitlines())


def test_the_chart_values_file_when_spec_values_holds_no_image():
    release = RELEASE.split("  values:\n", maxsplit=1)[0]
    target = helm.find_target(release, "f", (CHART_VALUES, "charts/aureus-web/values.yaml"))
    assert target["file"] == "chart" and target["values_path"] == ()
    pinned = helm.pin(CHART_VALUES, target["candidate"], (), digest=GOOD)
    assert pinned == CHART_VALUES.replace('digest: ""', 'digest: "%s"' % GOOD)
    assert helm.image_of(helm.load(pinned, "v")[0], target["candidate"])["digest"] == GOOD


def test_a_chart_values_pin_that_spec_values_would_override_is_refused():
    release = RELEASE.replace("""    image:
      repository: aureus/web
      tag: "1.1.0"   # human-readable
      digest: %s  # what runs
""" % BAD, """    image:
      tag: "1.1.0"
""")
    with pytest.raises(Refused, match="spec.values sets image, which overrides the chart's values file"):
        helm.find_target(release, "f", (CHART_VALUES, "charts/aureus-web/values.yaml"))
    with pytest.raises(Refused, match="not in the repository"):
        helm.find_target(release, "f", None)


def test_a_string_image_is_pinned_in_place_and_a_missing_digest_key_is_refused():
    text = "image: 'aureus/worker:3.1' # pinned by CI\nreplicas: 1\n"
    candidate = helm.select(helm.load(text, "v")[0])
    assert helm.pin(text, candidate, (), digest=GOOD) == "image: 'aureus/worker@%s' # pinned by CI\nreplicas: 1\n" % GOOD
    no_digest = "image:\n  repository: aureus/web\n  tag: 1.0.0\n"
    with pytest.raises(Refused, match="has no digest key"):
        helm.pin(no_digest, helm.select(helm.load(no_digest, "v")[0]), (), digest=GOOD)
    with pytest.raises(RollbackError, match="not an image digest"):
        helm.pin(no_digest, helm.select(helm.load(no_digest, "v")[0]), (), digest="sha256:nope")


def test_a_flow_style_mapping_is_refused_not_rewritten():
    text = "image: {repository: aureus/web, digest: %s}\n" % BAD
    candidate = helm.select(helm.load(text, "v")[0])
    with pytest.raises(Refused, match="not written as a block mapping"):
        helm.pin(text, candidate, (), digest=GOOD)


def test_the_helmrelease_is_found_among_several_documents_and_crlf_is_kept():
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n" + RELEASE
    text = text.replace("\n", "\r\n")
    target = helm.find_target(text, "f", None, release_name="aureus-web")
    assert target["doc_index"] == 1
    pinned = helm.pin(text, target["candidate"], target["values_path"], digest=GOOD, doc_index=1)
    assert pinned == text.replace(BAD, GOOD)
    with pytest.raises(Refused, match="holds no HelmRelease named 'other'"):
        helm.find_target(text, "f", None, release_name="other")
