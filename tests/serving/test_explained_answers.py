"""Explanations over HTTP from a real `mlflow models serve`: the same numbers as in process.

The golden rows (:data:`support.GOLDEN_ROWS`, both routes) are sent in every JSON request form,
on the fast path and on MLflow's path, and compared with ``mlflow.pyfunc.load_model(uri).predict``
in this process, value for value (orjson writes each float so that it parses back to the same
double). Without ``explain`` the answer is byte for byte what the server wrote before explanations.
"""

from __future__ import annotations

import json

import mlflow.pyfunc
import numpy as np
import orjson
import pandas as pd
import pytest
import requests
from scipy.special import logit
from support import GOLDEN_ROWS, JSON_FORMS, explanation_sums

from router_model import features as F

pytestmark = pytest.mark.serving

#: The params as sent over HTTP, and as a typed in-process caller spells them.
EXPLAIN = {
    "all": ({"explain": True}, {"explain": True}),
    "top2": ({"explain": 2}, {"explain": True, "explain_top": 2}),
}
FORMS = (
    *JSON_FORMS,
    # a numeric string takes MLflow's path instead of the guard's fast path
    "dataframe_records_numeric_strings",
)


@pytest.fixture(scope="module")
def pyfunc(registered):
    return mlflow.pyfunc.load_model(registered["model_uri"])


def post(url: str, body: object, content_type: str = "application/json") -> requests.Response:
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return requests.post(f"{url}/invocations", data=data, headers={"Content-Type": content_type}, timeout=30)


def encode(records: list[dict], form: str, params: dict | None) -> dict:
    """``records`` (absent key = not given) in one JSON request form, with ``params``."""
    columns = list(dict.fromkeys(c for r in records for c in r))
    if form == "dataframe_records_numeric_strings":
        records = [{k: str(v) for k, v in r.items()} if i == 0 else r for i, r in enumerate(records)]
        form = "dataframe_records"
    if form == "dataframe_split":
        body: dict = {form: {"columns": columns, "data": [[r.get(c) for c in columns] for r in records]}}
    elif form == "dataframe_records":
        body = {form: records}
    else:
        key, _, shape = form.partition("_")
        body = {key: records if shape == "records" else {c: [r.get(c) for r in records] for c in columns}}
    if params is not None:
        body["params"] = params
    return body


def in_process(pyfunc, golden_rows: pd.DataFrame, params: dict | None) -> list[dict]:
    """What ``mlflow.pyfunc`` answers in this process, as JSON values."""
    out = pyfunc.predict(golden_rows, params=params)
    return out.astype({"prediction": str, "model": str}).to_dict("records")


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("explain", EXPLAIN)
def test_every_json_form_explains_the_golden_rows_as_in_process(server, pyfunc, golden_rows, form, explain):
    sent, typed = EXPLAIN[explain]
    response = post(server, encode(GOLDEN_ROWS, form, sent))
    assert response.status_code == 200, response.text
    answered = response.json()["predictions"]
    assert answered == in_process(pyfunc, golden_rows, typed)
    assert {a["model"] for a in answered} == set(F.ROUTES)
    sums = explanation_sums([a[F.EXPLANATION] for a in answered])
    np.testing.assert_allclose(sums, logit([a["poisonous_probability"] for a in answered]), rtol=0, atol=1e-9)


@pytest.mark.parametrize("explain", EXPLAIN)
def test_the_fast_path_and_mlflows_path_write_the_same_bytes(server, explain):
    fast = post(server, encode(GOLDEN_ROWS, "dataframe_records", EXPLAIN[explain][0]))
    slow = post(server, encode(GOLDEN_ROWS, "dataframe_records_numeric_strings", EXPLAIN[explain][0]))
    assert fast.status_code == slow.status_code == 200
    assert fast.content == slow.content


def test_typed_params_work_over_http_too(server, pyfunc, golden_rows):
    typed = {"explain": True, "explain_top": 3, "safe_threshold": True}
    response = post(server, encode(GOLDEN_ROWS, "dataframe_records", typed))
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == in_process(pyfunc, golden_rows, typed)


@pytest.mark.parametrize("params", [None, {}, {"explain": False}, {"explain": False, "threshold": 0.5}])
def test_without_explain_the_answer_is_byte_for_byte_as_before(server, pyfunc, golden_rows, params):
    """Before explanations the server wrote ``orjson.dumps({"predictions": records})`` of the four columns."""
    for form in ("dataframe_split", "dataframe_records_numeric_strings"):
        response = post(server, encode(GOLDEN_ROWS, form, params))
        assert response.status_code == 200, response.text
        expected = pyfunc.predict(golden_rows).astype({"prediction": str, "model": str})
        assert list(expected.columns) == list(F.OUTPUT_COLUMNS)
        assert response.content == orjson.dumps({"predictions": expected.to_dict("records")})


def test_threshold_safe_is_answered_over_http(server, served_router, golden_rows):
    """Issue #17's ``"threshold": "safe"`` reaches the router as the typed ``safe_threshold``."""
    response = post(server, encode(GOLDEN_ROWS, "dataframe_records", {"threshold": "safe"}))
    assert response.status_code == 200, response.text
    expected = served_router.predict(golden_rows, {"threshold": "safe"})
    assert response.json()["predictions"] == expected.astype({"prediction": str, "model": str}).to_dict(
        "records"
    )


def test_a_csv_request_cannot_ask_for_an_explanation(server, golden_rows):
    """MLflow reads params only from JSON bodies: a CSV body is answered without explanation."""
    response = post(server, golden_rows.to_csv(index=False), "text/csv")
    assert response.status_code == 200, response.text
    assert [list(a) for a in response.json()["predictions"]] == [list(F.OUTPUT_COLUMNS)] * len(golden_rows)


@pytest.mark.parametrize(
    ("params", "fragments"),
    [
        ({"explain": 0}, ["param 'explain' is 0; expected true, false or an integer k >= 1"]),
        ({"explain": "all"}, ["explain"]),
        ({"explain": 2, "explain_top": 3}, ["param 'explain' is 2 and 'explain_top' is 3"]),
        ({"explain_top": 3}, ["param 'explain_top' is 3 but 'explain' is false"]),
        ({"threshold": 0.2, "safe_threshold": True}, ["'safe_threshold' is true; give one of them"]),
    ],
)
def test_bad_explain_params_get_a_400_naming_them(server, params, fragments):
    response = post(server, encode(GOLDEN_ROWS[:1], "dataframe_records", params))
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "Traceback" not in response.text
    for fragment in fragments:
        assert fragment in body["message"]
