# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The data-loss comparison of two copies of a table, as pure logic: a sort-merge of two streams of primary keys.

Each side is an iterable of keys in strictly increasing order (a key is a tuple of the primary key's values as
compared in Python). The merge walks both once, holding one key per side and at most ``sample`` keys per side, so
memory does not grow with the table. A side out of order (or with a duplicate key) would make the counts wrong: it
raises ``KeyOrderError`` instead. The sampled keys are named afterwards (``_pg.key_labels``: PostgreSQL's row text,
``(42)``), so only they cost a label.

No I/O: ``_pg.stream_keys`` streams the keys from server-side cursors; ``pg_data_loss`` wires both together.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.governed.rollback.plugins.module_utils._common import RollbackError

_END = object()


class KeyOrderError(RollbackError):
    """A stream of keys was not strictly increasing: the server's order and Python's disagree (or a key repeats)."""


def _out_of_order(side, key, previous):
    return KeyOrderError("the %s side's keys are not in strictly increasing order at %r (after %r): the server's ORDER "
                         "BY and Python's comparison disagree, or the key is not unique; no count was reported"
                         % (side, key, previous))


def merge_keys(kept, restored, sample=20):
    """Compare two sorted key streams (iterables of key tuples). Returns ``only_in_kept``, ``only_in_restored`` and
    ``in_both`` (counts), ``rows_kept`` / ``rows_restored``, and the first ``sample`` keys of each side's extra rows
    (``keys_only_in_kept``, ``keys_only_in_restored``, in key order). Each side is checked as it is read: a key not
    greater than the one before raises ``KeyOrderError``."""
    sample = max(int(sample), 0)
    counts = {"kept": 0, "restored": 0}
    extras = {"kept": [], "restored": []}
    both = 0
    left, right = iter(kept), iter(restored)
    a, b = next(left, _END), next(right, _END)
    prev_a = prev_b = _END

    def extra(which, key):
        counts[which] += 1
        if len(extras[which]) < sample:
            extras[which].append(key)

    while a is not _END and b is not _END:
        if a == b:
            both += 1
            prev_a, prev_b = a, b
            a, b = next(left, _END), next(right, _END)
        elif a < b:
            extra("kept", a)
            prev_a, a = a, next(left, _END)
        else:
            extra("restored", b)
            prev_b, b = b, next(right, _END)
        if a is not _END and prev_a is not _END and not prev_a < a:
            raise _out_of_order("kept", a, prev_a)
        if b is not _END and prev_b is not _END and not prev_b < b:
            raise _out_of_order("restored", b, prev_b)
    for which, item, rest, prev in (("kept", a, left, prev_a), ("restored", b, right, prev_b)):
        while item is not _END:
            if prev is not _END and not prev < item:
                raise _out_of_order(which, item, prev)
            extra(which, item)
            prev, item = item, next(rest, _END)
    return {"only_in_kept": counts["kept"], "only_in_restored": counts["restored"], "in_both": both,
            "rows_kept": counts["kept"] + both, "rows_restored": counts["restored"] + both,
            "keys_only_in_kept": extras["kept"], "keys_only_in_restored": extras["restored"]}


def table_entry(table, primary_key, merged, sample, kept_labels=None, restored_labels=None):
    """One table's comparison, as the report lists it (``keys_truncated`` when there were more than ``sample``). The
    labels name the sampled keys (``merged``'s own keys, as text, when not given)."""
    if kept_labels is None:
        kept_labels = [str(k) for k in merged["keys_only_in_kept"]]
    if restored_labels is None:
        restored_labels = [str(k) for k in merged["keys_only_in_restored"]]
    return {"table": table, "primary_key": primary_key,
            "rows_kept": merged["rows_kept"], "rows_restored": merged["rows_restored"],
            "rows_only_in_kept": merged["only_in_kept"], "rows_only_in_restored": merged["only_in_restored"],
            "keys": list(kept_labels), "keys_truncated": merged["only_in_kept"] > sample,
            "keys_only_in_restored": list(restored_labels),
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
