"""The pieces of an in-place switch, in process: the slot's drain, the version header, the golden
rows and the compatibility check (tests/serving/test_switch.py runs them together for real)."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time

import pandas as pd
import pytest

from router_model import features as F
from router_model import hot_swap, server_guard
from router_model.router import GoldenAnswerError, check_golden, golden_answers


class _Model:
    class metadata:  # noqa: N801 - what Answering reads from a PyFuncModel
        @staticmethod
        def get_input_schema():
            return None


def test_a_swap_waits_for_the_requests_on_the_old_model_and_the_event_loop_never_waits():
    slot = server_guard.ModelSlot()
    old = slot.enter(wait=True)
    assert old.model is None  # MLflow's own model until a swap
    new = server_guard.Answering(_Model(), "7")
    swapped = threading.Thread(target=slot.swap, args=(new, 30.0))
    swapped.start()
    time.sleep(0.2)
    assert swapped.is_alive(), "swapped while a request still ran on the old model"
    assert slot.enter(wait=False) is None, "the fast path must decline, not block the event loop"
    taken: list[server_guard.Answering] = []
    waiting = threading.Thread(target=lambda: taken.append(slot.enter(wait=True)))
    waiting.start()
    time.sleep(0.2)
    assert taken == [], "a new request took the old model during the drain"
    slot.leave()
    swapped.join(timeout=10)
    waiting.join(timeout=10)
    assert taken == [new] and slot.current is new and slot.version() == "7"


def test_a_swap_goes_ahead_after_the_drain_limit():
    slot = server_guard.ModelSlot()
    slot.enter(wait=True)  # never leaves
    assert slot.swap(server_guard.Answering(_Model(), "8"), drain_seconds=0.1) is False
    assert slot.version() == "8"


def post_with_version_header(app):
    """POST /invocations to ``app`` (a FastAPI app) behind the version-header middleware, in process."""
    import httpx

    app.add_middleware(server_guard.VersionHeader)

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://server") as client:
            return await client.post("/invocations")

    return asyncio.run(call())


@pytest.mark.parametrize(
    ("answered", "served_env", "expected"),
    [("5", "4", "5"), (None, "4", "4"), (None, None, None)],
    ids=["the-answering-version", "refusal-before-any-model", "unknown-version-no-header"],
)
def test_the_version_header(monkeypatch, answered, served_env, expected):
    from fastapi import FastAPI, Response

    if served_env is None:
        monkeypatch.delenv("MUSHROOM_SERVED_VERSION", raising=False)
    else:
        monkeypatch.setenv("MUSHROOM_SERVED_VERSION", served_env)
    app = FastAPI()

    @app.post("/invocations")
    async def invocations() -> Response:
        def work() -> None:  # MLflow's handler answers in a worker thread
            if answered is not None:
                server_guard.Answering(_Model(), answered).answered()

        await asyncio.to_thread(work)
        return Response("{}", media_type="application/json")

    response = post_with_version_header(app)
    assert response.status_code == 200
    assert response.headers.get(server_guard.VERSION_HEADER) == expected


def test_golden_answers_check_what_was_recorded(router):
    rows = pd.DataFrame(F.golden_rows())
    recorded = golden_answers(router)
    assert set(recorded["model"]) == set(F.ROUTES)
    check_golden(router.predict(rows), recorded)
    check_golden(router.predict(rows), None)  # an older version: validity only
    moved = {**recorded, "poisonous_probability": [p + 1e-6 for p in recorded["poisonous_probability"]]}
    with pytest.raises(GoldenAnswerError, match=r"golden row 0 \(naive_bayes\): poisonous_probability .*"):
        check_golden(router.predict(rows), moved)
    rerouted = {**recorded, "model": [F.LOGISTIC_REGRESSION, *recorded["model"][1:]]}
    with pytest.raises(GoldenAnswerError, match=r"golden row 0 took route 'naive_bayes'"):
        check_golden(router.predict(rows), rerouted)
    broken = router.predict(rows)
    broken.loc[1, "poisonous_probability"] = 1.5
    with pytest.raises(GoldenAnswerError, match=r"row 1: poisonous_probability 1\.5 is not in \[0, 1\]"):
        check_golden(broken, recorded)


@pytest.fixture(scope="module")
def model_dir(registered, tmp_path_factory):
    import mlflow

    return mlflow.artifacts.download_artifacts(
        registered["model_uri"], dst_path=str(tmp_path_factory.mktemp("model"))
    )


def _edit_mlmodel(model, old, new):
    text = (model / "MLmodel").read_text()
    assert old in text
    (model / "MLmodel").write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda m: None, None),
        (
            lambda m: (m / "requirements.txt").write_text("scikit-learn==0.1\n"),
            "its requirements.txt differs",
        ),
        (lambda m: _edit_mlmodel(m, "mlflow_version: ", "mlflow_version: 0."), "mlflow_version '0."),
        (
            lambda m: _edit_mlmodel(m, "python_version: ", "python_version: 2."),
            "python_function python_version",
        ),
        (lambda m: (m / "code" / "router_model" / "extra.py").write_text("x = 1\n"), "its code differs"),
    ],
    ids=["same", "requirements", "mlflow-version", "python-version", "code"],
)
def test_only_a_version_that_runs_in_the_running_process_is_switched_in_place(
    model_dir, tmp_path, edit, reason
):
    from pathlib import Path

    new = tmp_path / "new"
    shutil.copytree(model_dir, new)
    edit(new)
    found = hot_swap.incompatibility(Path(model_dir), new)
    if reason is None:
        assert found is None
    else:
        assert found is not None and reason in found, found


def test_the_control_file_and_acknowledgements(tmp_path):
    control = tmp_path / "switch.json"
    hot_swap.write_control(control, 3, 2, tmp_path / "model", 1)
    assert hot_swap.read_json(control) == {
        "seq": 3,
        "version": "2",
        "model_dir": str(tmp_path / "model"),
        "switches": 1,
    }
    watcher = hot_swap.Watcher(control, "2")
    watcher.check()  # already serving version 2: acknowledged without loading anything
    assert hot_swap.read_acks(control, 3) == {
        os.getpid(): {
            "pid": os.getpid(),
            "seq": 3,
            "version": "2",
            "ok": True,
            "reason": "already serving it",
        }
    }
    hot_swap.write_control(control, 4, 5, tmp_path / "missing", 2)
    watcher.check()
    ack = hot_swap.read_acks(control, 4)
    (only,) = ack.values()
    assert only["ok"] is False and only["version"] == "5" and watcher.version == "2"
    assert hot_swap.read_acks(control, 3) == {}


def test_an_answer_from_the_boot_model_names_the_boot_version_even_when_a_swap_lands_before_it_is_sent(
    monkeypatch,
):
    """Old code named the version serving when the header was written, not the one that answered."""
    from fastapi import FastAPI, Response

    slot = server_guard.ModelSlot()
    slot.started("1")
    monkeypatch.setattr(server_guard, "SLOT", slot)
    app = FastAPI()

    @app.post("/invocations")
    async def invocations() -> Response:
        served = slot.enter(wait=False)  # the boot model, as the fast path takes it
        slot.leave()
        served.answered()
        slot.swap(server_guard.Answering(_Model(), "2"))  # lands before the answer is sent
        return Response("{}", media_type="application/json")

    assert post_with_version_header(app).headers[server_guard.VERSION_HEADER] == "1"
    assert slot.version() == "2"
