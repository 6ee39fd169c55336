"""router_model.server_guard against MLflow's own scoring-server functions, in process.

The fuzzer (test_fuzz.py) checks the same behaviour over HTTP on a real ``mlflow models serve``;
these tests pin each rule on its own and prove the fast serialiser writes MLflow's JSON values
(its exact bytes, where it does not use orjson).
"""

from __future__ import annotations

import asyncio
import gc
import io
import itertools
import json
import threading
import types

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import scoring_server

from router_model import features as F
from router_model import server_guard

JSON = "application/json"
CSV = "text/csv"
PARQUET = "application/vnd.apache.parquet"
NB, LR = F.example_rows()


@pytest.fixture(scope="module")
def pyfunc_model(registered):
    """The registered router as MLflow's scoring server holds it."""
    return mlflow.pyfunc.load_model(registered["model_uri"])


@pytest.fixture(scope="module")
def original():
    """MLflow's unpatched ``invocations`` (the guard under test wraps it, the module stays as is)."""
    assert not getattr(scoring_server.invocations, server_guard._GUARDED, False)
    return scoring_server.invocations


@pytest.fixture
def guarded(original, pyfunc_model):
    """Call the guard around MLflow's ``invocations`` with a 64 KiB limit."""
    wrapped = server_guard.guard(original, scoring_server.InvocationsResponse, 64 * 1024)

    def call(body: bytes | str, content_type: str | None = JSON):
        data = body.encode() if isinstance(body, str) else body
        return wrapped(data, content_type, pyfunc_model, pyfunc_model.metadata.get_input_schema())

    return call


def respond(guarded, body, content_type) -> tuple[int, str, dict]:
    """Status, media type and JSON answer, as the server's handler would send them."""
    try:
        result = guarded(body, content_type)
    except MlflowException as err:  # what MLflow's _async_catch_mlflow_exception answers
        return err.get_http_status_code(), JSON, json.loads(err.serialize_as_json())
    return result.status, result.mimetype, json.loads(result.response)


def mlflow_bytes(raw) -> str:
    out = io.StringIO()
    scoring_server.predictions_to_json(raw, out)
    return out.getvalue()


def guard_bytes(raw) -> str:
    out = io.StringIO()
    server_guard.predictions_to_json(raw, out)
    return out.getvalue()


def _router_output(pyfunc_model, on_error=False):
    rows = F.example_rows() * 300
    if not on_error:
        return pyfunc_model.predict(pd.DataFrame(rows))
    bad = pd.DataFrame(rows + [{"cap-shape": 99}])
    return pyfunc_model.unwrap_python_model().router.predict(bad, on_error="mark")


def _parsed(text: str):
    """JSON value with NaN made comparable (NaN != NaN)."""
    return json.loads(text.replace("NaN", '"NaN"'))


#: Router-like answers (orjson path: the same JSON value) and anything else (MLflow's bytes).
ANSWERS = [
    pytest.param(lambda m: _router_output(m), "value", id="router-output"),
    pytest.param(lambda m: _router_output(m).iloc[:0], "value", id="router-output-empty"),
    pytest.param(
        lambda m: _router_output(m, on_error=True), "bytes", id="router-output-with-error-rows-and-nan"
    ),
    pytest.param(lambda m: np.array([0, 1, 1]), "bytes", id="ndarray"),
    pytest.param(lambda m: pd.Series([0.25, np.nan, 1.0]), "bytes", id="series"),
    pytest.param(lambda m: [{"a": np.int64(3), "b": "x"}], "bytes", id="list-of-dicts"),
    pytest.param(lambda m: pd.DataFrame({0: [1, 2], "a": [np.inf, -0.0]}), "bytes", id="non-string-labels"),
    pytest.param(lambda m: pd.DataFrame({"a": [1.0, np.inf]}), "bytes", id="infinity"),
    pytest.param(
        lambda m: pd.DataFrame({"t": pd.to_datetime(["2026-11-26"]), "o": [None]}), "bytes", id="objects"
    ),
    pytest.param(lambda m: pd.DataFrame({"i": [1, 2**62], "b": [True, False]}), "value", id="ints-and-bools"),
]


@pytest.mark.parametrize(("make", "same"), ANSWERS)
def test_fast_serialiser_writes_what_mlflow_writes(pyfunc_model, make, same):
    raw = make(pyfunc_model)
    ours, theirs = guard_bytes(raw), mlflow_bytes(raw)
    if same == "bytes":
        assert ours == theirs
    else:
        assert ours != theirs, "the orjson path was not taken"
        assert _parsed(ours) == _parsed(theirs)


EDGE_PROBABILITIES = [0.0, 5e-324, 1e-300, 1e-05, 0.1, 1 / 3, 0.5, 1 - 2**-53, 1.0]


def test_probabilities_parse_back_to_the_same_doubles(pyfunc_model):
    out = _router_output(pyfunc_model)
    answered = json.loads(guard_bytes(out))["predictions"]
    assert [r["poisonous_probability"] for r in answered] == out["poisonous_probability"].tolist()
    edge = pd.DataFrame(
        {"p": EDGE_PROBABILITIES, "label": pd.Categorical(["edible"] * len(EDGE_PROBABILITIES))}
    )
    parsed = [r["p"] for r in json.loads(guard_bytes(edge))["predictions"]]
    assert [x.hex() for x in parsed] == [x.hex() for x in EDGE_PROBABILITIES]


def test_metadata_cannot_hide_predictions():
    with pytest.raises(MlflowException, match="metadata cannot contain 'predictions'"):
        server_guard.predictions_to_json([1], io.StringIO(), {"predictions": 2})


def test_valid_request_is_answered_exactly_as_mlflow_would(guarded, original, pyfunc_model):
    body = json.dumps({"dataframe_records": F.example_rows(), "params": {"threshold": 0.3}}).encode()
    ours = guarded(body)
    theirs = original(body, JSON, pyfunc_model, None)
    assert (ours.status, ours.mimetype) == (200, JSON)
    assert json.loads(ours.response) == json.loads(theirs.response)


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        ("{}", None, 415, "no Content-Type header"),
        ("{}", "application/xml", 415, "only supports the following content types"),
        ("{}", "application/json; charset=latin-1", 415, "only supports UTF-8"),
        ("x" * (64 * 1024 + 1), JSON, 413, "request body is 65537 bytes; the limit is 65536"),
        (
            '{"dataframe_records": [{"cap-diameter": ' + "1" * 4301 + "}]}",
            JSON,
            400,
            "could not read the request",
        ),
        ('{"inputs": ' + "[" * 10_000 + "]" * 10_000 + "}", JSON, 400, "RecursionError"),
        ('a,b\n"unterminated', CSV, 400, "Failed to parse input as a Pandas DataFrame"),
        (b"PAR1 not parquet", "application/vnd.apache.parquet", 400, "valid Parquet"),
        (
            json.dumps({"dataframe_records": [F.example_rows()[0] | {"cap-shape": 99}]}),
            JSON,
            400,
            "Invalid input: row 0, column 'cap-shape': got 99",
        ),
        ("{" + "x" * 50_000, JSON, 400, "Invalid input. Ensure that input is a valid JSON"),
    ],
    ids=[
        "no-content-type",
        "unsupported-type",
        "not-utf8",
        "over-the-limit",
        "integer-over-4300-digits",
        "nesting-10000-deep",
        "malformed-csv",
        "malformed-parquet",
        "router-refuses-a-row",
        "undecodable-json",
    ],
)
def test_every_refusal_is_json_without_trace_or_echo(guarded, body, content_type, status, message):
    got, mimetype, answer = respond(guarded, body, content_type)
    assert (got, mimetype) == (status, JSON)
    assert message in answer["message"]
    assert "stack_trace" not in answer
    assert "Traceback" not in answer["message"] and "Failed to predict data" not in answer["message"]
    assert len(answer["message"]) <= server_guard.MAX_MESSAGE_CHARS + 50


def _parquet(columns: list[str], row: list[float]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = io.BytesIO()
    pq.write_table(pa.table([pa.array([v]) for v in row], names=columns), out)
    return out.getvalue()


NB_HEADER = ",".join(NB)
NB_VALUES = ",".join(str(v) for v in NB.values())


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (
            '{"dataframe_records": [{"cap-shape": 1, "cap-shape": 2, "cap-diameter": 3, '
            '"gill-attachment": 1, "gill-color": 1}]}',
            JSON,
            "a JSON object gives 'cap-shape' more than once",
        ),
        (
            '{"inputs": {"cap-shape": [1], "cap-diameter": [3], "cap-shape": [2]}}',
            JSON,
            "a JSON object gives 'cap-shape' more than once",
        ),
        (
            json.dumps({"dataframe_records": [NB]})[:-1]
            + ', "params": {"threshold": 0.1, "threshold": 0.9}}',
            JSON,
            "a JSON object gives 'threshold' more than once",
        ),
        (f"cap-shape,{NB_HEADER}\n2,{NB_VALUES}\n", CSV, "the CSV header gives 'cap-shape' more than once"),
        (
            f"\ufeff\n{NB_HEADER},gill_color,gill_color\n{NB_VALUES},1,2\n",
            CSV,
            "the CSV header gives 'gill_color' more than once",
        ),
        (
            _parquet(["cap-shape", *NB], [2.0, *NB.values()]),
            PARQUET,
            "the Parquet schema gives 'cap-shape' more than once",
        ),
        (
            json.dumps(
                {"dataframe_split": {"columns": list(NB), "data": [list(NB.values())], "index": [0, 1, 2]}}
            ),
            JSON,
            "dataframe_split gives an index of length 3 for data of length 1",
        ),
        (
            json.dumps(
                {"dataframe_split": {"columns": list(NB), "data": [list(NB.values())] * 2, "index": [7]}}
            ),
            JSON,
            "dataframe_split gives an index of length 1 for data of length 2",
        ),
        (
            json.dumps({"inputs": {"cap-shape": [1, 2], "cap-diameter": [3]}}),
            JSON,
            "columns of different lengths ('cap-shape': 2, 'cap-diameter': 1)",
        ),
        (
            json.dumps({"instances": {"cap-shape": [1], "cap-diameter": 3}}),
            JSON,
            "columns 'cap-shape' hold lists but 'cap-diameter' hold single values",
        ),
        (
            json.dumps({"instances": [NB, NB | {"gill-color": True}]}),
            JSON,
            "row 1, column 'gill-color': got the boolean True",
        ),
        (
            json.dumps({"inputs": {c: [v, v] for c, v in NB.items()} | {"gill-color": [1, True]}}),
            JSON,
            "row 1, column 'gill-color': got the boolean True",
        ),
        (
            json.dumps({"inputs": {c: [[v, v], [v, v]] for c, v in NB.items()}}),
            JSON,
            "row 0, column 'cap-diameter': got a list",
        ),
    ],
    ids=[
        "duplicated-json-key-in-a-record",
        "duplicated-json-key-in-columns",
        "duplicated-param",
        "duplicated-csv-header",
        "duplicated-csv-header-after-bom-and-blank-line",
        "duplicated-parquet-column",
        "split-index-longer-than-data",
        "split-index-shorter-than-data",
        "inputs-columns-of-different-lengths",
        "instances-lists-and-single-values",
        "boolean-in-instances-records",
        "boolean-among-integers-in-inputs-columns",
        "nested-lists-in-inputs-columns",
    ],
)
def test_ambiguous_bodies_are_refused_naming_the_problem(guarded, body, content_type, message):
    """Bodies MLflow alone would score with values or rows the client did not send."""
    got, mimetype, answer = respond(guarded, body, content_type)
    assert (got, mimetype) == (400, JSON), answer
    assert answer["error_code"] == "INVALID_PARAMETER_VALUE"
    assert message in answer["message"]
    assert "stack_trace" not in answer and "Failed to predict data" not in answer["message"]


#: One row of each kind; batches below mix them in every order up to three rows.
KINDS = {"nb": NB, "lr": LR, "both": NB | LR}
ORDERS = [order for n in (1, 2, 3) for order in itertools.product(KINDS, repeat=n)]


def _in_every_json_form(records: list[dict]) -> dict[str, dict]:
    columns = list(dict.fromkeys(c for r in records for c in r))
    as_columns = {c: [r.get(c) for r in records] for c in columns}
    return {
        "instances-records": {"instances": records},
        "instances-columns": {"instances": as_columns},
        "inputs-records": {"inputs": records},
        "inputs-columns": {"inputs": as_columns},
        "dataframe-records": {"dataframe_records": records},
        "dataframe-split": {
            "dataframe_split": {"columns": columns, "data": [[r.get(c) for c in columns] for r in records]}
        },
    }


@pytest.mark.parametrize("order", ORDERS, ids=["-".join(o) for o in ORDERS])
def test_every_json_form_gives_one_answer_per_row_as_in_process(guarded, pyfunc_model, order):
    """``{"instances": [NB, LR]}`` was one answer and ``[LR, NB, LR]`` a 400 (MLflow merged the rows)."""
    records = [KINDS[kind] for kind in order]
    expected = pyfunc_model.unwrap_python_model().router.predict(pd.DataFrame(records))
    expected = expected.astype({"prediction": str, "model": str}).to_dict("records")
    for form, payload in _in_every_json_form(records).items():
        got, _, answer = respond(guarded, json.dumps(payload), JSON)
        assert (got, answer.get("predictions")) == (200, expected), form


def test_install_patches_once_and_only_a_matching_mlflow(monkeypatch, caplog):
    module = types.SimpleNamespace(
        invocations=scoring_server.invocations,
        predictions_to_json=scoring_server.predictions_to_json,
        InvocationsResponse=scoring_server.InvocationsResponse,
        _decode_json_input=scoring_server._decode_json_input,
    )
    assert server_guard.install(module, max_request_bytes=10)
    first = module.invocations
    assert module.predictions_to_json is server_guard.predictions_to_json
    assert server_guard.install(module, max_request_bytes=10)
    assert module.invocations is first, "a second install must not wrap the guard again"

    other = types.SimpleNamespace(invocations=lambda request: None, predictions_to_json=lambda p, o: None)
    before = other.invocations
    assert not server_guard.install(other, max_request_bytes=10)
    assert other.invocations is before
    assert "not the expected one" in caplog.text


def test_install_needs_an_mlflow_that_takes_the_parsed_json(caplog):
    """The guard hands MLflow the body it parsed; an MLflow that only reads text is left unguarded."""
    module = types.SimpleNamespace(
        invocations=scoring_server.invocations,
        predictions_to_json=scoring_server.predictions_to_json,
        InvocationsResponse=scoring_server.InvocationsResponse,
        _decode_json_input=lambda text: json.loads(text),
    )
    assert not server_guard.install(module, max_request_bytes=10)
    assert module.invocations is scoring_server.invocations
    assert "'takes_parsed_json': False" in caplog.text


@pytest.mark.parametrize(("value", "expected"), [("", 16 * 1024 * 1024), ("1024", 1024), (" 7 ", 7)])
def test_max_request_bytes_setting(monkeypatch, value, expected):
    from router_model import settings

    monkeypatch.setenv("MUSHROOM_MAX_REQUEST_BYTES", value)
    assert settings.max_request_bytes() == expected


@pytest.mark.parametrize("value", ["0", "-5", "16MB", "1e6"])
def test_install_refuses_a_bad_max_request_bytes(monkeypatch, value):
    monkeypatch.setenv("MUSHROOM_MAX_REQUEST_BYTES", value)
    with pytest.raises(ValueError, match=f"MUSHROOM_MAX_REQUEST_BYTES is '{value}'; expected a positive"):
        server_guard.install(types.SimpleNamespace())


@pytest.mark.serving
def test_a_bad_max_request_bytes_stops_a_real_server_at_start(registered, monkeypatch):
    """The server fails when it loads the model, not on its first request."""
    import subprocess

    from support import free_port

    from router_model import serving

    monkeypatch.setenv("MUSHROOM_MAX_REQUEST_BYTES", "16MB")
    proc = serving.start_server(port=free_port(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        output, _ = proc.communicate(timeout=300)
    finally:
        serving.stop_server(proc)
    assert proc.returncode != 0
    assert "MUSHROOM_MAX_REQUEST_BYTES is '16MB'; expected a positive number of bytes" in output.decode()


def test_guard_is_only_installed_inside_the_scoring_server(monkeypatch):
    monkeypatch.delenv(server_guard.SERVER_MODEL_PATH_ENV, raising=False)
    assert not server_guard.in_scoring_server()
    monkeypatch.setenv(server_guard.SERVER_MODEL_PATH_ENV, "file:///model")
    assert server_guard.in_scoring_server()


# --------------------------------------------------------------------------------------------
# The fast path (bytes -> matrix -> scorers -> bytes) and what it relies on in MLflow 3.17
# --------------------------------------------------------------------------------------------


def test_mlflow_still_has_what_the_fast_path_relies_on(monkeypatch):
    """Pinned to MLflow 3.17: if any of these changes, update server_guard (install() would serve
    MLflow unchanged, or the fast path would stay in the worker thread)."""
    assert server_guard._params_schema_hook() == ["params", "schema"]
    assert server_guard.hops_to_thread(scoring_server), "MLflow's handler no longer awaits asyncio.to_thread"
    for name in ("invocations", "predictions_to_json", "asyncio"):
        monkeypatch.setattr(scoring_server, name, getattr(scoring_server, name))  # restored after
    assert server_guard.install(scoring_server, max_request_bytes=1024)
    assert isinstance(scoring_server.asyncio, server_guard._EventLoopFastPath)
    assert scoring_server.asyncio.wait_for is asyncio.wait_for, "the rest of asyncio must stay as it was"
    assert scoring_server.asyncio.TimeoutError is asyncio.TimeoutError


def test_fast_path_is_only_for_the_router_without_an_input_schema(pyfunc_model):
    router = pyfunc_model.unwrap_python_model()
    assert server_guard.fast_router(pyfunc_model, None) is router
    assert server_guard.fast_router(pyfunc_model, object()) is None

    class NotAPythonModel:
        def unwrap_python_model(self):
            raise MlflowException("not a PythonModel")

    assert server_guard.fast_router(NotAPythonModel(), None) is None
    assert (
        server_guard.fast_answer(json.dumps({"dataframe_records": [LR]}).encode(), JSON, NotAPythonModel())
        is None
    )
    assert server_guard.fast_router(pyfunc_model, None) is router, "the cache follows the model object"


def _on_the_loop(func, data: bytes) -> tuple[object, bool]:
    """Run the shim's ``to_thread`` the way MLflow's handler does; also say whether ``func``'s work
    ran on the event loop's thread."""
    shim = server_guard._EventLoopFastPath()

    async def handler():
        loop_thread = threading.get_ident()
        result = await shim.to_thread(func, data, JSON, None, None)
        return result, result[1] == loop_thread

    return asyncio.run(handler())


def _halves(fast_result: object):
    def work(name):
        return lambda *args: (name, threading.get_ident()) if name != "fast" or fast_result else None

    func = work("whole")
    setattr(func, server_guard._FAST, work("fast"))
    setattr(func, server_guard._SLOW, work("slow"))
    return func


@pytest.mark.parametrize(
    ("fast_takes", "size", "ran", "on_loop"),
    [
        (True, 100, "fast", True),  # the fast path answers on the event loop: no thread hop
        (False, 100, "slow", False),  # declined: MLflow's path in a worker thread, fast not tried twice
        (True, server_guard.INLINE_MAX_BYTES + 1, "whole", False),  # big body: all of it in the thread
    ],
)
def test_event_loop_shortcut(fast_takes, size, ran, on_loop):
    (name, _), loop = _on_the_loop(_halves(fast_takes), b"x" * size)
    assert (name, loop) == (ran, on_loop)


def test_event_loop_shortcut_leaves_other_functions_to_the_thread():
    (name, _), loop = _on_the_loop(lambda *args: ("plain", threading.get_ident()), b"{}")
    assert (name, loop) == ("plain", False)


def test_fast_path_answers_the_same_doubles_as_predict_in_process(pyfunc_model, synthetic_frame):
    rows = synthetic_frame[list(F.ALL_FEATURES)].sample(1000, random_state=3)
    rows.loc[rows.index[::3], list(F.NB_FEATURES)] = np.nan  # a third LR only
    rows.loc[rows.index[1::3], list(F.LR_FEATURES)] = np.nan  # a third NB only
    records = [{k: v for k, v in r.items() if v == v} for r in rows.to_dict("records")]
    body = json.dumps({"dataframe_records": records, "params": {"threshold": 0.4}}).encode()
    answer = server_guard.fast_answer(body, JSON, pyfunc_model)
    assert answer is not None, "the fast path declined a plain body"
    got = pd.DataFrame(json.loads(answer)["predictions"])
    expected = pyfunc_model.predict(pd.DataFrame(records), params={"threshold": 0.4})
    for column in ("probability", "poisonous_probability"):
        assert [x.hex() for x in got[column]] == [x.hex() for x in expected[column]], column
    assert got["model"].tolist() == expected["model"].astype(str).tolist()
    assert got["prediction"].tolist() == expected["prediction"].astype(str).tolist()


@pytest.fixture
def gc_runs():
    """The cyclic collector's runs while the test runs, with a threshold low enough to show any."""
    started: list[int] = []

    def count(phase: str, info: dict) -> None:
        if phase == "start":
            started.append(info["generation"])

    threshold, enabled = gc.get_threshold(), gc.isenabled()
    gc.set_threshold(100)
    gc.enable()
    gc.callbacks.append(count)
    try:
        yield started
    finally:
        gc.callbacks.remove(count)
        gc.set_threshold(*threshold)
        if not enabled:
            gc.disable()


@pytest.mark.parametrize(
    ("body", "answered"),
    [
        pytest.param(
            {"dataframe_split": {"columns": list(LR), "data": [list(LR.values())] * 1000}},
            True,
            id="answered",
        ),
        pytest.param(
            {
                "dataframe_split": {"columns": list(LR), "data": [list(LR.values())] * 1000},
                "params": {"explain": True},
            },
            True,
            id="explained",
        ),
        pytest.param({"dataframe_records": [LR | {"stem-color": 13}] * 1000}, False, id="declined"),
    ],
)
def test_the_fast_path_runs_no_garbage_collection_and_leaves_the_collector_on(
    pyfunc_model, gc_runs, body, answered
):
    """A 1,000-row body parses into 1,000 lists and answers 1,000 dicts, none in a cycle: the
    collector used to run several times a request and walk them (several per cent of a busy
    server's instructions, measured under callgrind; docs/benchmarks.md)."""
    data = json.dumps(body).encode()
    server_guard.fast_answer(data, JSON, pyfunc_model)  # warm: first calls build caches
    gc_runs.clear()
    answer = server_guard.fast_answer(data, JSON, pyfunc_model)
    assert (answer is not None) == answered
    assert gc_runs == [], f"the collector ran {len(gc_runs)} times during one request"
    assert gc.isenabled()


def test_the_fast_path_leaves_the_collector_on_when_scoring_raises(pyfunc_model, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug in scoring")

    monkeypatch.setattr(pyfunc_model.unwrap_python_model().router, "score", broken)
    with pytest.raises(RuntimeError, match="a bug in scoring"):
        server_guard.fast_answer(json.dumps({"dataframe_records": [LR]}).encode(), JSON, pyfunc_model)
    assert gc.isenabled()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"dataframe_records": [LR | {"stem-color": True}]}, id="boolean"),
        pytest.param({"instances": {c: [v, True] for c, v in LR.items()}}, id="boolean-in-instances-columns"),
        pytest.param({"inputs": [LR | {"season": "0.0273721330556057"}]}, id="numeric-string"),
        pytest.param({"dataframe_records": [LR | {"stem-color": 13}]}, id="out-of-domain"),
        pytest.param({"dataframe_records": [NB | {"gill-color": 2.5}]}, id="not-a-code"),
        pytest.param({"dataframe_records": [{"stem-height": 1.0}]}, id="no-route"),
        pytest.param(
            {"dataframe_records": [LR], "params": {"model": "naive_bayes"}}, id="route-lacks-features"
        ),
        pytest.param({"dataframe_records": [LR], "params": {"threshold": 2}}, id="bad-threshold"),
        pytest.param({"dataframe_records": [LR], "params": {"threshold": "0.5"}}, id="string-threshold"),
        pytest.param({"dataframe_records": [LR], "extra": 1}, id="unknown-top-level-key"),
        pytest.param({"dataframe_records": [LR | {"x": {"a": 1}}]}, id="object-in-unknown-column"),
        pytest.param({"dataframe_records": []}, id="no-rows"),
        pytest.param(
            {"dataframe_split": {"columns": list(LR), "data": [list(LR.values())], "dtype": 1}},
            id="split-key",
        ),
        pytest.param(
            {"dataframe_split": {"columns": list(LR), "data": [list(LR.values())], "index": [0, 1]}},
            id="index",
        ),
        pytest.param({"dataframe_split": {"data": [list(LR.values())]}}, id="no-columns"),
        pytest.param({"instances": [list(LR.values())]}, id="unnamed-instances"),
    ],
)
def test_fast_path_leaves_everything_but_plain_numbers_to_mlflows_path(pyfunc_model, body):
    assert server_guard.fast_answer(json.dumps(body).encode(), JSON, pyfunc_model) is None


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('{"dataframe_records": [{"stem-height": 1, "stem-height": 2}]}', id="duplicated-key"),
        pytest.param('{"dataframe_records": [], "dataframe_records": [{}]}', id="duplicated-form"),
        pytest.param('{"dataframe_records": [{"stem-height": NaN}]}', id="nan-token"),
        pytest.param('{"dataframe_records": [{"stem-height": 1e999}]}', id="infinite"),
        pytest.param(b'\xef\xbb\xbf{"dataframe_records": [{}]}', id="byte-order-mark"),
    ],
)
def test_fast_path_leaves_what_orjson_reads_differently_to_mlflows_path(pyfunc_model, text):
    data = text if isinstance(text, bytes) else text.encode()
    assert server_guard.fast_answer(data, JSON, pyfunc_model) is None


def test_a_colon_inside_a_string_only_costs_the_fast_path(pyfunc_model, guarded):
    """The duplicate-key check counts ':'; one inside a string makes the fast path decline (the
    answer, from MLflow's path, is the same)."""
    body = json.dumps({"dataframe_records": [LR | {"note": "a:b"}]}).encode()
    assert server_guard.fast_answer(body, JSON, pyfunc_model) is None
    status, _, answer = respond(guarded, body, JSON)
    assert status == 200 and len(answer["predictions"]) == 1


def _domain_cases() -> list[list[float]]:
    rng = np.random.default_rng(5)
    good = {name: list(F.SEASON_VALUES) if name == F.SEASON else [0.0, 1.0, 3.0] for name in F.ALL_FEATURES}
    bad = {
        name: [np.inf, -np.inf, -1.0, 0.5, 1e9]
        if name in F.CATEGORY_CARDINALITY
        else [np.inf, -np.inf, 0.5, 0.0]
        if name == F.SEASON
        else [np.inf, -np.inf, -1e-300, -3.0]
        for name in F.ALL_FEATURES
    }
    rows = []
    for _ in range(400):
        row = [rng.choice(good[n]) if rng.random() < 0.9 else rng.choice(bad[n]) for n in F.ALL_FEATURES]
        rows.append([np.nan if rng.random() < 0.2 else v for v in row])
    return rows


def test_rows_in_domain_agrees_with_feature_matrix():
    from router_model.validation import InvalidInputError, feature_matrix, rows_in_domain

    rows = _domain_cases()
    fast = rows_in_domain(np.asarray(rows))
    for row, ok in zip(rows, fast, strict=True):
        try:
            feature_matrix(pd.DataFrame([row], columns=list(F.ALL_FEATURES)))
            accepted = True
        except InvalidInputError:
            accepted = False
        assert ok == accepted, row
    assert 0 < fast.sum() < len(rows)


def test_the_fast_paths_label_cache_keeps_no_long_labels(pyfunc_model):
    """Clients choose column labels: a long one is looked up, not kept."""
    long_label = "x-" + "a" * 1000
    body = json.dumps({"dataframe_records": [LR | {long_label: 1, "x-short": 2}]}).encode()
    assert server_guard.fast_answer(body, JSON, pyfunc_model) is not None
    assert long_label not in server_guard._FEATURE_INDEX
    assert server_guard._FEATURE_INDEX["x-short"] == -1


def test_the_fast_path_reports_to_the_inference_log_like_predict(pyfunc_model, monkeypatch):
    """Rows the fast path answers reach the inference log's hook with what MLflow's path gives it."""
    seen: list[tuple] = []

    def record(matrix, routes, poisonous, threshold):
        seen.append((matrix.copy(), routes.tolist(), poisonous.tolist(), threshold))

    monkeypatch.setattr(pyfunc_model.unwrap_python_model(), "observer", lambda: record)
    records = [NB, LR, NB | LR]
    body = {"dataframe_records": records, "params": {"threshold": 0.3}}
    assert server_guard.fast_answer(json.dumps(body).encode(), JSON, pyfunc_model) is not None
    pyfunc_model.predict(pd.DataFrame(records), params={"threshold": 0.3})  # MLflow's path
    assert len(seen) == 2
    (fast_matrix, *fast_rest), (slow_matrix, *slow_rest) = seen
    np.testing.assert_array_equal(fast_matrix, slow_matrix)
    assert fast_rest == slow_rest


# --- explanations and the typed params ------------------------------------------------------------


@pytest.fixture(scope="module")
def old_version(registered):
    """The router as a version registered before explanations: its signature has only model and threshold."""
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec

    model = mlflow.pyfunc.load_model(registered["model_uri"])
    model.metadata.signature = ModelSignature(
        inputs=None,
        params=ParamSchema([ParamSpec("model", "string", F.AUTO), ParamSpec("threshold", "double", 0.5)]),
    )
    return model


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"explain": True}, "param 'explain', which this model version's signature does not declare"),
        ({"explain": 3}, "param 'explain', which this model version's signature does not declare"),
        (
            {"threshold": "safe"},
            "param 'threshold': 'safe' needs 'safe_threshold', which this model version's",
        ),
        ({"explain_top": 2}, "param 'explain_top', which"),
    ],
)
def test_a_version_registered_before_the_params_gets_a_400_saying_to_retrain(
    original, old_version, params, message
):
    wrapped = server_guard.guard(original, scoring_server.InvocationsResponse, 64 * 1024)
    for rows in (
        F.example_rows(),
        [{k: str(v) for k, v in F.example_rows()[0].items()}],
    ):  # fast, MLflow's path
        body = json.dumps({"dataframe_records": rows, "params": params}).encode()
        with pytest.raises(MlflowException, match="retrain to get a version that takes it") as info:
            wrapped(body, JSON, old_version, None)
        assert message in info.value.message
        assert info.value.get_http_status_code() == 400
    body = json.dumps({"dataframe_records": F.example_rows(), "params": {"threshold": 0.3}}).encode()
    assert wrapped(body, JSON, old_version, None).status == 200


@pytest.mark.parametrize("params", [{"explain": True}, {"explain": 2, "threshold": "safe", "model": "auto"}])
def test_fast_path_explains_as_mlflows_path(guarded, pyfunc_model, params):
    body = json.dumps({"dataframe_records": F.example_rows() * 3, "params": params}).encode()
    fast = server_guard.fast_answer(body, JSON, pyfunc_model)
    assert fast is not None
    # the same body with one feature as a numeric string is declined by the fast path
    slow_rows = [dict(r) for r in F.example_rows() * 3]
    slow_rows[0]["cap-shape"] = str(slow_rows[0]["cap-shape"])
    slow_body = json.dumps({"dataframe_records": slow_rows, "params": params}).encode()
    assert server_guard.fast_answer(slow_body, JSON, pyfunc_model) is None
    slow = guarded(slow_body)
    assert slow.status == 200
    assert json.loads(slow.response) == json.loads(fast)  # bytes: see test_explained_answers.py
    assert all(F.EXPLANATION in p for p in json.loads(fast)["predictions"])


def test_the_fast_serialiser_writes_explanations_with_orjson_as_mlflow_would(pyfunc_model):
    frame = pyfunc_model.predict(pd.DataFrame(F.example_rows()), params={"explain": True, "explain_top": 2})
    assert json.loads(guard_bytes(frame)) == json.loads(mlflow_bytes(frame))
    assert guard_bytes(frame) != mlflow_bytes(
        frame
    )  # orjson's compact bytes, not MLflow's pure-Python writer
