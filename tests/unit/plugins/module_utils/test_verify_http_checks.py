"""rollback_verify's health and smoke checks on plain data: which answers pass, how often a check is repeated and
how long it waits between attempts, the order, and a smoke entry without a URL refused before anything is sent."""

import pytest

from ansible_collections.governed.rollback.plugins.module_utils import _verify
from ansible_collections.governed.rollback.plugins.module_utils._common import RollbackError


class Answers:
    """Plays back answers per URL, (status, error) each; records the requests and the sleeps between them."""

    def __init__(self, **by_url):
        self.by_url = dict((url, list(answers)) for url, answers in by_url.items())
        self.requests, self.slept = [], []

    def request(self, url, method="GET", headers=None, body=None, follow_redirects="none"):
        self.requests.append((url, method, body, follow_redirects))
        status, error = self.by_url[url].pop(0)
        return status, None, error

    def sleep(self, seconds):
        self.slept.append(seconds)


def test_nothing_asked_is_skipped_and_sends_nothing():
    http = Answers()
    result = _verify.run_http_checks(http, None, [], retries=3, delay=1, sleep=http.sleep)
    assert (result["health_check"], result["smoke_tests"], result["health"], result["smoke"]) == (
        "skipped", "skipped", None, [])
    assert http.requests == []


@pytest.mark.parametrize("status", [200, 201, 202, 203, 204])
def test_the_health_endpoint_passes_on_any_2xx_it_answers_with_or_without_a_body(status):
    http = Answers(health=[(status, None)])
    result = _verify.run_http_checks(http, "health", sleep=http.sleep)
    assert result["health_check"] == "passed"
    assert result["health"] == {"url": "health", "method": "GET", "status": status, "attempts": 1, "result": "passed",
                                "error": None}


def test_an_unhealthy_endpoint_is_retried_then_failed_with_its_last_answer():
    http = Answers(health=[(503, None), (503, None), (206, None)])
    result = _verify.run_http_checks(http, "health", retries=2, delay=0.5, sleep=http.sleep)
    assert result["health_check"] == "failed"
    assert (result["health"]["attempts"], result["health"]["status"]) == (3, 206)
    assert result["health"]["error"] == "status 206, expected 200, 201, 202, 203, 204"
    assert http.slept == [0.5, 0.5]


def test_a_check_that_recovers_within_its_retries_passes_and_stops_asking():
    http = Answers(health=[(None, "GET health: connection refused"), (502, None), (200, None), (200, None)])
    result = _verify.run_http_checks(http, "health", retries=5, delay=2, sleep=http.sleep)
    assert (result["health_check"], result["health"]["attempts"]) == ("passed", 3)
    assert len(http.requests) == 3 and http.slept == [2.0, 2.0]


def test_a_transport_error_fails_the_check_with_the_error():
    http = Answers(health=[(None, "GET health: timed out")])
    result = _verify.run_http_checks(http, "health", sleep=http.sleep)
    assert result["health"]["result"] == "failed" and result["health"]["error"] == "GET health: timed out"
    assert result["health"]["status"] is None


def test_health_first_then_each_smoke_url_with_its_method_body_and_status():
    http = Answers(health=[(200, None)], a=[(200, None)], b=[(201, None)], c=[(404, None)])
    result = _verify.run_http_checks(http, "health", [
        {"url": "a"}, {"url": "b", "method": "post", "body": {"q": "smoke"}, "status": [200, 201]},
        {"url": "c", "status": 200}], sleep=http.sleep)
    assert [r[:3] for r in http.requests] == [("health", "GET", None), ("a", "GET", None),
                                              ("b", "POST", {"q": "smoke"}), ("c", "GET", None)]
    assert all(r[3] == "safe" for r in http.requests)  # redirects followed as the uri module does
    assert [c["result"] for c in result["smoke"]] == ["passed", "passed", "failed"]
    assert (result["health_check"], result["smoke_tests"]) == ("passed", "failed")


def test_smoke_alone_passes_when_every_url_answers_as_expected():
    http = Answers(a=[(200, None)], b=[(204, None)])
    result = _verify.run_http_checks(http, None, [{"url": "a"}, {"url": "b", "status": 204}], sleep=http.sleep)
    assert (result["health_check"], result["smoke_tests"]) == ("skipped", "passed")


@pytest.mark.parametrize("entry", [{}, {"method": "GET"}, "http://example.invalid/", {"url": ""}])
def test_a_smoke_entry_without_a_url_is_refused_before_any_request(entry):
    http = Answers(health=[(200, None)])
    with pytest.raises(RollbackError, match=r"smoke\[1\] needs a url"):
        _verify.run_http_checks(http, "health", [{"url": "health"}, entry], sleep=http.sleep)
    assert http.requests == []


def test_a_status_that_is_not_a_number_is_refused_before_any_request():
    http = Answers(health=[(200, None)])
    with pytest.raises(RollbackError, match="status must be an HTTP status"):
        _verify.run_http_checks(http, "health", [{"url": "health", "status": "ok"}], sleep=http.sleep)
    assert http.requests == []


def test_each_failed_group_is_one_problem_line_naming_every_failed_check():
    http = Answers(health=[(200, None)], a=[(503, None)], b=[(200, None)], c=[(None, "GET c: timed out")])
    summary = _verify.run_http_checks(http, "health", [{"url": "a"}, {"url": "b"}, {"url": "c"}], sleep=http.sleep)
    assert _verify.http_problems(summary) == [
        "smoke_tests failed (GET a: status 503, expected 200; GET c: GET c: timed out)"]
    assert _verify.http_problems(_verify.run_http_checks(Answers(), None, [], sleep=None)) == []
