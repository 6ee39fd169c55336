"""Property-based fuzzing of a real `mlflow models serve` of the router (hypothesis, derandomized).

Every answer to a generated body must be 2xx for valid input and 4xx otherwise, never 5xx; a 4xx
is JSON with a ``message``; no answer carries a ``stack_trace``, a traceback or a server path. A
valid batch gets one answer per row, in order, equal to the served model's ``Router.predict`` run
in this process on the same rows, in every envelope (``instances`` and ``inputs`` as records with
each row's own keys, and as columns).

MLflow 3.17's own scoring server fails several of these rules (500s before the model is reached,
``stack_trace`` on CSV/Parquet parse errors, plain-text 415s, ``instances`` records of different
feature sets merged into fewer rows, booleans folded into 1); the router's
:mod:`router_model.server_guard` fixes them inside the server, and ``test_fixed_regressions``
keeps one reproducer of each. No input shape is known to be answered wrongly now; a new one gets
a one-line reproducer there once fixed.
"""

from __future__ import annotations

import inspect
import io
import json
import logging
import os
import re
import sys
from collections import Counter

import pandas as pd
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import REPO

from router_model import features as F
from router_model import settings as settings_module

pytestmark = pytest.mark.serving

_log = logging.getLogger(__name__)

#: Figures across the whole module, reported by the last test.
FIGURES: Counter = Counter()
#: Fuzz tests that ran to the end (the 5,000-body total is checked only when all of them did).
FINISHED: set[str] = set()
#: Fewest bodies each fuzzer must have sent when it ran (it ran when its name is in FINISHED): a
#: fuzzer that silently generated almost nothing would otherwise pass.
MIN_BODIES = {"valid": 300, "one_bad_row": 300, "broken": 2000, "large": 6}

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    print_blob=True,
)

JSON = "application/json"
CSV = "text/csv"
PARQUET = "application/vnd.apache.parquet"
SUPPORTED_TYPES = (JSON, CSV, PARQUET)
OTHER_TYPES = (
    "text/plain",
    "application/xml",
    "",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "APPLICATION/JSON",
    "application/json; charset=latin-1",
    "application/json; boundary=x",
)

#: Text that must never reach a client: traceback lines and server paths.
LEAKS = ("Traceback", 'File "', '.py", line', "site-packages", "/work/", str(REPO), sys.prefix)

#: UTF-8 bytes of a lone surrogate (U+D800): invalid UTF-8 that Python's json.loads still decodes.
SURROGATE = b"\xed\xa0\x80"

#: Request forms; ``csv`` stays last (some strategies take the JSON ones as ``ENVELOPES[:-1]``).
ENVELOPES = (
    "dataframe_records",
    "dataframe_split",
    "instances",
    "instances_columns",
    "inputs_records",
    "inputs_columns",
    "csv",
)

# --------------------------------------------------------------------------------------------
# Sending and checking one body
# --------------------------------------------------------------------------------------------

_SESSION = requests.Session()


def _has_leak(text: str) -> list[str]:
    markers = (*LEAKS, os.environ.get("MUSHROOM_HOME") or "/nonexistent/")
    return [m for m in markers if m and m in text]


def send(
    server: str, body: bytes | str, content_type: str | None, *, timeout: float = 60
) -> requests.Response:
    """POST one body and check what every answer must satisfy; returns the response."""
    data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = _SESSION.post(f"{server}/invocations", data=data, headers=headers, timeout=timeout)
    status = response.status_code
    FIGURES["bodies"] += 1
    FIGURES[f"status_{status // 100}xx"] += 1
    FIGURES[f"status_{status}"] += 1
    shown = f"content type {content_type!r}, body {data[:300]!r}{'...' if len(data) > 300 else ''}"
    assert status < 500, f"{status} for {shown}: {response.text[:500]}"
    assert 200 <= status < 300 or 400 <= status < 500, f"{status} for {shown}"
    try:
        answer = response.json()
    except ValueError:
        pytest.fail(f"{status} answer is not JSON for {shown}: {response.text[:300]!r}")
    assert isinstance(answer, dict), shown
    if status >= 400:
        assert isinstance(answer.get("message"), str) and answer["message"], f"no message for {shown}"
        assert "stack_trace" not in answer, f"stack_trace in {status} for {shown}"
        leaks = _has_leak(json.dumps(answer))
        assert not leaks, f"leak {leaks} in {status} for {shown}: {response.text[:500]}"
    else:
        assert not _has_leak(response.text), shown
        assert isinstance(answer.get("predictions"), list), shown
    return response


def error_message(response: requests.Response) -> str:
    """The router's part of a 400 message (the guard drops MLflow's echo of the input)."""
    message = response.json()["message"]
    return message.split("\nError: ", 1)[-1]


# --------------------------------------------------------------------------------------------
# Body text: raw JSON tokens (NaN, Infinity, 1e999, 400-digit integers) written as they are
# --------------------------------------------------------------------------------------------


class Raw(str):
    """A JSON token written into the body text as is."""


def dumps(value: object) -> str:
    """JSON text with :class:`Raw` tokens; floats NaN/inf become the raw tokens NaN/Infinity."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(dumps(v) for v in value) + "]"
    return json.dumps(value)  # allow_nan: NaN, Infinity, -Infinity tokens


def _plain(value: object) -> object:
    """A value as pandas should see it in a CSV cell."""
    if isinstance(value, Raw):
        return "" if value == "NaN" else str(value)
    return value


def encode(rows: list[dict], envelope: str, params: dict | None = None) -> tuple[str, str]:
    """Rows (dicts, keys as spelled) in one request envelope; returns (body, content type)."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    if envelope == "csv":
        frame = pd.DataFrame([{k: _plain(v) for k, v in row.items()} for row in rows], columns=columns)
        return frame.to_csv(index=False), CSV
    if envelope == "dataframe_records":
        payload: dict = {"dataframe_records": rows}
    elif envelope == "dataframe_split":
        payload = {
            "dataframe_split": {"columns": columns, "data": [[r.get(c) for c in columns] for r in rows]}
        }
    elif envelope in ("instances", "inputs_records"):
        # Each record with its own keys: MLflow alone merged records of different feature sets.
        payload = {envelope.split("_")[0]: rows}
    elif envelope in ("instances_columns", "inputs_columns"):
        payload = {envelope.split("_")[0]: {c: [r.get(c) for r in rows] for c in columns}}
    else:
        raise ValueError(envelope)
    if params is not None:
        payload["params"] = params
    return dumps(payload), JSON


# --------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------

SPELLINGS = st.sampled_from(["hyphen", "underscore", "upper"])


def spell(column: str, how: str) -> str:
    if how == "underscore":
        return column.replace("-", "_")
    if how == "upper":
        return column.upper()
    return column


def _clean_text(s: str) -> bool:
    return not any(m and m.lower() in s.lower() for m in LEAKS)


#: Text without control characters or surrogates, never spelling a leak marker.
TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]), min_size=0, max_size=20
).filter(_clean_text)
#: Column names that canonicalise to no feature.
UNKNOWN_COLUMNS = TEXT.map(lambda s: f"x-{s}")


def good_value(column: str, numbers: bool = False) -> st.SearchStrategy:
    """An in-domain value of a feature, as JSON may carry it (numbers or numeric strings; only
    numbers when ``numbers``)."""
    if column in F.CATEGORY_CARDINALITY:
        codes = st.integers(0, F.CATEGORY_CARDINALITY[column] - 1)
        return st.one_of(codes, codes.map(float), *([] if numbers else [codes.map(str)]))
    if column == F.SEASON:
        return st.sampled_from(F.SEASON_VALUES).flatmap(
            lambda v: st.sampled_from([v, v + 4e-7, v - 4e-7, *([] if numbers else [repr(v)])])
        )
    return st.one_of(
        st.integers(0, 10**15),
        st.floats(0, 1e300, allow_nan=False, allow_infinity=False),
        # numbers: also past exact doubles, past int64 and past uint64
        *[st.integers(2**53, 2**64 + 2**12)]
        if numbers
        else [st.integers(0, 10**6).map(str), st.floats(0, 1e6, allow_nan=False).map(repr)],
    )


def bad_value(column: str, envelope: str) -> st.SearchStrategy:
    """A value the router must refuse in ``column`` (never one it would read as "missing")."""
    options = [
        st.sampled_from([Raw("Infinity"), Raw("-Infinity"), Raw("1e999"), Raw("-1e999")]),
        TEXT.map(lambda s: f"x{s}"),  # non-numeric string
        st.integers(400, 4000).map(lambda d: Raw("9" * d)),  # beyond float range (JSON allows it)
    ]
    if column in F.CATEGORY_CARDINALITY:
        n = F.CATEGORY_CARDINALITY[column]
        options += [
            st.integers(n, 10**30),
            st.integers(-(10**30), -1),
            st.integers(0, n - 2).map(lambda c: c + 0.5),
        ]
    elif column == F.SEASON:
        options.append(
            st.floats(-1e6, 1e6, allow_nan=False).filter(
                lambda v: min(abs(v - s) for s in F.SEASON_VALUES) > 1e-5
            )
        )
    else:
        options += [
            st.floats(-1e300, -1e-300, allow_nan=False),
            st.integers(-(10**30), -1),
        ]
    options.append(st.booleans())
    if envelope != "csv":  # in CSV these are just text
        options.append(st.dictionaries(TEXT, st.integers(), min_size=1, max_size=2))
        options.append(st.lists(st.integers(0, 5), max_size=3))
    return st.one_of(options)


@st.composite
def good_row(draw, envelope: str | None = None, numbers: bool = False) -> dict:
    """A row completing one or both feature sets, with in-domain values, mixed spellings and extras."""
    routes = draw(st.sampled_from([(F.NAIVE_BAYES,), (F.LOGISTIC_REGRESSION,), F.ROUTES]))
    row: dict = {}
    for route in routes:
        for column in F.ROUTE_FEATURES[route]:
            row[spell(column, draw(SPELLINGS))] = draw(good_value(column, numbers))
    if envelope != "csv":
        for name in draw(st.lists(UNKNOWN_COLUMNS, max_size=2, unique=True)):
            row[name] = draw(st.one_of(st.none(), st.integers(), TEXT, st.booleans()))
    return row


PARAMS = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "threshold": st.floats(0, 1),
            "model": st.just(F.AUTO),
        },
    ),
)

# JSON values of every type, nested a little (deep nesting has its own kind below).
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
    st.sampled_from([Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("1e999"), Raw("9" * 600)]),
)
JSON_ANY = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(TEXT, st.sampled_from(F.ALL_FEATURES)), inner, max_size=4),
    ),
    max_leaves=12,
)
ENVELOPE_KEYS = st.sampled_from(
    ["dataframe_records", "dataframe_split", "instances", "inputs", "params", "columns", "data", "x"]
)


@st.composite
def broken_request(draw) -> tuple[str | bytes, str]:
    """Anything from a near-valid request to junk; the answer must be 2xx or 4xx."""
    kind = draw(
        st.sampled_from(
            [
                "json_any",
                "envelope_any",
                "split_any",
                "mixed_rows",
                "raw_bytes",
                "bad_utf8",
                "csv_any",
                "type",
                "no_type",
                "huge_integer",
                "deep_nesting",
            ]
        )
    )
    if kind == "json_any":
        return dumps(draw(JSON_ANY)), JSON
    if kind == "envelope_any":
        keys = draw(st.lists(ENVELOPE_KEYS, min_size=0, max_size=3, unique=True))
        return dumps({k: draw(JSON_ANY) for k in keys}), JSON
    if kind == "split_any":
        split = {}
        # Column labels: strings, numbers, null, and JSON objects and arrays, which pandas cannot
        # hash (the router shows them by repr; see REGRESSIONS).
        if draw(st.booleans()):
            label = st.one_of(
                TEXT,
                st.sampled_from(F.ALL_FEATURES),
                st.integers(),
                st.none(),
                st.dictionaries(TEXT, st.integers(), max_size=2),
                st.lists(st.integers(), max_size=2),
            )
            split["columns"] = draw(st.lists(label, max_size=5))
        if draw(st.booleans()):
            split["data"] = draw(
                st.one_of(JSON_ANY, st.lists(st.lists(JSON_SCALARS, max_size=5), max_size=4))
            )
        if draw(st.booleans()):
            split["index"] = draw(st.lists(st.one_of(st.integers(), TEXT), max_size=4))
        if draw(st.booleans()):
            split[draw(TEXT)] = draw(JSON_SCALARS)
        return dumps({"dataframe_split": split}), JSON
    if kind == "mixed_rows":
        envelope = draw(st.sampled_from(ENVELOPES))
        rows = draw(
            st.lists(st.one_of(good_row(), st.dictionaries(UNKNOWN_COLUMNS, JSON_SCALARS)), max_size=5)
        )
        rows = [
            {k: draw(st.one_of(st.just(v), JSON_SCALARS)) if draw(st.booleans()) else v for k, v in r.items()}
            for r in rows
        ]
        params = draw(st.one_of(PARAMS, JSON_ANY, st.dictionaries(TEXT, JSON_SCALARS, max_size=2)))
        if envelope == "csv":
            return encode(rows, envelope)
        body, content_type = encode(rows, envelope, None)
        payload_params = dumps(params)
        return body[:-1] + f', "params": {payload_params}}}', content_type
    if kind == "raw_bytes":
        return draw(st.binary(max_size=300)), draw(st.sampled_from(SUPPORTED_TYPES))
    if kind == "bad_utf8":
        body, content_type = encode([draw(good_row())], draw(st.sampled_from(ENVELOPES)))
        raw = body.encode()
        at = draw(st.integers(0, len(raw)))
        junk = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xf8\x88\x80\x80\x80", b"\x80", SURROGATE]))
        return raw[:at] + junk + raw[at:], content_type
    if kind == "csv_any":
        lines = draw(st.lists(st.lists(st.one_of(TEXT, JSON_SCALARS.map(str)), max_size=5), max_size=5))
        return "\n".join(",".join(str(c) for c in line) for line in lines), CSV
    if kind == "huge_integer":  # over Python's 4,300-digit int parsing limit
        digits = draw(st.integers(4301, 20_000))
        column = draw(st.sampled_from(F.ALL_FEATURES))
        return f'{{"dataframe_records": [{{"{column}": {"9" * digits}}}]}}', JSON
    if kind == "deep_nesting":  # past the JSON parser's recursion limit
        depth = draw(st.integers(1_500, 50_000))
        key = draw(st.sampled_from(["inputs", "instances", "dataframe_records", "params"]))
        return f'{{"{key}": ' + "[" * depth + "]" * depth + "}", JSON
    body, _ = encode([draw(good_row())], draw(st.sampled_from(ENVELOPES[:-1])))
    return body, None if kind == "no_type" else draw(st.sampled_from(OTHER_TYPES))


# --------------------------------------------------------------------------------------------
# The fuzzers
# --------------------------------------------------------------------------------------------


def _check_predictions(
    response: requests.Response, rows: list[dict], params: dict | None, what: str, expected: pd.DataFrame
) -> None:
    assert response.status_code == 200, f"{what}: {response.text[:600]}"
    answered = response.json()["predictions"]
    out = pd.DataFrame(answered)
    assert len(out) == len(rows), what
    in_process = expected.astype({"prediction": str, "model": str}).to_dict("records")
    assert answered == in_process, f"answers differ from Router.predict in process; {what}"
    assert out.columns.tolist() == list(F.OUTPUT_COLUMNS), what
    assert set(out["prediction"]) <= set(F.LABELS.values()), what
    assert out["poisonous_probability"].between(0, 1).all(), what
    threshold = (params or {}).get("threshold", F.DEFAULT_THRESHOLD)
    poisonous = out["poisonous_probability"]
    assert ((out["prediction"] == "poisonous") == (poisonous >= threshold)).all(), what
    expected = poisonous.where(out["prediction"] == "poisonous", 1 - poisonous)
    assert (out["probability"] - expected).abs().max() < 1e-12, what
    for i, row in enumerate(rows):
        given_features = {F.canonical_name(k) for k in row}
        complete = [r for r in F.ROUTES if set(F.ROUTE_FEATURES[r]) <= given_features]
        assert out["model"][i] in complete, (what, i, row)


@settings(FUZZ, max_examples=300)
@given(data=st.data())
def test_fuzz_valid_inputs_are_answered_row_for_row(server, served_router, data):
    """In-domain rows of both feature sets, every envelope, mixed spellings -> 200, row for row,
    the same answers as the served model's Router in process."""
    rows = data.draw(st.lists(good_row(), min_size=1, max_size=12), label="rows")
    params = data.draw(PARAMS, label="params")
    csv_rows = [{k: v for k, v in row.items() if not k.startswith("x-")} for row in rows]
    for envelope in ENVELOPES:
        if envelope == "csv":
            body, content_type = encode(csv_rows, envelope)
            expected = served_router.predict(pd.read_csv(io.StringIO(body)))
        else:
            body, content_type = encode(rows, envelope, params)
            expected = served_router.predict(pd.DataFrame(rows), params)
        response = send(server, body, content_type)
        FIGURES["valid_bodies"] += 1
        what = f"{envelope}: {body[:600]}"
        _check_predictions(response, rows, None if envelope == "csv" else params, what, expected)
    FINISHED.add("valid")


def envelopes_for(value: object) -> tuple[str, ...]:
    """The envelopes that carry ``value`` into the router unchanged (see :func:`bad_value`)."""
    if isinstance(value, (dict, list)):
        return ENVELOPES[:-1]  # in CSV a dict or list is only text
    return ENVELOPES


@settings(FUZZ, max_examples=300)
@given(data=st.data())
def test_fuzz_one_bad_row_refuses_the_whole_batch(server, data):
    """Valid rows plus one invalid row at index i -> 400 naming row i, in every envelope."""
    route = data.draw(st.sampled_from(F.ROUTES), label="route")
    good = data.draw(st.lists(good_row("csv"), min_size=0, max_size=15), label="good")
    index = data.draw(st.integers(0, len(good)), label="index")
    bad = {c: data.draw(good_value(c)) for c in F.ROUTE_FEATURES[route]}
    column = data.draw(st.sampled_from(F.ROUTE_FEATURES[route]), label="column")
    how = data.draw(st.sampled_from(["value", "value", "null", "nan", "absent"]), label="how")
    if how == "value":
        bad[column] = data.draw(bad_value(column, "dataframe_records"), label="bad value")
    elif how == "null":
        bad[column] = None
    elif how == "nan":
        bad[column] = Raw("NaN")
    else:
        del bad[column]
    rows = [*good[:index], bad, *good[index:]]
    for envelope in envelopes_for(bad.get(column)):
        body, content_type = encode(rows, envelope)
        response = send(server, body, content_type)
        FIGURES["one_bad_row_bodies"] += 1
        what = f"{envelope} {how} {column}: {response.text[:400]}\nbody: {body[:600]}"
        assert response.status_code == 400, what
        message = error_message(response)
        assert re.match(rf"Invalid input: row {index}\b", message), f"expected row {index}: {message[:400]}"
        assert "predictions" not in response.json()
    FINISHED.add("one_bad_row")


@settings(FUZZ, max_examples=2600)
@given(request=broken_request())
def test_fuzz_anything_gets_2xx_or_4xx_never_5xx(server, request):
    """Wrong types, junk, broken envelopes, invalid UTF-8, wrong content types: never a 5xx."""
    body, content_type = request
    send(server, body, content_type)
    FIGURES["broken_bodies"] += 1
    FINISHED.add("broken")


def _big_rows(n: int) -> list[list[float]]:
    nb, lr = F.example_rows()
    return [
        [*nb.values(), *lr.values()] if i % 3 else [*nb.values(), None, None, None, None] for i in range(n)
    ]


def test_large_bodies(server, record_property):
    """A few bodies of several MB: valid ones are answered in full, bad ones refused cleanly."""
    columns = list(F.ALL_FEATURES)
    n = 40_000
    rows = _big_rows(n)
    split = json.dumps({"dataframe_split": {"columns": columns, "data": rows}})
    assert len(split) > 2_000_000
    response = send(server, split, JSON)
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == n

    csv = pd.DataFrame(rows, columns=columns).to_csv(index=False)
    response = send(server, csv, CSV)
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == n

    records = [dict(zip(columns, r, strict=True)) for r in rows]
    records[-1]["cap-shape"] = 99
    response = send(server, json.dumps({"dataframe_records": records}), JSON)
    assert response.status_code == 400
    assert error_message(response).startswith(f"Invalid input: row {n - 1}, column 'cap-shape': got 99")

    huge_cell = dumps(
        {"dataframe_records": [dict(zip(columns, rows[0], strict=True)) | {"stem-color": "x" * 3_000_000}]}
    )
    response = send(server, huge_cell, JSON)
    assert response.status_code == 400
    assert "row 0, column 'stem-color'" in error_message(response)
    assert len(response.text) < 10_000, "the message must not echo a 3 MB value"

    junk = "{" + "x" * 3_000_000
    response = send(server, junk, JSON)
    assert response.status_code == 400
    # MLflow echoes the whole undecodable body in its message; the guard cuts it short.
    assert len(response.content) < 10_000
    record_property("invalid_json_3mb_answer_bytes", len(response.content))

    limit = settings_module.max_request_bytes()
    over = json.dumps({"dataframe_split": {"columns": columns, "data": _big_rows(limit // 40)}})
    assert len(over) > limit
    response = send(server, over, JSON)
    assert response.status_code == 413
    assert f"the limit is {limit}" in response.json()["message"]
    assert requests.get(f"{server}/ping", timeout=10).status_code == 200
    FIGURES["large_bodies"] += 6
    FINISHED.add("large")


def test_unsupported_content_types_get_415(server):
    body, _ = encode([F.example_rows()[0]], "dataframe_records")
    for content_type in OTHER_TYPES:
        assert send(server, body, content_type).status_code == 415, content_type


NB_ROW, LR_ROW = F.example_rows()

#: Inputs once answered wrongly, by the router (fixed in router_model.router) or by MLflow's own
#: scoring server (fixed by router_model.server_guard): body, content type, the status it must get.
REGRESSIONS = {
    # A JSON object as a dataframe_split column label: pandas cannot hash it; MLflow's
    # f"Failed to predict data '{data}'" then raised TypeError -> 500.
    "object_column_label": ('{"dataframe_split": {"columns": [{"a": 1}], "data": [[1]]}}', JSON, 400),
    # Same with a second column: the router's own has_duplicates raised TypeError -> MLflow's
    # "unexpected error" 400 with a stack_trace of the router's code.
    "object_column_labels_traceback": (
        '{"dataframe_split": {"columns": [{"a": 1}, "cap-diameter"], "data": [[1, 2]]}}',
        JSON,
        400,
    ),
    # A lone surrogate (invalid UTF-8 that json.loads decodes with surrogatepass) in an inputs
    # record: as_frame's pd.DataFrame(list of dicts) raised UnicodeEncodeError -> MLflow's
    # "unexpected error" 400 with a stack_trace of the router's code.
    "lone_surrogate_in_inputs_record_key": (
        b'{"inputs": [{"'
        + SURROGATE
        + b'cap-diameter": 1, "cap-shape": 0, "gill-attachment": 0, "gill-color": 0}]}',
        JSON,
        400,
    ),
    "lone_surrogate_in_inputs_record_value": (
        b'{"inputs": [{"cap-diameter": "1'
        + SURROGATE
        + b'", "cap-shape": 0, "gill-attachment": 0, "gill-color": 0}]}',
        JSON,
        400,
    ),
    # as_frame's single-record branch kept MLflow's 0-d arrays: a valid record was refused.
    "inputs_single_record_of_scalars": (json.dumps({"inputs": NB_ROW}), JSON, 200),
    # MLflow 3.17: content_type.split(";") on None -> AttributeError -> 500.
    "no_content_type": (json.dumps({"dataframe_records": [NB_ROW]}), None, 415),
    # MLflow 3.17: json.loads raises ValueError (int max str digits, 4300), uncaught -> 500.
    "integer_over_4300_digits": ('{"dataframe_records": [{"cap-diameter": ' + "1" * 4301 + "}]}", JSON, 400),
    # MLflow 3.17: json.loads raises RecursionError on deep nesting, uncaught -> 500.
    "nesting_10000_deep": ('{"inputs": ' + "[" * 10_000 + "]" * 10_000 + "}", JSON, 400),
    # MLflow 3.17: its CSV parser's 400 carried a stack_trace (the fuzzer's main loop checks
    # every CSV/Parquet body for it too).
    "malformed_csv": ('a,b\n"unterminated', CSV, 400),
    "malformed_parquet": (b"PAR1 not parquet", PARQUET, 400),
    # MLflow's instances/inputs columns are NumPy arrays: a boolean among integers became 1 and
    # was scored (it was a strict xfail here); the guard hands MLflow records instead.
    "boolean_among_integers_in_instances": (
        json.dumps({"instances": [NB_ROW, NB_ROW | {"gill-color": True}]}),
        JSON,
        400,
    ),
    "boolean_among_integers_in_inputs_columns": (
        json.dumps({"inputs": {c: [v, True if c == "gill-color" else v] for c, v in NB_ROW.items()}}),
        JSON,
        400,
    ),
    # json.loads keeps the last of a duplicated key: scored the second cap-shape silently.
    "duplicated_json_key": (
        '{"dataframe_records": [{"cap-shape": 1, "cap-shape": 2, "cap-diameter": 3, '
        '"gill-attachment": 1, "gill-color": 1}]}',
        JSON,
        400,
    ),
    # pandas renamed the copy cap-shape.1 and the router scored the first value silently.
    "duplicated_csv_header": (
        "cap-shape,cap-shape,cap-diameter,gill-attachment,gill-color\n1,2,3,1,1\n",
        CSV,
        400,
    ),
    # pandas repeated the single data row for each index label: 3 answers for 1 row.
    "split_index_longer_than_data": (
        json.dumps(
            {
                "dataframe_split": {
                    "columns": list(NB_ROW),
                    "data": [list(NB_ROW.values())],
                    "index": [0, 1, 2],
                }
            }
        ),
        JSON,
        400,
    ),
}

#: Valid bodies once answered with fewer or more predictions than rows: body, rows sent.
ROW_COUNT_REGRESSIONS = {
    # MLflow made instances records into columns: one merged answer for two rows...
    "instances_nb_then_lr": (json.dumps({"instances": [NB_ROW, LR_ROW]}), 2),
    # ... and a 400 (columns of different lengths) for three.
    "instances_lr_nb_lr": (json.dumps({"instances": [LR_ROW, NB_ROW, LR_ROW]}), 3),
}


@pytest.mark.parametrize("case", list(REGRESSIONS))
def test_fixed_regressions(server, case):
    body, content_type, expected = REGRESSIONS[case]
    response = send(server, body, content_type)  # also: JSON, no stack_trace, no leak
    assert response.status_code == expected, response.text[:300]


@pytest.mark.parametrize("case", list(ROW_COUNT_REGRESSIONS))
def test_fixed_row_count_regressions(server, served_router, case):
    body, rows = ROW_COUNT_REGRESSIONS[case]
    records = json.loads(body)["instances"]
    response = send(server, body, JSON)
    _check_predictions(response, records, None, case, served_router.predict(records))
    assert len(response.json()["predictions"]) == rows


# --------------------------------------------------------------------------------------------
# Differential: the guard's fast path against MLflow's own path, in this process
# --------------------------------------------------------------------------------------------


class BothPaths:
    """The two halves of :func:`router_model.server_guard.guard` around the served model.

    ``fast`` is what the server tries first (``None`` when it declines the body); ``slow`` is
    MLflow's own path behind the guard's checks, which answers everything.
    """

    def __init__(self, model: object) -> None:
        from mlflow.pyfunc import scoring_server

        from router_model import server_guard

        wrapped = server_guard.guard(
            inspect.unwrap(scoring_server.invocations),
            scoring_server.InvocationsResponse,
            settings_module.DEFAULT_MAX_REQUEST_BYTES,
        )
        self._fast = getattr(wrapped, server_guard._FAST)
        self._slow = getattr(wrapped, server_guard._SLOW)
        self.model = model
        self.schema = model.metadata.get_input_schema()

    def fast(self, data: bytes, content_type: str | None) -> tuple[int, bytes] | None:
        result = self._fast(data, content_type, self.model, self.schema)
        if result is None:
            return None
        answer = result.response
        return result.status, answer if isinstance(answer, bytes) else answer.encode()

    def slow(self, data: bytes, content_type: str | None) -> tuple[int, bytes]:
        from mlflow.exceptions import MlflowException

        try:
            result = self._slow(data, content_type, self.model, self.schema)
        except MlflowException as err:  # what MLflow's handler answers
            return err.get_http_status_code(), err.serialize_as_json().encode()
        return result.status, result.response.encode()


@pytest.fixture(scope="module")
def both_paths(registered):
    """:class:`BothPaths` for the registered router, with the guard's serialiser in MLflow's module
    (as inside the server)."""
    import mlflow.pyfunc
    from mlflow.pyfunc import scoring_server

    from router_model import server_guard

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(scoring_server, "predictions_to_json", server_guard.predictions_to_json)
        yield BothPaths(mlflow.pyfunc.load_model(registered["model_uri"]))


def differential(paths: BothPaths, body: bytes | str, content_type: str | None) -> bool:
    """Send ``body`` both ways; where the fast path answers, status and bytes must be MLflow's.

    Returns:
        Whether the fast path answered.
    """
    data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    fast = paths.fast(data, content_type)
    FIGURES["differential_bodies"] += 1
    if fast is None:
        return False
    FIGURES["differential_fast"] += 1
    slow = paths.slow(data, content_type)
    assert fast == slow, (
        f"fast path {fast[0]} {fast[1][:300]!r} != {slow[0]} {slow[1][:300]!r}; body {data[:400]!r}"
    )
    return True


def _plain_params(params: dict | None) -> bool:
    """No params, or a threshold in [0, 1] written as a float."""
    if not params:
        return True
    threshold = params.get("threshold")
    return set(params) == {"threshold"} and isinstance(threshold, float) and 0 <= threshold <= 1


def _plain_numbers(rows: list[dict]) -> bool:
    """Whether a valid body is what the fast path must take: numbers in every feature column and
    no ':' in any string (the fast path counts them to rule out a duplicated key)."""
    for row in rows:
        for key, value in row.items():
            if ":" in key or (isinstance(value, str) and ":" in value):
                return False
            if key.startswith("x-"):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or isinstance(value, Raw):
                return False
    return True


DIFF_PARAMS = st.one_of(
    PARAMS,
    st.fixed_dictionaries(
        {},
        optional={
            "threshold": st.one_of(st.integers(-1, 2), st.floats(-0.5, 1.5), st.booleans(), TEXT),
            "model": st.one_of(st.sampled_from([F.AUTO, *F.ROUTES, "nope"]), st.none(), st.integers()),
            "other": JSON_SCALARS,
        },
    ),
)
JSON_ENVELOPES = ENVELOPES[:-1]


@settings(FUZZ, max_examples=300)
@given(data=st.data())
def test_differential_valid_bodies(both_paths, data):
    """Valid rows in every JSON form, with params of every kind: where the fast path answers, it
    answers MLflow's bytes; a body of plain numbers (and valid params) it always answers."""
    numbers = data.draw(st.booleans(), label="numbers only")
    rows = data.draw(st.lists(good_row(numbers=numbers), min_size=1, max_size=12), label="rows")
    params = data.draw(DIFF_PARAMS, label="params")
    for envelope in JSON_ENVELOPES:
        body, content_type = encode(rows, envelope, params)
        took = differential(both_paths, body, content_type)
        if _plain_numbers(rows) and _plain_params(params):
            assert took, f"the fast path declined a plain body: {body[:600]}"


@settings(FUZZ, max_examples=300)
@given(data=st.data())
def test_differential_one_bad_row(both_paths, data):
    """Valid rows and one invalid row: the fast path leaves every such body to MLflow's path."""
    route = data.draw(st.sampled_from(F.ROUTES), label="route")
    good = data.draw(st.lists(good_row(numbers=True), min_size=0, max_size=8), label="good")
    index = data.draw(st.integers(0, len(good)), label="index")
    bad = {c: data.draw(good_value(c, numbers=True)) for c in F.ROUTE_FEATURES[route]}
    column = data.draw(st.sampled_from(F.ROUTE_FEATURES[route]), label="column")
    how = data.draw(st.sampled_from(["value", "value", "null", "absent", "twice"]), label="how")
    if how == "value":
        bad[column] = data.draw(bad_value(column, "dataframe_records"), label="bad value")
    elif how == "null":
        bad[column] = None
    elif how == "absent":
        del bad[column]
    else:  # the same feature under a second spelling, with another value
        bad[column.replace("-", "_") if "-" in column else column.upper()] = data.draw(
            good_value(column, numbers=True)
        )
    rows = [*good[:index], bad, *good[index:]]
    for envelope in JSON_ENVELOPES:
        body, content_type = encode(rows, envelope)
        status, _ = both_paths.slow(body.encode("utf-8", "surrogatepass"), content_type)
        took = differential(both_paths, body, content_type)
        assert not took or status == 200  # a same value twice is valid; any refusal is MLflow's


@settings(FUZZ, max_examples=1500)
@given(request=broken_request())
def test_differential_anything(both_paths, request):
    """Junk, near-valid envelopes, odd params, invalid UTF-8: the fast path answers as MLflow's path
    or not at all."""
    differential(both_paths, *request)


DOCUMENTED_FORMS = {
    "dataframe_records": {"dataframe_records": [NB_ROW, LR_ROW]},
    "dataframe_split": {
        "dataframe_split": {"columns": [*NB_ROW, *LR_ROW], "data": [[*NB_ROW.values(), *LR_ROW.values()]]}
    },
    "dataframe_split_with_index": {
        "dataframe_split": json.loads(pd.DataFrame([NB_ROW, LR_ROW]).to_json(orient="split"))
    },
    "instances_records": {"instances": [NB_ROW, LR_ROW]},
    "instances_columns": {"instances": {c: [v, v] for c, v in LR_ROW.items()}},
    "inputs_records": {"inputs": [LR_ROW, NB_ROW]},
    "inputs_columns": {"inputs": {c: [v] for c, v in NB_ROW.items()}},
    "inputs_one_record": {"inputs": NB_ROW},
    "with_params": {
        "dataframe_records": [NB_ROW | LR_ROW],
        "params": {"threshold": 0.9, "model": F.NAIVE_BAYES},
    },
    "integer_threshold": {"dataframe_records": [LR_ROW], "params": {"threshold": 1}},
    "unknown_column": {"dataframe_records": [LR_ROW | {"id": "m-17", "note": None}]},
}


@pytest.mark.parametrize("form", list(DOCUMENTED_FORMS))
def test_differential_documented_forms_take_the_fast_path(both_paths, form):
    """Every documented JSON form of plain numbers is answered by the fast path, with MLflow's bytes."""
    assert differential(both_paths, json.dumps(DOCUMENTED_FORMS[form]), JSON), "the fast path declined it"


@pytest.mark.parametrize("case", list(REGRESSIONS) + list(ROW_COUNT_REGRESSIONS))
def test_differential_regressions(both_paths, case):
    """Each input once answered wrongly: the fast path answers it as MLflow's path does, or leaves it."""
    body, content_type = (
        REGRESSIONS[case][:2] if case in REGRESSIONS else (ROW_COUNT_REGRESSIONS[case][0], JSON)
    )
    differential(both_paths, body, content_type)


# --------------------------------------------------------------------------------------------
# After the fuzzing
# --------------------------------------------------------------------------------------------


def test_server_still_healthy_and_figures(server, record_property):
    """Runs last: the server still answers /ping and a valid request; report the figures."""
    assert requests.get(f"{server}/ping", timeout=10).status_code == 200
    response = send(server, json.dumps({"dataframe_records": F.example_rows()}), JSON)
    assert response.status_code == 200
    assert [p["model"] for p in response.json()["predictions"]] == list(F.ROUTES)
    for key, value in sorted(FIGURES.items()):
        record_property(key, value)
    _log.warning(
        "fuzz figures: %d bodies; 2xx %d, 4xx %d (413 %d, 415 %d), 5xx %d",
        FIGURES["bodies"],
        FIGURES["status_2xx"],
        FIGURES["status_4xx"],
        FIGURES["status_413"],
        FIGURES["status_415"],
        FIGURES["status_5xx"],
    )
    short = {
        name: FIGURES[f"{name}_bodies"] for name in FINISHED if FIGURES[f"{name}_bodies"] < MIN_BODIES[name]
    }
    assert not short, f"fuzzers sent fewer bodies than their minimum {MIN_BODIES}: {short}"
