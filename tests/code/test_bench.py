"""The benchmarks' own arithmetic: how an on/off cost is estimated and judged against its target,
and the bodies they post."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pandas as pd
import pytest

BENCH = str(Path(__file__).resolve().parents[2] / "bench")
sys.path.insert(0, BENCH)  # the scripts import each other by name; only while they load
try:
    import instructions  # bench/instructions.py
    import run  # bench/run.py
    import serving  # bench/serving.py
finally:
    sys.path.remove(BENCH)


def test_paired_ratios_weigh_a_gain_and_the_same_loss_alike():
    estimate = serving.paired([[1.1, 1 / 1.1] * 10])
    assert estimate["mean"] == pytest.approx(1.0)
    assert estimate["low"] < 1.0 < estimate["high"]
    assert estimate["low"] * estimate["high"] == pytest.approx(1.0)  # symmetric in the logs


def test_the_interval_is_over_pairs_of_servers_when_there_are_several():
    """Rounds that agree within each pair of servers do not make pairs that disagree look certain."""
    groups = [[0.95] * 6, [1.0] * 6, [0.97] * 6]
    over_pairs, over_rounds = serving.paired(groups), serving.paired([[r for group in groups for r in group]])
    assert over_pairs["mean"] == pytest.approx(over_rounds["mean"])
    assert over_pairs["high"] - over_pairs["low"] > 2 * (over_rounds["high"] - over_rounds["low"])
    assert over_pairs["low"] < 0.95 and over_pairs["high"] > 1.0


def test_one_round_gives_no_interval():
    one = serving.paired([[0.95]])
    assert one["mean"] == pytest.approx(0.95) and one["low"] == 0.0 and math.isinf(one["high"])


def _stack_bytes(env: dict[str, str]) -> int:
    return sum(len(f"{k}={v}".encode()) + 1 for k, v in env.items())


@pytest.mark.parametrize(
    "envs",
    [
        {"on": {"A": "1"}, "off": {"A": "1", "MUSHROOM_METRICS": "off"}},
        {
            "on": {"A": "1", "MUSHROOM_INFERENCE_LOG": "/tmp/a/long/path"},
            "off": {"A": "1", "MUSHROOM_INFERENCE_LOG": "off"},
        },
        {"a": {"A": "1"}, "b": {"A": "1"}},
        {"a": {"A": "é"}, "b": {"A": "e", "B": "", "C": "xyz"}, "c": {}},
    ],
)
def test_servers_get_environments_of_one_count_and_size_that_keep_every_setting(envs):
    """With address-space randomisation off, a larger environment moves the stack: padded alike."""
    padded = serving.same_size(envs)
    assert padded.keys() == envs.keys()
    assert len({len(env) for env in padded.values()}) == 1
    assert len({_stack_bytes(env) for env in padded.values()}) == 1
    for name, env in envs.items():
        assert padded[name].items() >= env.items()  # every setting kept as it was
        assert all(k.startswith(serving.PAD_PREFIX) for k in padded[name].keys() - env.keys())


def _case(rps_on: list[float], rps_off: list[float]) -> dict:
    """An ``on_off`` case of wrk runs with only the figures ``merged`` reads."""

    def runs(rps: list[float]) -> list[dict]:
        return [
            {"rps": r, "p50_ms": 1.0, "p99_ms": 2.0, "non2xx": 0, "socket_errors": 0, "requests": 10}
            for r in rps
        ]

    return {
        "batch": 1,
        "runs": {"on": runs(rps_on), "off": runs(rps_off)},
        "round_ratios": [a / b for a, b in zip(rps_on, rps_off, strict=True)],
        "load_average": {"min": 0.5, "max": 1.0},
    }


def test_cases_of_several_pairs_merge_into_one_estimate():
    merged = serving.merged([_case([90, 95], [100, 100]), _case([99, 101], [100, 100])], ("on", "off"))
    assert merged["pairs"] == 2 and merged["on"]["requests"] == 40
    assert merged["on"]["rps"] == pytest.approx(97.0)  # the median of every round's run
    assert merged["pair_ratios"] == pytest.approx([math.sqrt(0.90 * 0.95), math.sqrt(0.99 * 1.01)])
    assert merged["paired"] == serving.paired([[0.90, 0.95], [0.99, 1.01]])


@pytest.mark.parametrize(
    ("mean", "low", "words"),
    [
        (0.99, 0.96, "1.0% (met, the whole 95% interval within it)"),
        (0.97, 0.93, "3.0% (met by the estimate; the interval reaches 7.0%)"),
        (0.94, 0.90, "6.0% (NOT met)"),
    ],
)
def test_a_cost_is_judged_by_its_estimate_and_by_its_interval(mean, low, words):
    case = {"batch": 1000, "paired": {"mean": mean, "low": low, "high": 1.0}}
    line = run.verdict([case], 0.05, "What it costs")
    assert line == f"- What it costs (target at most 5% of requests/s): 1,000-row batches {words}."


@pytest.mark.parametrize("params", [None, {"explain": True}])
@pytest.mark.parametrize("batch", [1, 3])
def test_varied_bodies_carry_every_row_once_in_order(tmp_path, batch, params):
    """The log's and explain's benchmarks post distinct rows: a body per ``batch`` rows, all named by the list."""
    rows = pd.DataFrame({"stem-height": [float(i) for i in range(7)], "season": [0.5] * 7})
    listed = serving.write_bodies(rows, batch, tmp_path / "bodies", params)
    assert listed.suffix == ".list"  # what serving.wrk sends in turn (BODY_LIST)
    sent = []
    for path in listed.read_text().splitlines():
        body = json.loads(Path(path).read_text())
        assert body.get("params") == params
        sent += body["dataframe_records"] if batch == 1 else body["dataframe_split"]["data"]
    heights = [row["stem-height"] for row in sent] if batch == 1 else [row[0] for row in sent]
    assert heights == [float(i) for i in range(7 // batch * batch)]  # a last, partial body is left out


def test_callgrind_counts_are_read_from_the_dump_and_the_annotation():
    dump = "events: Ir\nfn=(1) main\n0 5\nsummary: 1234567\ntotals: 1234567\n"
    annotated = """--------------------------------------------------------------------------------
Ir
--------------------------------------------------------------------------------
1,234,567 (100.0%)  PROGRAM TOTALS

--------------------------------------------------------------------------------
Ir                   file:function
--------------------------------------------------------------------------------
53,505,943 ( 3.41%)  /build/Python-3.11.7/Modules/gcmodule.c:gc_collect_main [/lib/libpython3.11.so.1.0]
   128,772 ( 0.01%)  /build/Python-3.11.7/./Include/object.h:gc_collect_main
 9,999,999 ( 1.00%)  /build/Python-3.11.7/Modules/gcmodule.c:gc_collect_main_other [/lib/libpython3.11.so.1.0]
"""
    assert instructions.totals(dump) == 1234567
    assert instructions.inclusive(annotated, "gc_collect_main") == 53505943
    assert instructions.inclusive(annotated, "list_traverse") == 0
    with pytest.raises(ValueError, match="no 'totals:' line"):
        instructions.totals("events: Ir\n")


@pytest.mark.parametrize(
    ("results", "says"),
    [
        ({"layouts": serving.LAYOUTS}, "laid out at random as users' servers are"),
        ({}, "address-space randomisation off"),  # figures saved before the layouts were recorded
    ],
)
def test_the_method_text_names_the_layouts_the_figures_were_measured_with(results, says):
    assert says in run.paired_text(results)
