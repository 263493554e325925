"""The data-loss sort-merge of two primary-key streams, on plain lists."""

import pytest

from ansible_collections.governed.rollback.plugins.module_utils import _keymerge as km


def keys(*values):
    """Key tuples as the cursors yield them."""
    return [value if isinstance(value, tuple) else (value,) for value in values]


def labels(merged, side="kept"):
    """The sampled keys as PostgreSQL's row text would show them."""
    return ["(%s)" % ",".join(str(v) for v in key) for key in merged["keys_only_in_" + side]]


def test_rows_only_in_the_kept_side_are_counted_and_sampled_in_key_order():
    merged = km.merge_keys(keys(1, 2, 3, 7, 8), keys(1, 2, 3), sample=20)
    assert merged == {"only_in_kept": 2, "only_in_restored": 0, "in_both": 3, "rows_kept": 5, "rows_restored": 3,
                      "keys_only_in_kept": [(7,), (8,)], "keys_only_in_restored": []}


def test_both_sides_have_rows_of_their_own_interleaved():
    merged = km.merge_keys(keys(1, 3, 5, 6, 9), keys(2, 3, 4, 6, 10, 11))
    assert (merged["only_in_kept"], merged["only_in_restored"], merged["in_both"]) == (3, 4, 2)
    assert labels(merged) == ["(1)", "(5)", "(9)"]
    assert labels(merged, "restored") == ["(2)", "(4)", "(10)", "(11)"]
    assert (merged["rows_kept"], merged["rows_restored"]) == (5, 6)


@pytest.mark.parametrize("kept, restored, expected", [
    ([], [], (0, 0, 0)),
    (keys(1, 2), [], (2, 0, 0)),
    ([], keys(1, 2, 3), (0, 3, 0)),
    (keys(5), keys(5), (0, 0, 1)),
    (keys(1), keys(2), (1, 1, 0)),
    (keys(2), keys(1), (1, 1, 0)),
])
def test_empty_and_single_row_sides(kept, restored, expected):
    merged = km.merge_keys(kept, restored)
    assert (merged["only_in_kept"], merged["only_in_restored"], merged["in_both"]) == expected


def test_composite_keys_compare_column_by_column():
    kept = keys((1, "a"), (1, "b"), (2, "a"), (10, "z"))
    restored = keys((1, "a"), (2, "a"), (2, "b"))
    merged = km.merge_keys(kept, restored)
    assert merged["keys_only_in_kept"] == [(1, "b"), (10, "z")]
    assert merged["keys_only_in_restored"] == [(2, "b")]
    assert merged["in_both"] == 2


def test_text_keys_compare_in_code_point_order_as_collate_c_sorts_them():
    # COLLATE "C": upper case before lower case, and a multibyte character after every ASCII one
    kept = keys("B", "a", "b", "\u00e9")
    restored = keys("B", "b")
    assert labels(km.merge_keys(kept, restored)) == ["(a)", "(\u00e9)"]


def test_the_sample_is_bounded_and_the_counts_are_not():
    merged = km.merge_keys(keys(*range(1000)), keys(*range(0, 1000, 2)), sample=3)
    assert merged["only_in_kept"] == 500 and labels(merged) == ["(1)", "(3)", "(5)"]
    assert km.merge_keys(keys(1, 2), [], sample=0)["keys_only_in_kept"] == []


def test_streams_are_consumed_lazily_one_row_at_a_time():
    """A generator side is never materialised: the merge pulls one pair per step."""
    pulled = []

    def side(n):
        for i in range(n):
            pulled.append(i)
            yield (i,)

    gen = side(100000)
    merged = km.merge_keys(gen, iter(keys(*range(0, 100000, 10))), sample=1)
    assert merged["only_in_kept"] == 90000 and len(pulled) == 100000


@pytest.mark.parametrize("kept, restored", [
    (keys(1, 3, 2), keys(1)),          # out of order
    (keys(1), keys(1, 1)),             # a duplicate key
    (keys(1, 1), keys(1)),             # a duplicate key on a row both have
    (keys(5, 6), keys(1, 2, 2)),       # a duplicate past the other side's end
    (keys(("b",), ("a",)), []),        # a side sorted in another collation
])
def test_a_side_out_of_order_or_repeating_a_key_fails_instead_of_counting_wrong(kept, restored):
    with pytest.raises(km.KeyOrderError, match="not in strictly increasing order"):
        km.merge_keys(kept, restored)


def test_summary_lists_only_the_tables_that_lost_rows_in_the_report_shape():
    lost = km.merge_keys(keys(1, 2, 3), keys(1))
    entries = [
        km.table_entry("public.datasets", "id", lost, 20, labels(lost), []),
        km.table_entry("public.users", "id", km.merge_keys(keys(1), keys(1, 2)), 20),
        km.count_entry("public.audit_log", 10, 7),
        km.count_entry("public.events", 3, 3),
    ]
    out = km.summary(entries)
    assert out["tables"] == [
        {"table": "public.datasets", "primary_key": "id", "rows_only_in_kept": 2, "keys": ["(2)", "(3)"],
         "keys_truncated": False},
        {"table": "public.audit_log", "primary_key": None, "rows_only_in_kept": 3, "keys": [], "keys_truncated": False},
    ]
    assert out["rows_lost"] == 5 and out["rows_only_in_restored"] == 1
    assert out["tables_without_primary_key"] == ["public.audit_log", "public.events"]
    tables = ["public.datasets", "public.users", "public.audit_log", "public.events"]
    assert [e["table"] for e in out["comparison"]] == tables


def test_keys_truncated_when_more_rows_than_the_sample():
    merged = km.merge_keys(keys(1, 2, 3), [], sample=2)
    entry = km.table_entry("t", "id", merged, 2, labels(merged))
    assert entry["keys"] == ["(1)", "(2)"] and entry["keys_truncated"] is True
    assert km.count_entry("t", 0, 4)["rows_only_in_restored"] == 4
