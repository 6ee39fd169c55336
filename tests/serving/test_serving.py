"""A real `mlflow models serve` of models:/mushroom-router@champion, answering HTTP on 127.0.0.1."""

import io
import itertools
import json

import pandas as pd
import pytest
import requests
from support import JSON_FORMS, samples

from router_model import features as F

pytestmark = pytest.mark.serving

NB, LR = F.example_rows()
NB_U = {k.replace("-", "_"): v for k, v in NB.items()}
LR_U = {k.replace("-", "_"): v for k, v in LR.items()}


def post(url, body, content_type="application/json"):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return requests.post(f"{url}/invocations", data=data, headers={"Content-Type": content_type}, timeout=30)


def predictions(response):
    assert response.status_code == 200, response.text
    return pd.DataFrame(response.json()["predictions"])


def assert_clean_error(response, *fragments):
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error_code"] == "INVALID_PARAMETER_VALUE"
    for leak in ("Traceback", "stack_trace", 'File "', ".py", "site-packages"):
        assert leak not in response.text
    for fragment in fragments:
        assert fragment in body["message"]


def test_ping(server):
    assert requests.get(f"{server}/ping", timeout=5).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"dataframe_records": [NB, LR]},
        {
            "dataframe_split": {
                "columns": list(F.ALL_FEATURES),
                "data": [[*NB.values(), *[None] * 4], [*[None] * 4, *LR.values()]],
            }
        },
        {"instances": [NB | dict.fromkeys(F.LR_FEATURES), dict.fromkeys(F.NB_FEATURES) | LR]},
        {"inputs": [NB | dict.fromkeys(F.LR_FEATURES), dict.fromkeys(F.NB_FEATURES) | LR]},
        {"inputs": {c: [NB.get(c), LR.get(c)] for c in F.ALL_FEATURES}},
        {"dataframe_records": [NB_U, LR_U]},
        {"dataframe_records": [NB, LR_U]},
        {"dataframe_records": [NB, {k: str(v) for k, v in LR.items()}]},
    ],
    ids=[
        "dataframe_records",
        "dataframe_split",
        "instances",
        "inputs_records",
        "inputs_columns",
        "underscores",
        "mixed_spellings",
        "numeric_strings",
    ],
)
def test_every_request_form_routes_a_mixed_batch(server, body):
    out = predictions(post(server, body))
    assert out.columns.tolist() == list(F.OUTPUT_COLUMNS)
    assert out["model"].tolist() == [F.NAIVE_BAYES, F.LOGISTIC_REGRESSION]


#: One row of each kind; the batches below mix them in every order up to three rows.
KINDS = {"nb": NB, "lr": LR, "both": NB | LR}
ORDERS = [order for n in (1, 2, 3) for order in itertools.product(KINDS, repeat=n)]
FORMS = (*JSON_FORMS, "csv", "parquet")


def encode(records: list[dict], form: str) -> tuple[str | bytes, str]:
    """``records`` (absent key = not given) in one request form; returns (body, content type)."""
    columns = list(dict.fromkeys(c for r in records for c in r))
    as_columns = {c: [r.get(c) for r in records] for c in columns}
    if form in ("csv", "parquet"):
        frame = pd.DataFrame(records, columns=columns)
        if form == "csv":
            return frame.to_csv(index=False), "text/csv"
        return frame.to_parquet(index=False), "application/vnd.apache.parquet"
    key, _, shape = form.rpartition("_")
    if key == "dataframe":
        key = form
        payload = (
            records
            if shape == "records"
            else {"columns": columns, "data": [[r.get(c) for c in columns] for r in records]}
        )
    else:
        payload = records if shape == "records" else as_columns
    return json.dumps({key: payload}), "application/json"


def as_read(body: str | bytes, form: str, records: list[dict]) -> pd.DataFrame:
    """The rows as the server's parser reads them (CSV and Parquet through pandas)."""
    if form == "csv":
        return pd.read_csv(io.StringIO(body))
    if form == "parquet":
        return pd.read_parquet(io.BytesIO(body))
    return pd.DataFrame(records)


@pytest.mark.parametrize("form", FORMS)
def test_one_answer_per_row_in_order_equal_to_in_process_in_every_form(server, served_router, form):
    """Batches of both routes in every order; ``instances`` once merged [NB, LR] into one answer."""
    routes = {"nb": F.NAIVE_BAYES, "lr": F.LOGISTIC_REGRESSION, "both": served_router.preferred}
    for order in ORDERS:
        records = [KINDS[kind] for kind in order]
        body, content_type = encode(records, form)
        response = post(server, body, content_type)
        assert response.status_code == 200, (order, response.text)
        answered = response.json()["predictions"]
        expected = served_router.predict(as_read(body, form, records))
        assert [a["model"] for a in answered] == [routes[kind] for kind in order], order
        assert answered == expected.astype({"prediction": str, "model": str}).to_dict("records"), order


def _parquet_with_columns(columns: list[str], values: list[float]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = io.BytesIO()
    pq.write_table(pa.table([pa.array([v]) for v in values], names=columns), out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("body", "content_type", "fragments"),
    [
        (
            '{"dataframe_records": [{"cap-shape": 1, "cap-shape": 2, "cap-diameter": 3, '
            '"gill-attachment": 1, "gill-color": 1}]}',
            "application/json",
            ["a JSON object gives 'cap-shape' more than once"],
        ),
        (
            f"cap-shape,{','.join(NB)}\n2,{','.join(str(v) for v in NB.values())}\n",
            "text/csv",
            ["the CSV header gives 'cap-shape' more than once"],
        ),
        (
            _parquet_with_columns(["gill-color", *NB], [2, *NB.values()]),
            "application/vnd.apache.parquet",
            ["the Parquet schema gives 'gill-color' more than once"],
        ),
        (
            json.dumps(
                {"dataframe_split": {"columns": list(NB), "data": [list(NB.values())], "index": [0, 1, 2]}}
            ),
            "application/json",
            ["index of length 3", "data of length 1"],
        ),
        (
            json.dumps({"instances": {"cap-shape": [1, 2], "cap-diameter": [3]}}),
            "application/json",
            ["columns of different lengths ('cap-shape': 2, 'cap-diameter': 1)"],
        ),
    ],
    ids=[
        "duplicated-json-key",
        "duplicated-csv-header",
        "duplicated-parquet-column",
        "split-index-too-long",
        "instances-columns-of-different-lengths",
    ],
)
def test_ambiguous_requests_are_refused_naming_the_problem(server, body, content_type, fragments):
    assert_clean_error(post(server, body, content_type), *fragments)


def test_same_answer_from_every_form(server):
    a = predictions(post(server, {"dataframe_records": [NB, LR]}))
    b = predictions(post(server, {"dataframe_records": [NB_U, LR_U]}))
    pd.testing.assert_frame_equal(a, b)


def test_text_csv_with_rows_of_both_kinds(server):
    frame = pd.DataFrame([NB, LR], columns=list(F.ALL_FEATURES))
    out = predictions(post(server, frame.to_csv(index=False), "text/csv"))
    assert out["model"].tolist() == [F.NAIVE_BAYES, F.LOGISTIC_REGRESSION]
    direct = predictions(post(server, {"dataframe_records": [NB, LR]}))
    pd.testing.assert_series_equal(out["poisonous_probability"], direct["poisonous_probability"])


def test_text_csv_with_underscore_header(server):
    csv = io.StringIO()
    pd.DataFrame([LR_U]).to_csv(csv, index=False)
    assert predictions(post(server, csv.getvalue(), "text/csv"))["model"].tolist() == [F.LOGISTIC_REGRESSION]


def test_params_threshold_safe_uses_each_routes_recorded_threshold(server, served_router):
    """Issue #17: ``"threshold": "safe"`` over HTTP (the guard maps it onto ``safe_threshold``)."""
    out = predictions(post(server, {"dataframe_records": [NB, LR], "params": {"threshold": "safe"}}))
    expected = served_router.predict(pd.DataFrame([NB, LR]), {"threshold": "safe"})
    assert out.to_dict("records") == expected.astype({"prediction": str, "model": str}).to_dict("records")


@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_params_threshold(server, threshold):
    out = predictions(post(server, {"dataframe_records": [NB, LR], "params": {"threshold": threshold}}))
    expected = "poisonous" if threshold == 0.0 else "edible"
    assert (out["prediction"] == expected).all() or (out["poisonous_probability"] >= 1.0).any()


def test_params_model_override(server):
    both = NB | LR
    out = predictions(post(server, {"dataframe_records": [both, both], "params": {"model": "naive_bayes"}}))
    assert (out["model"] == F.NAIVE_BAYES).all()
    out = predictions(post(server, {"dataframe_records": [both], "params": {"model": "logistic_regression"}}))
    assert out["model"].tolist() == [F.LOGISTIC_REGRESSION]


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ({"dataframe_records": [NB | {"cap-shape": 9}]}, ["row 0, column 'cap-shape': got 9", "0-6"]),
        ({"dataframe_records": [NB, LR | {"season": 0.5}]}, ["row 1, column 'season'"]),
        ({"dataframe_records": [NB | {"gill-color": True}]}, ["got the boolean True"]),
        ({"dataframe_records": [NB | {"gill-color": "white"}]}, ["got the string 'white'"]),
        ({"dataframe_records": [{"cap-diameter": 10}]}, ["row 0 completes neither feature set"]),
        ({"dataframe_records": [NB], "params": {"model": "tree"}}, ["param 'model' is 'tree'"]),
        ({"dataframe_records": [NB], "params": {"threshold": 2}}, ["param 'threshold' is 2"]),
        ({"dataframe_records": [NB], "params": {"threshold": "sure"}}, ["param 'threshold' is 'sure'"]),
        # Refused as Router.predict refuses them, not dropped or worded by MLflow's schema type:
        # a misspelled threshold would otherwise be answered at the default, 0.5.
        (
            {"dataframe_records": [NB], "params": {"treshold": 0.1}},
            ["unknown param(s) ['treshold']", "did you mean 'threshold'"],
        ),
        (
            {"dataframe_records": [NB], "params": {"explain": 1.5}},
            ["param 'explain' is 1.5; expected true, false or an integer k >= 1"],
        ),
        ({"dataframe_records": [NB], "params": {"explain": "yes"}}, ["param 'explain' is 'yes'"]),
        ({"dataframe_records": [NB], "params": {"model": 3}}, ["param 'model' is 3; expected one of"]),
        (
            {"dataframe_records": [NB], "params": {"explain_top": 2.0, "explain": True}},
            ["param 'explain_top' is 2.0"],
        ),
        ({"dataframe_records": [NB], "params": {"model": "logistic_regression"}}, ["needs ['stem-height'"]),
        ({"instances": [1, 2, 3]}, ["expected rows with named feature columns"]),
    ],
)
def test_bad_requests_get_400_with_a_json_message_and_no_traceback(server, body, fragments):
    assert_clean_error(post(server, body), *fragments)


def test_infinity_is_refused(server):
    assert_clean_error(
        post(
            server,
            '{"dataframe_records": [{"cap-diameter": 1e999, "cap-shape": 1, '
            '"gill-attachment": 1, "gill-color": 1}]}',
        ),
        "infinite",
    )


def test_one_bad_row_refuses_the_whole_batch(server):
    rows = [NB] * 5 + [NB | {"cap-diameter": -4}] + [LR] * 5
    assert_clean_error(post(server, {"dataframe_records": rows}), "row 5, column 'cap-diameter': got -4")


def test_server_survives_bad_requests(server):
    post(server, "not json")
    post(server, {"dataframe_records": [{"cap-shape": [1, 2]}]})
    assert predictions(post(server, {"dataframe_records": [NB]}))["model"].tolist() == [F.NAIVE_BAYES]


@pytest.mark.parametrize(
    "body",
    [
        {"dataframe_split": {"columns": list(F.LR_FEATURES), "data": []}},
        {"dataframe_records": []},
    ],
    ids=["split", "records"],
)
def test_an_empty_batch_gets_an_empty_answer_and_the_server_counts_nothing(server, body):
    """Zero rows in, zero answers out, with the server's metrics on (they count batches by route)."""
    before = rows_counted(server)
    response = post(server, body)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == []
    assert rows_counted(server) == before
    assert predictions(post(server, {"dataframe_records": [KINDS["lr"]]}))["model"].tolist() == [
        F.LOGISTIC_REGRESSION
    ]  # and the next request is answered
    assert rows_counted(server) == before + 1


def rows_counted(url: str) -> float:
    """``mushroom_router_rows_total`` over every route, from the server's ``/metrics`` (one worker:
    a scrape publishes its counts first)."""
    scraped = requests.get(f"{url}/metrics", timeout=10)
    assert scraped.status_code == 200, scraped.text
    return sum(v for (name, _), v in samples(scraped.text).items() if name == "mushroom_router_rows_total")
