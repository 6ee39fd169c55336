"""Batch scoring of files: formats, chunking, bad rows (fail or mark), and nothing left half-written."""

import io
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from router_model import features as F
from router_model import tables
from router_model.registry import load_router
from router_model.scoring import ScoringError, score_file, score_table
from router_model.settings import DEFAULT_CHUNK_ROWS as CHUNK_ROWS


@pytest.fixture(scope="module")
def rows(registered):
    """Mixed rows: both sets, NB only, LR only, with an id column to keep."""
    frame = pd.read_csv(registered["data"]["path"]).drop(columns=["class"]).iloc[:300].reset_index(drop=True)
    frame.loc[100:199, list(F.LR_FEATURES)] = np.nan
    frame.loc[200:299, list(F.NB_FEATURES)] = np.nan
    return frame.assign(id=range(len(frame)))


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
def test_formats_round_trip_in_small_chunks(rows, tmp_path, suffix):
    src = tmp_path / f"in{suffix}"
    {".csv": rows.to_csv, ".parquet": rows.to_parquet, ".json": rows.to_json}[suffix](
        src, **({"orient": "records"} if suffix == ".json" else {"index": False})
    )
    out = tmp_path / f"out{suffix}"
    assert score_file(src, out, chunk_rows=64, quiet=True) == len(rows)
    scored = {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".json": pd.read_json}[suffix](out)
    assert scored["id"].tolist() == list(range(len(rows)))
    expected = score_table(src, quiet=True)
    np.testing.assert_allclose(scored["poisonous_probability"], expected["poisonous_probability"], rtol=1e-9)
    assert scored["model"].astype(str).tolist()[99:101] == [expected["model"][99], F.NAIVE_BAYES]
    assert scored["model"].astype(str).tolist()[-1] == F.LOGISTIC_REGRESSION


def test_fail_names_the_file_row_and_leaves_no_output(rows, tmp_path):
    bad = rows.astype(object)
    bad.loc[250, "stem-color"] = 40
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    bad.to_csv(src, index=False)
    with pytest.raises(ScoringError, match=r"data row 250, column 'stem-color': got 40"):
        score_file(src, out, chunk_rows=64, quiet=True)
    assert not out.exists()
    assert not list(tmp_path.glob("*.partial"))


def test_mark_scores_good_rows_and_explains_bad_ones(rows, tmp_path):
    bad = rows.astype(object)
    bad.loc[5, "cap-shape"] = "bell"
    bad.loc[150, list(F.NB_FEATURES)] = np.nan  # LR features are gone already: neither set
    bad.loc[260, "season"] = 7.0
    src, out = tmp_path / "in.csv", tmp_path / "out.parquet"
    bad.to_csv(src, index=False)
    assert score_file(src, out, chunk_rows=64, on_error="mark", quiet=True) == len(rows)
    scored = pd.read_parquet(out)
    flagged = scored.index[scored["error"].notna()].tolist()
    assert flagged == [5, 150, 260]
    assert "column 'cap-shape': got the string 'bell'" in scored.loc[5, "error"]
    assert scored.loc[150, "error"].startswith("completes neither feature set")
    assert "column 'season': got 7" in scored.loc[260, "error"]
    assert scored.loc[flagged, "prediction"].isna().all()
    assert scored.loc[flagged, "poisonous_probability"].isna().all()
    good = scored.drop(index=flagged)
    assert good["prediction"].isin(["edible", "poisonous"]).all()


def test_unknown_on_error_is_refused(rows, tmp_path):
    with pytest.raises(ScoringError, match=r"on_error must be one of \['fail', 'mark'\]"):
        score_table(tmp_path / "x.csv", on_error="skip")


def test_safe_threshold_scores_each_row_at_its_routes_recorded_value(rows, registered, tmp_path):
    import mlflow

    src = tmp_path / "in.csv"
    rows.to_csv(src, index=False)
    safe = mlflow.pyfunc.load_model(registered["model_uri"]).model_config["safe_threshold_1pct"]
    out = tmp_path / "out.csv"
    score_file(src, out, params={"threshold": "safe"}, quiet=True)
    scored = pd.read_csv(out)
    for route, threshold in safe.items():
        part = scored[scored["model"].astype(str) == route]
        assert len(part) > 0
        expected = np.where(part["poisonous_probability"] >= threshold, "poisonous", "edible")
        np.testing.assert_array_equal(part["prediction"].astype(str), expected)


#: Cells a file may hold, chosen to catch any re-typing of the input columns: leading zeros,
#: exponents, integers in a column with blanks, missing markers, quotes, padding, full-precision
#: floats. ``route`` is where the row must go (``NA`` and ``null`` in a feature mean "not given").
PASS_THROUGH = [
    # id,   note,        big,   NB features (cap-diameter, cap-shape, gill-attachment, gill-color), LR features, route
    ("007", "plain", "1e5", "1520,2,2,10", ",,,", F.NAIVE_BAYES),
    ("008", '"a,b"', "1520", "1461,02,2,10", ",,,", F.NAIVE_BAYES),
    ("009", "", "", ",,,", "3.8074667544799388,1545,11,1.8042727086281731", F.LOGISTIC_REGRESSION),
    ("010", "NA", "1520", "1e3,2,2,10", "NA,null,NA,", F.NAIVE_BAYES),
    ("011", " x ", "-0", "1372,6,2,10", "3.81,1545,11,0.8884502877862838", None),
    ("012", "é", "1.0", "NA,2,2,10", "0,12, 11 ,0.027372133055605714", F.LOGISTIC_REGRESSION),
    ("013", "null", "", "1372,2,2,10", ",,,", F.NAIVE_BAYES),
]
PASS_THROUGH_HEADER = f"id,note,big,{','.join(F.NB_FEATURES)},{','.join(F.LR_FEATURES)}"


@pytest.mark.parametrize("output", ["out.csv", "out.csv.gz"])
def test_input_columns_pass_through_unchanged_at_any_chunk_size(registered, tmp_path, output):
    """The input columns are the input's text, byte for byte, however the file is chunked."""
    lines = [PASS_THROUGH_HEADER] + [",".join(row[:5]) for row in PASS_THROUGH * 3]
    src = tmp_path / "in.csv"
    src.write_text("\n".join(lines) + "\n")
    written = {}
    for chunk_rows in (1, 2, 7, CHUNK_ROWS):
        out = tmp_path / f"{chunk_rows}-{output}"
        assert score_file(src, out, chunk_rows=chunk_rows, quiet=True) == len(lines) - 1
        with tables.open_text(out) as handle:
            written[chunk_rows] = handle.read()
    assert len(set(written.values())) == 1, "the output depends on the chunk size"
    out_lines = written[CHUNK_ROWS].splitlines()
    assert out_lines[0] == f"{PASS_THROUGH_HEADER},{','.join(F.OUTPUT_COLUMNS)}"
    for given, scored in zip(lines[1:], out_lines[1:], strict=True):
        assert scored.startswith(given + ",")
    routes = pd.read_csv(io.StringIO(written[CHUNK_ROWS]), keep_default_na=False)["model"]
    preferred = load_router(registered["model_uri"]).preferred  # for rows with both feature sets
    assert routes.tolist() == [row[5] or preferred for row in PASS_THROUGH * 3]


def test_parquet_output_types_are_fixed_before_the_first_chunk(registered, tmp_path):
    """A bad row, or the first text in a column, in a later chunk must not break the schema."""
    nb = ",".join(str(F.example_rows()[0][c]) for c in F.NB_FEATURES)
    src = tmp_path / "in.csv"
    src.write_text(
        f"note,{','.join(F.NB_FEATURES)}\n,{nb}\n,{nb}\nhello,{nb.replace(',2,', ',x,', 1)}\n,{nb}\n"
    )
    out = tmp_path / "out.parquet"
    assert score_file(src, out, chunk_rows=2, on_error="mark", quiet=True) == 4
    table = pq.read_table(out)
    assert {f.name: str(f.type) for f in table.schema if f.name not in F.NB_FEATURES} == {
        "note": "large_string",
        "prediction": "string",
        "probability": "double",
        "poisonous_probability": "double",
        "model": "string",
        "error": "string",
    }
    assert table["note"].to_pylist() == ["", "", "hello", ""]
    assert table["cap-shape"].to_pylist() == ["2", "2", "x", "2"]
    errors = table["error"].to_pylist()
    assert errors[:2] == [None, None] and errors[3] is None
    assert "column 'cap-shape': got the string 'x'" in errors[2]
    assert table["prediction"].to_pylist()[2] is None


def test_parquet_columns_keep_their_types_in_every_output(registered, tmp_path):
    """An integer column with a null in a later chunk stays integer, in Parquet and in CSV."""
    nb = F.example_rows()[0]
    src = tmp_path / "in.parquet"
    pq.write_table(
        pa.table(
            {
                **{c: pa.array([nb[c]] * 4, pa.int64()) for c in F.NB_FEATURES},
                "count": pa.array([1520, 7, None, 9], pa.int64()),
                "x": pa.array([3.8074667544799388, None, 0.1, 1e5]),
            }
        ),
        src,
    )
    assert score_file(src, tmp_path / "out.parquet", chunk_rows=2, quiet=True) == 4
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.schema.field("count").type == pa.int64()
    assert table["count"].to_pylist() == [1520, 7, None, 9]
    assert table["x"].to_pylist() == [3.8074667544799388, None, 0.1, 1e5]
    assert score_file(src, tmp_path / "out.csv", chunk_rows=2, quiet=True) == 4
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert [line.split(",")[4:6] for line in lines[1:]] == [
        ["1520", "3.8074667544799388"],
        ["7", ""],
        ["", "0.1"],
        ["9", "100000.0"],
    ]


def test_json_output_keeps_every_float_exact(registered, tmp_path):
    """orjson writes the shortest text that reads back as the same float (pandas kept 15 digits)."""
    lr = F.example_rows()[1] | {"stem-height": 3.8074667544799388}
    src = tmp_path / "in.json"
    src.write_text(json.dumps([lr | {"id": 1, "x": 0.1 + 0.2}, lr | {"id": None, "x": 1 / 3}]))
    out = tmp_path / "out.json"
    assert score_file(src, out, quiet=True) == 2
    records = json.loads(out.read_text())
    expected = score_table(src, quiet=True)
    assert [r["stem-height"] for r in records] == [3.8074667544799388] * 2
    assert [r["x"] for r in records] == [0.1 + 0.2, 1 / 3]
    assert [r["id"] for r in records] == [1, None] and isinstance(records[0]["id"], int)
    for column in ("probability", "poisonous_probability"):
        assert [r[column] for r in records] == expected[column].tolist()


@pytest.mark.parametrize("suffix", [".csv.gz", ".csv.bz2", ".json.gz", ".json.xz"])
def test_compressed_output_is_compressed_and_reads_back(rows, tmp_path, suffix):
    src = tmp_path / "in.csv"
    rows.to_csv(src, index=False)
    out = tmp_path / f"out{suffix}"
    assert score_file(src, out, chunk_rows=64, quiet=True) == len(rows)
    assert out.read_bytes()[:3] in (b"\x1f\x8b\x08", b"BZh", b"\xfd7z")  # gzip, bzip2, xz magic
    # pandas decompresses by the name
    scored = pd.read_csv(out) if suffix.startswith(".csv") else pd.read_json(out, precise_float=True)
    assert scored["id"].tolist() == list(range(len(rows)))
    expected = score_table(src, quiet=True)
    np.testing.assert_array_equal(scored["poisonous_probability"], expected["poisonous_probability"])
    # ... and the project's own reader takes it as input.
    again = tables.read_table(out)
    np.testing.assert_array_equal(again["poisonous_probability"], expected["poisonous_probability"])


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("nodir/out.csv", r"output folder not found: .*nodir$"),
        (".", r"output .* is a folder; expected a file name ending \.csv, \.parquet, \.json"),
        ("out.parquet.gz", r"Parquet files compress their own data; name it out\.parquet"),
    ],
)
def test_an_output_that_cannot_be_written_is_refused_before_scoring(rows, tmp_path, output, message):
    src = tmp_path / "in.csv"
    rows.to_csv(src, index=False)
    with pytest.raises(ScoringError, match=message):
        score_file(src, tmp_path / output, quiet=True)
    assert not list(tmp_path.rglob("*.partial"))


def test_two_spellings_that_disagree_are_named_with_plain_numbers(registered, tmp_path):
    src = tmp_path / "in.csv"
    lr = F.example_rows()[1]
    src.write_text(
        f"stem_height,{','.join(F.LR_FEATURES)}\n341,{','.join(str(lr[c]) for c in F.LR_FEATURES)}\n"
    )
    with pytest.raises(
        ScoringError, match=r"'stem_height' and 'stem-height' .* different values \(341 and 3\.81\)$"
    ):
        score_table(src, quiet=True)
