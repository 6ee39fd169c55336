"""Two retrains at once: promotion is a compare-and-set on ``champion``, so they cannot both win.

``pipeline.apply_decision`` reads the champion again right before moving it; a candidate evaluated
against a champion that has moved since becomes ``challenger`` with ``gate=superseded`` and a
reason naming the version to compare against. Covered here: the interleaving that matters (both
evaluated against the same champion, applied one after the other), a table of champion moves,
idempotent re-application, two real ``mushroom-router train`` processes racing on one store, and
registry reads that fail loudly instead of answering "no champion" when the store is unreachable.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from mlflow.exceptions import MlflowException
from support import free_port

from router_model import pipeline, registry, settings

STALE = re.compile(
    r"^champion moved from version (\d+) to version (\d+) during this retrain; "
    r"re-run to compare against version \2 \(the gate had said: version \d+ beats or matches"
)


def alias(name: str) -> int | None:
    found = registry.alias_version(name)
    return int(found.version) if found is not None else None


def version_tags() -> dict[int, dict[str, str]]:
    """``{version: gate tags}`` of every registered version."""
    found = registry.client().search_model_versions(f"name='{settings.MODEL_NAME}'")
    keys = ("gate", "gate_reason", "gate_champion_version")
    return {int(v.version): {k: v.tags[k] for k in keys if k in v.tags} for v in found}


def state() -> dict[str, Any]:
    return {"champion": alias("champion"), "challenger": alias("challenger"), "tags": version_tags()}


def candidate(path: str) -> pipeline.GateDecision:
    """Register a version trained on ``path`` and take the gate's decision against the champion."""
    registered = pipeline.train_and_register(path)
    return pipeline.decide(pipeline.evaluate_against_champion(registered["version"], path))


def copy_version(of: int) -> int:
    """Register another version with the same files as ``of`` (no training); returns its number."""
    c = registry.client()
    source = c.get_model_version(settings.MODEL_NAME, str(of))
    return int(c.create_model_version(settings.MODEL_NAME, source.source, source.run_id).version)


def assert_consistent(final: dict[str, Any]) -> None:
    """The registry state any interleaving of retrains must end in.

    Promotions form one chain from "no champion" to the current champion (no two versions promoted
    over the same champion), and every version off that chain was rejected or superseded.
    """
    tags = final["tags"]
    promoted = {v: t["gate_champion_version"] for v, t in tags.items() if t.get("gate") == "promoted"}
    over = list(promoted.values())
    assert len(over) == len(set(over)), f"two versions were promoted over the same champion: {tags}"
    chain, previous = [], "none"
    successor = {replaced: version for version, replaced in promoted.items()}
    while previous in successor:
        chain.append(successor[previous])
        previous = str(successor[previous])
    assert chain and chain[-1] == final["champion"], f"champion {final['champion']} ended no chain: {tags}"
    assert sorted(chain) == sorted(promoted), f"a promotion is not on the chain {chain}: {tags}"
    for version, t in tags.items():
        if version not in promoted:
            assert t.get("gate") in ("rejected", "superseded"), (version, t)


# --- the interleaving the compare-and-set exists for ----------------------------------------------


def test_second_promotion_over_the_same_champion_becomes_challenger_and_says_why(
    small_csv: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert pipeline.retrain(path=small_csv)["alias"] == "champion"
    a = candidate(small_csv)
    b = candidate(small_csv)
    assert (a.promote, a.version, a.champion_version) == (True, 2, 1)
    assert (b.promote, b.version, b.champion_version) == (True, 3, 1)

    assert pipeline.apply_decision(a).alias == "champion"
    with caplog.at_level("WARNING", logger="router_model.pipeline"):
        assert pipeline.apply_decision(b.as_dict()).alias == "challenger"

    after = state()
    assert (after["champion"], after["challenger"]) == (2, 3)
    assert after["tags"][2] == {"gate": "promoted", "gate_reason": a.reason, "gate_champion_version": "1"}
    assert after["tags"][3]["gate"] == "superseded"
    assert after["tags"][3]["gate_champion_version"] == "1"
    assert STALE.match(after["tags"][3]["gate_reason"]).groups() == ("1", "2")
    assert b.reason in after["tags"][3]["gate_reason"]
    assert "Version 3 does not take champion: champion moved from version 1 to version 2" in caplog.text
    assert_consistent(after)

    # Re-applying either decision (a DAG task retried or cleared) changes nothing.
    for decision, expected in (
        (a, "champion"),
        (b, "challenger"),
        (a.as_dict(), "champion"),
        (b, "challenger"),
    ):
        assert pipeline.apply_decision(decision).alias == expected
        assert state() == after

    # A re-run compares against the new champion and applies normally.
    again = pipeline.retrain(path=small_csv, force=True)
    assert (again["version"], again["alias"], again["decision"]["champion_version"]) == (4, "champion", 2)
    assert_consistent(state())


def test_retrain_reports_the_decision_that_took_effect(small_csv: str) -> None:
    pipeline.retrain(path=small_csv)
    stale = candidate(small_csv)
    winner = pipeline.retrain(path=small_csv, force=True)  # finishes while `stale` waits to be applied
    assert winner["alias"] == "champion"

    applied = pipeline.apply_decision(stale)
    alias_name = applied.alias

    assert alias_name == "challenger"
    assert applied == pipeline.GateDecision(False, applied.reason, stale.version, 1)
    assert STALE.match(applied.reason).groups() == ("1", str(winner["version"]))
    assert alias("champion") == winner["version"]


# --- what the re-read decides, one case per row ---------------------------------------------------

#: (champion when the candidate was evaluated, champion when the decision is applied, promote?,
#:  alias the candidate gets, champion afterwards, gate tag). Versions 1-3 exist; 4 is the candidate.
CASES = [
    pytest.param(None, None, True, "champion", 4, "promoted", id="first-version"),
    pytest.param(None, 1, True, "challenger", 1, "superseded", id="first-version-but-one-appeared"),
    pytest.param(1, 1, True, "champion", 4, "promoted", id="champion-unchanged"),
    pytest.param(1, 2, True, "challenger", 2, "superseded", id="champion-moved"),
    pytest.param(1, None, True, "challenger", None, "superseded", id="champion-removed"),
    pytest.param(1, 4, True, "champion", 4, "promoted", id="already-champion"),
    pytest.param(1, 1, False, "challenger", 1, "rejected", id="rejected-champion-unchanged"),
    pytest.param(1, 3, False, "challenger", 3, "rejected", id="rejected-champion-moved"),
]


@pytest.mark.parametrize(("evaluated", "current", "promote", "expected", "champion_after", "gate"), CASES)
def test_apply_decision_rereads_the_champion(
    small_csv: str,
    evaluated: int | None,
    current: int | None,
    promote: bool,
    expected: str,
    champion_after: int | None,
    gate: str,
) -> None:
    first = pipeline.train_and_register(small_csv)["version"]
    assert [copy_version(first) for _ in range(3)] == [2, 3, 4]
    if current is not None:
        registry.set_alias(settings.CHAMPION, current)
    decision = pipeline.GateDecision(promote, "the gate's reason", 4, evaluated)

    assert pipeline.apply_decision(decision).alias == expected
    assert pipeline.apply_decision(decision).alias == expected  # idempotent

    assert alias("champion") == champion_after
    assert alias("challenger") == (4 if expected == "challenger" else None)
    tags = version_tags()[4]
    assert tags["gate"] == gate
    assert tags["gate_champion_version"] == ("none" if evaluated is None else str(evaluated))
    if gate == "superseded":
        name = {None: "no version"} | {v: f"version {v}" for v in (1, 2, 3, 4)}
        assert tags["gate_reason"].startswith(
            f"champion moved from {name[evaluated]} to {name[current]} during this retrain; "
        )
    else:
        assert tags["gate_reason"] == "the gate's reason"


def test_promotion_takes_challenger_off_the_new_champion(small_csv: str) -> None:
    first = pipeline.train_and_register(small_csv)["version"]
    second = copy_version(first)
    registry.set_alias(settings.CHAMPION, first)
    registry.set_alias(settings.CHALLENGER, second)

    assert (
        pipeline.apply_decision(pipeline.GateDecision(True, "better now", second, first)).alias == "champion"
    )

    assert (alias("champion"), alias("challenger")) == (second, None)


def test_a_promotion_waits_for_another_processs_compare_and_set(small_csv: str) -> None:
    """The read-compare-move runs under the promotion lock: a second promotion waits, then sees the move."""
    assert pipeline.retrain(path=small_csv)["alias"] == "champion"
    a, b = candidate(small_csv), candidate(small_csv)
    assert (a.champion_version, b.champion_version) == (1, 1)

    with ThreadPoolExecutor(max_workers=1) as pool, pipeline.promotion_lock():
        # Another process's critical section: b's promotion must not read the champion meanwhile.
        waiting = pool.submit(pipeline.apply_decision, b)
        time.sleep(1.0)
        assert not waiting.done(), "apply_decision did not wait for the promotion lock"
        assert alias("champion") == 1
        registry.set_alias(settings.CHAMPION, a.version)
    assert waiting.result(timeout=60).alias == "challenger"
    assert (alias("champion"), alias("challenger")) == (a.version, b.version)
    assert version_tags()[b.version]["gate"] == "superseded"


# --- a real race -----------------------------------------------------------------------------------


def test_two_cli_retrains_at_once_end_consistent(run_cli: Any, small_csv: str, fresh_store: Path) -> None:
    """Two ``mushroom-router train`` processes on one store, after a champion exists.

    Which interleaving happens is up to the scheduler: both evaluated against version 1 (one is
    promoted, the other superseded) or one after the other (a chain 1 -> x -> y). Either way at most
    one version is promoted over each champion and the aliases agree with the tags.
    """
    assert pipeline.retrain(path=small_csv)["alias"] == "champion"
    env = {"MUSHROOM_HOME": str(fresh_store), "MLFLOW_TRACKING_URI": f"sqlite:///{fresh_store / 'mlflow.db'}"}

    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(lambda _: run_cli("train", "--data", small_csv, "--force", env=env), range(2)))

    for done in runs:
        assert done.returncode == 0, done.stderr[-3000:]
    said = sorted(re.search(r"^Alias: (\w+) - ", done.stdout, re.MULTILINE).group(1) for done in runs)
    final = state()
    assert sorted(final["tags"]) == [1, 2, 3]
    assert final["champion"] in (2, 3)
    assert_consistent(final)
    if said == ["challenger", "champion"]:  # both were evaluated against version 1
        loser = final["challenger"]
        assert {final["champion"], loser} == {2, 3}
        assert final["tags"][loser]["gate"] == "superseded"
        assert STALE.match(final["tags"][loser]["gate_reason"]).groups() == ("1", str(final["champion"]))
    else:  # one after the other: both promoted, the later one over the earlier
        assert said == ["champion", "champion"]
        assert final["challenger"] is None
        assert {t["gate_champion_version"] for t in final["tags"].values()} == {
            "none",
            "1",
            str(5 - final["champion"]),
        }


# --- reads the compare-and-set relies on -----------------------------------------------------------


@pytest.mark.parametrize(
    "read",
    [
        pytest.param(lambda: registry.alias_version(settings.CHAMPION), id="alias_version"),
        pytest.param(lambda: registry.find_version("dag/run-1"), id="find_version"),
        pytest.param(lambda: registry.delete_alias(settings.CHALLENGER), id="delete_alias"),
    ],
)
def test_an_unreachable_registry_is_an_error_not_an_empty_answer(
    read: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read as "no champion", an outage would let the gate promote without comparing."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with pytest.raises(
        MlflowException, match=r"API request to http://127\.0\.0\.1:\d+/api/2\.0/mlflow/.* failed"
    ):
        read()


def test_missing_model_or_alias_is_an_empty_answer(fresh_store: Path, small_csv: str) -> None:
    assert registry.alias_version(settings.CHAMPION) is None  # no model yet
    assert registry.find_version("dag/run-1") is None
    registry.delete_alias(settings.CHALLENGER)
    pipeline.train_and_register(small_csv)
    assert registry.alias_version(settings.CHAMPION) is None  # model, no alias
    registry.delete_alias(settings.CHALLENGER)


# --- between machines: no shared disk, only the registry ------------------------------------------

HOLD_THE_LOCK = """
import sys, time
from pathlib import Path
from router_model import pipeline

held, release = Path(sys.argv[1]), Path(sys.argv[2])
with pipeline.promotion_lock():
    held.touch()
    while not release.exists():
        time.sleep(0.05)
"""


def test_the_promotion_lock_holds_between_machines_that_share_no_disk(
    small_csv: str, fresh_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Another "machine" (own data folder, so no common file lock) holds the lock: a promotion here waits.

    With only a file lock in the data folder, the two would not see each other: this promotion
    would read and move ``champion`` while the other process is in its critical section.
    """
    assert pipeline.retrain(path=small_csv)["alias"] == "champion"
    a, b = candidate(small_csv), candidate(small_csv)
    signals = tmp_path_factory.mktemp("signals")
    held, release = signals / "held", signals / "release"
    other = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_LOCK, str(held), str(release)],
        env={**os.environ, "MUSHROOM_DATA_DIR": str(tmp_path_factory.mktemp("other-machine-data"))},
    )
    try:
        deadline = time.monotonic() + 120
        while not held.exists():
            assert other.poll() is None, "the lock-holding process died"
            assert time.monotonic() < deadline, "the other process never took the lock"
            time.sleep(0.05)
        assert registry._lock_holder(settings.PROMOTION_LOCK) is not None
        with ThreadPoolExecutor(max_workers=1) as pool:
            waiting = pool.submit(pipeline.apply_decision, b)
            time.sleep(1.5)
            assert not waiting.done(), "apply_decision did not wait for the other machine's lock"
            registry.set_alias(settings.CHAMPION, a.version)  # what the other machine's promotion does
            release.touch()
            assert waiting.result(timeout=120).alias == "challenger"
    finally:
        release.touch()
        assert other.wait(timeout=60) == 0
    assert (alias("champion"), alias("challenger")) == (a.version, b.version)
    assert version_tags()[b.version]["gate"] == "superseded"
    assert registry._lock_holder(settings.PROMOTION_LOCK) is None, "the lock was not released"


def plant_lock(expires_in: float, owner: str = "gone-host:123:abcd") -> None:
    """A lock left in the registry by a process that is not running (its lease runs ``expires_in`` s)."""
    registry.client().create_registered_model(
        settings.PROMOTION_LOCK,
        tags={"owner": owner, "expires_at": f"{time.time() + expires_in:.3f}"},
    )


def test_an_abandoned_lock_is_taken_over_once_its_lease_has_run_out(fresh_store: Path) -> None:
    plant_lock(expires_in=-1)
    with registry.registry_lock(wait_seconds=5):
        holder = registry._lock_holder(settings.PROMOTION_LOCK)
        assert holder is not None and holder["owner"] != "gone-host:123:abcd"
    assert registry._lock_holder(settings.PROMOTION_LOCK) is None


def test_a_live_lock_makes_the_promotion_wait_then_give_up_with_a_retryable_error(fresh_store: Path) -> None:
    plant_lock(expires_in=600)
    with (
        pytest.raises(registry.LockTimeoutError, match=r"is held by gone-host:123:abcd for more than 1s"),
        registry.registry_lock(wait_seconds=1),
    ):
        pytest.fail("the lock was taken while another process held it")
    assert registry.LockTimeoutError.transient
    assert registry._lock_holder(settings.PROMOTION_LOCK)["owner"] == "gone-host:123:abcd"  # not ours


def test_the_lock_is_released_when_the_promotion_fails(fresh_store: Path) -> None:
    seen: list[dict[str, str] | None] = []

    def promote_and_fail() -> None:
        with pipeline.promotion_lock():
            seen.append(registry._lock_holder(settings.PROMOTION_LOCK))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        promote_and_fail()
    assert seen and seen[0] is not None
    assert registry._lock_holder(settings.PROMOTION_LOCK) is None
