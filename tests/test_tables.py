"""interp.tables and interp.experiments.common: cells round-trip, censored medians, grouping."""

from __future__ import annotations

import math

from interp import tables
from interp.experiments import common


def test_cells_round_trip_with_their_types(tmp_path):
    rows = [{"name": "seed1", "n": 3, "x": 0.1 + 0.2, "flag": True, "none": None, "nan": math.nan, "list": "9 33"},
            {"name": "seed2", "n": -1, "x": 1e-30, "flag": False, "none": None, "nan": 1.5, "list": "9"}]
    tables.write_csv(tmp_path / "t.csv", rows)
    back = tables.read_csv(tmp_path / "t.csv", text={"list"})
    assert back[0] == {**rows[0], "nan": None}  # repr keeps every float bit; NaN is written empty
    assert back[1] == rows[1] and type(back[0]["n"]) is int and back[0]["flag"] is True
    assert tables.read_csv(tmp_path / "t.csv", raw=True)[0]["none"] == ""
    assert tables.read_csv(tmp_path / "missing.csv") == []
    assert tables.to_csv(rows, ["x"], digits=3) == "x\n0.3\n1e-30\n"


def test_censored_median_counts_never_as_later():
    assert common.censored_median([100, None, 300]) == 300  # None sorts last: [100, 300, never]
    assert common.censored_median([100, None, None]) is None  # the median is beyond the budget
    assert common.censored_median([100, 200, None, None]) is None  # the middle pair is (200, never)
    assert common.censored_median([100, 200, 400, None]) == 300
    assert common.censored_median([]) is None
    assert common.spread([None, 5, 1, math.nan]) == (3, 1, 5)


def test_group_and_first_step():
    rows = [{"k": 2, "v": 1}, {"k": 1, "v": 2}, {"k": 2, "v": 3}]
    assert common.group(rows, "k") == {1: [rows[1]], 2: [rows[0], rows[2]]}
    metrics = [{"step": 0, "a": 0.1}, {"step": 50, "a": 0.95}, {"step": 100, "a": 0.99}]
    assert common.first_step(metrics, "a", 0.99) == 100 and common.first_step(metrics, "a", 0.95) == 50
    assert common.first_step(metrics, "a", 1.0) is None


def test_numbers_for_readers():
    assert [tables.sig(x) for x in (23.0, 2.5, 0.0612, 967.4, 1174.2, None)] == ["23.0", "2.50", "0.0612", "967", "1174", "–"]
    assert [tables.fmt(x) for x in (12500, 0.5, 2000.0, True)] == ["12 500", "0.5", "2 000", "yes"]
    assert tables.duration(7169) == "1 h 59 min" and tables.duration(794) == "13 min 14 s" and tables.duration(52) == "52 s"
