# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The data-loss comparison of two copies of a table, as pure logic: a sort-merge of two streams of primary keys.

Each side is an iterator of ``(key, label)`` pairs in strictly increasing key order (``key`` a tuple of the primary
key's values as compared in Python, ``label`` how the key is shown - PostgreSQL's row text ``(42)``). The merge walks
both once, holding one pair per side and at most ``sample`` labels per side, so memory does not grow with the table.
A side out of order (or with a duplicate key) would make the counts wrong: it raises ``KeyOrderError`` instead.

No I/O: ``_pg.stream_keys`` streams the keys from server-side cursors; ``pg_data_loss`` wires both together.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.governed.rollback.plugins.module_utils._common import RollbackError

_END = object()


class KeyOrderError(RollbackError):
    """A stream of keys was not strictly increasing: the server's order and Python's disagree (or a key repeats)."""


def _ordered(stream, side):
    """The stream, checked as it goes: every key greater than the one before."""
    previous, previous_label = _END, None
    for key, label in stream:
        if previous is not _END and not previous < key:
            raise KeyOrderError("the %s side's keys are not in strictly increasing order at %s (after %s): the "
                                "server's ORDER BY and Python's comparison disagree, or the key is not unique; no "
                                "count was reported" % (side, label, previous_label))
        previous, previous_label = key, label
        yield key, label


def merge_keys(kept, restored, sample=20):
    """Compare two sorted key streams. Returns ``only_in_kept``, ``only_in_restored`` and ``in_both`` (counts), the
    first ``sample`` labels of each side's extra keys (``keys_only_in_kept``, ``keys_only_in_restored``, in key order)
    and ``rows_kept`` / ``rows_restored``."""
    sample = max(int(sample), 0)
    out = {"only_in_kept": 0, "only_in_restored": 0, "in_both": 0, "rows_kept": 0, "rows_restored": 0,
           "keys_only_in_kept": [], "keys_only_in_restored": []}
    left, right = _ordered(iter(kept), "kept"), _ordered(iter(restored), "restored")
    a, b = next(left, _END), next(right, _END)

    def extra(which, item):
        out["only_in_" + which] += 1
        out["rows_" + which] += 1
        if len(out["keys_only_in_" + which]) < sample:
            out["keys_only_in_" + which].append(item[1])

    while a is not _END and b is not _END:
        if a[0] == b[0]:
            out["in_both"] += 1
            out["rows_kept"] += 1
            out["rows_restored"] += 1
            a, b = next(left, _END), next(right, _END)
        elif a[0] < b[0]:
            extra("kept", a)
            a = next(left, _END)
        else:
            extra("restored", b)
            b = next(right, _END)
    while a is not _END:
        extra("kept", a)
        a = next(left, _END)
    while b is not _END:
        extra("restored", b)
        b = next(right, _END)
    return out


def table_entry(table, primary_key, merged, sample):
    """One table's comparison, as the report lists it (``keys_truncated`` when there were more than ``sample``)."""
    return {"table": table, "primary_key": primary_key,
            "rows_kept": merged["rows_kept"], "rows_restored": merged["rows_restored"],
            "rows_only_in_kept": merged["only_in_kept"], "rows_only_in_restored": merged["only_in_restored"],
            "keys": merged["keys_only_in_kept"], "keys_truncated": merged["only_in_kept"] > sample,
            "keys_only_in_restored": merged["keys_only_in_restored"],
            "keys_only_in_restored_truncated": merged["only_in_restored"] > sample}


def count_entry(table, rows_kept, rows_restored):
    """A table without a primary key (or whose key differs between the two): compared by row count only."""
    rows_kept, rows_restored = int(rows_kept or 0), int(rows_restored or 0)
    return {"table": table, "primary_key": None, "rows_kept": rows_kept, "rows_restored": rows_restored,
            "rows_only_in_kept": max(rows_kept - rows_restored, 0),
            "rows_only_in_restored": max(rows_restored - rows_kept, 0),
            "keys": [], "keys_truncated": False, "keys_only_in_restored": [], "keys_only_in_restored_truncated": False,
            "compared_by": "row count (no primary key)"}


def loss_entry(entry):
    """The report's ``tables`` item: the rows a table lost (the fields the restore's receipt and report carry)."""
    return dict((k, entry[k]) for k in ("table", "primary_key", "rows_only_in_kept", "keys", "keys_truncated"))


def summary(entries):
    """The report's totals from every table's comparison."""
    lost = [loss_entry(e) for e in entries if e["rows_only_in_kept"]]
    return {"tables": lost, "rows_lost": sum(e["rows_only_in_kept"] for e in entries),
            "rows_only_in_restored": sum(e["rows_only_in_restored"] for e in entries),
            "tables_without_primary_key": [e["table"] for e in entries if e["primary_key"] is None],
            "comparison": entries}
