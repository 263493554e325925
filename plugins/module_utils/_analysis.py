# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure core of rollback_verify: metric analysis modelled on Argo Rollouts' AnalysisTemplate, contract assertions,
policy invariants and the logs-clean comparison. No I/O: the module's adapter measures, this file judges.

Metric analysis (one metric):
  * every ``interval`` seconds, ``count`` times, the adapter runs the query and hands :func:`judge_measurement`
    a :class:`Sample` (a number, no data, NaN, or an error);
  * a measurement is ``error`` (the query failed), ``inconclusive`` (no data, NaN, more than one series, or a condition
    that needs ``baseline`` when there is none), ``failed`` (``failure_condition`` true, or ``success_condition``
    false when no failure_condition is given), ``successful`` (``success_condition`` true, or ``failure_condition``
    false when no success_condition is given), else ``inconclusive`` (neither condition holds), as Argo does;
  * :func:`analysis_phase` stops early and decides as Argo does: more failed than ``failure_limit`` -> fail, more
    inconclusive than ``inconclusive_limit`` -> inconclusive, more consecutive errors than
    ``consecutive_error_limit`` -> inconclusive (the metric could not be measured: never a pass), all ``count``
    measurements taken -> pass.
Conditions are small expressions over ``result`` and ``baseline`` (numbers), parsed with :mod:`ast` and evaluated
by a whitelist walker (comparisons, ``and``/``or``/``not``, ``+ - * /``, ``abs``, ``min``, ``max``, ``isNaN``);
no ``eval``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ast
import math
import operator
import re

from ansible_collections.governed.rollback.plugins.module_utils._common import RollbackError

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
SUCCESSFUL, FAILED, ERROR = "successful", "failed", "error"
MEASUREMENT_PHASES = (SUCCESSFUL, FAILED, INCONCLUSIVE, ERROR)

_COMPARE = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
            ast.Eq: operator.eq, ast.NotEq: operator.ne}
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_FUNCTIONS = {"abs": abs, "min": min, "max": max, "isNaN": math.isnan}
_ALLOWED_NODES = (ast.Expression, ast.Load, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd,
                  ast.BinOp, ast.Compare, ast.Call)
NAMES = ("result", "baseline")
_MAX_CONDITION = 512
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)?\s*$")


class ConditionError(RollbackError):
    """A condition that is not one of the allowed expressions (a spec error, reported before measuring)."""


class _Missing(Exception):
    """A condition needs a value that is not there (baseline): the measurement is inconclusive."""


def parse_duration(value, what="interval"):
    """Seconds from 2, 2.5, '2s', '500ms', '1m', '1h'; a clear error otherwise."""
    if isinstance(value, bool):
        raise RollbackError("%s must be a duration such as 2s or 500ms, got %r" % (what, value))
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value or ""))
        if not match:
            raise RollbackError("%s must be a duration such as 2s, 500ms or 1m, got %r" % (what, value))
        seconds = float(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)]
    if seconds < 0 or math.isinf(seconds) or math.isnan(seconds):
        raise RollbackError("%s must be a non-negative duration, got %r" % (what, value))
    return seconds


def compile_condition(text):
    """The parsed condition (an ast node), checked against the whitelist; raises ConditionError."""
    if not isinstance(text, str) or not text.strip():
        raise ConditionError("a condition must be a non-empty expression such as 'result < 0.05'")
    if len(text) > _MAX_CONDITION:
        raise ConditionError("a condition is limited to %d characters" % _MAX_CONDITION)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ConditionError("condition %r is not an expression: %s" % (text, exc.msg))
    for node in ast.walk(tree):
        if isinstance(node, _ALLOWED_NODES) or type(node) in _COMPARE or type(node) in _BINARY:
            if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS
                                                   and not node.keywords):
                raise ConditionError("condition %r: only abs(), min(), max() and isNaN() may be called" % text)
            continue
        if isinstance(node, ast.Name) and (node.id in NAMES or node.id in _FUNCTIONS):
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
                and not isinstance(node.value, bool):
            continue
        raise ConditionError("condition %r uses %s; allowed: numbers, result, baseline, < <= > >= == !=, "
                             "and/or/not, + - * /, abs(), min(), max(), isNaN()"
                             % (text, getattr(node, "id", None) or type(node).__name__))
    return tree


def references(tree, name):
    return any(isinstance(node, ast.Name) and node.id == name for node in ast.walk(tree))


def _eval(node, names):
    if isinstance(node, ast.Expression):
        return _eval(node.body, names)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        value = names.get(node.id)
        if value is None:
            raise _Missing(node.id)
        return value
    if isinstance(node, ast.BoolOp):
        values = (_eval(v, names) for v in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, names)
        return (not value) if isinstance(node.op, ast.Not) else (-value if isinstance(node.op, ast.USub) else value)
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, names), _eval(node.right, names)
        if isinstance(node.op, ast.Div) and right == 0:
            return float("nan")
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, names)
        for op, comparator in zip(node.ops, node.comparators):
            right = _eval(comparator, names)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.Call):
        return _FUNCTIONS[node.func.id](*[_eval(a, names) for a in node.args])
    raise ConditionError("unsupported expression %s" % type(node).__name__)


def evaluate_condition(tree, result, baseline=None):
    """True/False, or None when the condition needs a value that is missing (baseline)."""
    try:
        return bool(_eval(tree, {"result": result, "baseline": baseline}))
    except _Missing:
        return None
    except (TypeError, ValueError, OverflowError):
        return None


class Sample(object):
    """One query's outcome: ``value`` (float or None), ``series`` (how many series answered), ``error`` (text)."""

    def __init__(self, value=None, series=0, error=None, at=None):
        self.value, self.series, self.error, self.at = value, series, error, at


def sample_from_prometheus(payload, at=None):
    """A Sample from a Prometheus /api/v1/query answer (already decoded JSON); never raises."""
    if not isinstance(payload, dict):
        return Sample(error="the answer is not a JSON object", at=at)
    if payload.get("status") != "success":
        return Sample(error="Prometheus answered %s: %s" % (payload.get("errorType") or payload.get("status"),
                                                            payload.get("error") or "no error text"), at=at)
    data = payload.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    try:
        if kind == "scalar":
            return Sample(value=float(result[1]), series=1, at=at)
        if kind == "vector":
            if not result:
                return Sample(series=0, at=at)
            return Sample(value=float(result[0]["value"][1]), series=len(result), at=at)
    except (TypeError, ValueError, KeyError, IndexError):
        return Sample(error="the answer's %s result is malformed" % kind, at=at)
    return Sample(error="a %s result cannot be judged; the query must return one number (aggregate it, e.g. sum())"
                  % kind, at=at)


def judge_measurement(sample, success=None, failure=None, baseline=None):
    """(phase, message) of one measurement."""
    if sample.error:
        return ERROR, sample.error
    if sample.series == 0 or sample.value is None:
        return INCONCLUSIVE, "the query returned no data"
    if sample.series > 1:
        return INCONCLUSIVE, "the query returned %d series; aggregate it to one number (e.g. sum())" % sample.series
    if math.isnan(sample.value):
        return INCONCLUSIVE, "the query returned NaN"
    if baseline is None and any(t is not None and references(t, "baseline") for t in (success, failure)):
        return INCONCLUSIVE, "the condition compares with the baseline, which has no value"
    failed = evaluate_condition(failure, sample.value, baseline) if failure is not None else None
    succeeded = evaluate_condition(success, sample.value, baseline) if success is not None else None
    if failed:
        return FAILED, "failure_condition is true"
    if succeeded:
        return SUCCESSFUL, "success_condition is true"
    if success is not None and failure is None and succeeded is False:
        return FAILED, "success_condition is false"
    if failure is not None and success is None and failed is False:
        return SUCCESSFUL, "failure_condition is false"
    return INCONCLUSIVE, "neither condition holds"


def analysis_phase(phases, count, failure_limit=0, inconclusive_limit=0, consecutive_error_limit=4):
    """(result or None while running, reason) from the measurement phases so far, Argo's rules."""
    failed = phases.count(FAILED)
    inconclusive = phases.count(INCONCLUSIVE)
    consecutive = 0
    for phase in reversed(phases):
        if phase != ERROR:
            break
        consecutive += 1
    if failed > failure_limit:
        return FAIL, "%d failed measurement(s), failure_limit %d" % (failed, failure_limit)
    if inconclusive > inconclusive_limit:
        return INCONCLUSIVE, "%d inconclusive measurement(s), inconclusive_limit %d" % (
            inconclusive, inconclusive_limit)
    if consecutive > consecutive_error_limit:
        return INCONCLUSIVE, "%d consecutive measurement error(s), consecutive_error_limit %d" % (
            consecutive, consecutive_error_limit)
    if len(phases) >= count:
        if phases and phases[-1] == ERROR:
            return INCONCLUSIVE, "the last measurement is an error"
        if all(p == ERROR for p in phases):
            return INCONCLUSIVE, "every measurement is an error"
        return PASS, "%d measurement(s), %d failed, %d inconclusive, %d error(s)" % (
            len(phases), failed, inconclusive, phases.count(ERROR))
    return None, "running"


METRIC_DEFAULTS = {"interval": "2s", "count": 3, "failure_limit": 0, "inconclusive_limit": 0,
                   "consecutive_error_limit": 4, "initial_delay": "0s", "success_condition": None,
                   "failure_condition": None}


def normalize_metric(spec, index=0):
    """The metric spec with defaults and compiled conditions; a RollbackError naming what is wrong."""
    if not isinstance(spec, dict):
        raise RollbackError("metrics[%d] must be a mapping with name and query" % index)
    unknown = sorted(set(spec) - set(METRIC_DEFAULTS) - {"name", "query"})
    if unknown:
        raise RollbackError("metrics[%d] has unknown key(s) %s; known: name, query, %s"
                            % (index, ", ".join(unknown), ", ".join(sorted(METRIC_DEFAULTS))))
    metric = dict(METRIC_DEFAULTS)
    metric.update((k, v) for k, v in spec.items() if v is not None)
    name = metric.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RollbackError("metrics[%d] needs a name" % index)
    if not isinstance(metric.get("query"), str) or not metric["query"].strip():
        raise RollbackError("metric %s needs a query (PromQL returning one number)" % name)
    if not metric["success_condition"] and not metric["failure_condition"]:
        raise RollbackError("metric %s needs success_condition and/or failure_condition" % name)
    for key in ("count", "failure_limit", "inconclusive_limit", "consecutive_error_limit"):
        value = metric[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if key == "count" else 0):
            try:
                value = int(str(value))
            except ValueError:
                value = -1
            if value < (1 if key == "count" else 0):
                raise RollbackError("metric %s: %s must be an integer >= %d" % (name, key, 1 if key == "count" else 0))
        metric[key] = value
    metric["interval_seconds"] = parse_duration(metric["interval"], "metric %s interval" % name)
    metric["initial_delay_seconds"] = parse_duration(metric["initial_delay"], "metric %s initial_delay" % name)
    try:
        metric["_success"] = compile_condition(metric["success_condition"]) if metric["success_condition"] else None
        metric["_failure"] = compile_condition(metric["failure_condition"]) if metric["failure_condition"] else None
    except ConditionError as exc:
        raise RollbackError("metric %s: %s" % (name, exc))
    return metric


def condition_text(metric):
    parts = []
    if metric.get("success_condition"):
        parts.append("success: %s" % metric["success_condition"])
    if metric.get("failure_condition"):
        parts.append("failure: %s" % metric["failure_condition"])
    return "; ".join(parts)


def finite_or_none(value):
    if value is None or (isinstance(value, float) and (math.isnan(value) or math.isinf(value))):
        return None
    return value


def summarize_metric(metric, measurements, result, reason, baseline):
    """The receipt's entry for one metric (verification_details.metrics[])."""
    values = [m for m in measurements if m.get("value") is not None]
    return {
        "name": metric["name"],
        "query": metric["query"],
        "result": result,
        "reason": reason,
        "baseline": finite_or_none(baseline),
        "value": finite_or_none(values[-1]["value"]) if values else None,
        "measurements": [{"at": m["at"], "value": finite_or_none(m.get("value")), "phase": m["phase"]}
                         for m in measurements],
        "condition": condition_text(metric),
    }


# --------------------------------------------------------------------------- checklist

def overall(results, accept_inconclusive=False):
    """pass / fail / inconclusive of a list of results (empty -> None, nothing ran)."""
    results = [r for r in results if r]
    if not results:
        return None
    if FAIL in results:
        return FAIL
    if INCONCLUSIVE in results:
        return PASS if accept_inconclusive else INCONCLUSIVE
    return PASS


def checklist_passes(results, accept_inconclusive=False):
    """The checklist fails closed: only pass (or an explicitly accepted inconclusive) lets it through."""
    return all(r == PASS or (r == INCONCLUSIVE and accept_inconclusive) for r in results if r is not None)


# --------------------------------------------------------------------------- contracts

def body_shape(value):
    """The shape of a JSON value: keys and types, recursively, with no values (for 403/404 indistinguishability)."""
    if isinstance(value, dict):
        return dict((k, body_shape(v)) for k, v in sorted(value.items()))
    if isinstance(value, list):
        return [body_shape(value[0])] if value else []
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if value is None:
        return "null"
    return "string"


def judge_contract(status, expected_status, assertion_results):
    """(result, failed) for one probe: ``assertion_results`` is [(description, ok)]."""
    failed = []
    if status not in expected_status:
        failed.append("status %s, expected %s" % (status, " or ".join(str(s) for s in expected_status)))
    failed.extend(description for description, ok in assertion_results if not ok)
    return (PASS if not failed else FAIL), failed


def judge_assertion(kind, actual, expected=None):
    """One JMESPath assertion on a value the adapter extracted: exists, not_exists, equals, matches (regex), in (one
    of a list), keys_in (an object with no key outside a list)."""
    if kind == "exists":
        return actual is not None
    if kind == "not_exists":
        return actual is None
    if kind == "equals":
        return actual == expected
    if kind == "matches":
        return isinstance(actual, str) and re.search(str(expected), actual) is not None
    if kind == "in":
        return actual in (expected or [])
    if kind == "keys_in":
        # A policy-safe shape: an object whose every key is one of the expected (a denied answer that says no more).
        return isinstance(actual, dict) and set(actual) <= set(expected or [])
    raise RollbackError("unknown assertion %r; use exists, not_exists, equals, matches, in or keys_in" % kind)


# --------------------------------------------------------------------------- policy invariants and logs

def judge_decisions(probes, decisions):
    """Each probe {endpoint, request_id} -> result: pass when the decision log has a decision for its request id.

    ``decisions`` maps request_id -> decision_id (None: the request was answered but no decision was recorded).
    A probe whose request never reached the log is inconclusive (the log could not show it either way).
    """
    results = []
    for probe in probes:
        request_id = probe["request_id"]
        if probe.get("error"):
            results.append({"endpoint": probe["endpoint"], "result": INCONCLUSIVE, "decision_id": None,
                            "reason": probe["error"]})
        elif request_id not in decisions:
            results.append({"endpoint": probe["endpoint"], "result": INCONCLUSIVE, "decision_id": None,
                            "reason": "the request is not in the decision log"})
        elif not decisions[request_id]:
            results.append({"endpoint": probe["endpoint"], "result": FAIL, "decision_id": None,
                            "reason": "answered %s without a policy decision" % probe.get("status")})
        else:
            results.append({"endpoint": probe["endpoint"], "result": PASS, "decision_id": decisions[request_id],
                            "reason": "decision %s" % decisions[request_id]})
    return results


def judge_existence(restricted, missing):
    """Restricted and missing must be indistinguishable: same status, same body shape, same error_code/message."""
    failed = []
    if restricted["status"] != missing["status"]:
        failed.append("restricted answers %s, missing answers %s" % (restricted["status"], missing["status"]))
    if body_shape(restricted.get("body")) != body_shape(missing.get("body")):
        failed.append("restricted and missing bodies differ in shape")
    for key in ("error_code", "message"):
        a = (restricted.get("body") or {}).get(key) if isinstance(restricted.get("body"), dict) else None
        b = (missing.get("body") or {}).get(key) if isinstance(missing.get("body"), dict) else None
        if a != b:
            failed.append("%s differs: %r vs %r" % (key, a, b))
    return (PASS if not failed else FAIL), failed


def judge_logs(errors_before, errors_after, max_ratio=1.0, max_increase=0):
    """Logs clean: errors after the rollback at most ``max_ratio`` x before plus ``max_increase``."""
    if errors_before is None or errors_after is None:
        return INCONCLUSIVE
    return PASS if errors_after <= errors_before * max_ratio + max_increase else FAIL
