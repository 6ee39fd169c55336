"""One reader for training files and files to score: formats, JSON shapes, chunks and clear errors."""

import json

import numpy as np
import pandas as pd
import pytest

from router_model import data, scoring, tables
from router_model import features as F


@pytest.fixture
def rows():
    nb, lr = F.example_rows()
    return pd.DataFrame([nb | dict.fromkeys(F.LR_FEATURES), dict.fromkeys(F.NB_FEATURES) | lr] * 5)


WRITERS = {
    "csv": lambda frame, path: frame.to_csv(path, index=False),
    "parquet": lambda frame, path: frame.to_parquet(path, index=False),
    "json-records": lambda frame, path: frame.to_json(path, orient="records"),
    "json-dataframe_records": lambda frame, path: path.write_text(
        json.dumps({"dataframe_records": json.loads(frame.to_json(orient="records"))})
    ),
    "json-dataframe_split": lambda frame, path: path.write_text(
        json.dumps({"dataframe_split": json.loads(frame.to_json(orient="split", index=False))})
    ),
}


@pytest.mark.parametrize("kind", list(WRITERS))
def test_every_format_reads_back_the_same_rows_whole_and_in_chunks(rows, tmp_path, kind):
    path = tmp_path / f"rows.{kind.split('-')[0]}"
    WRITERS[kind](rows, path)
    whole = tables.read_table(path)
    chunks = list(tables.iter_table(path, chunk_rows=3))
    assert len(chunks) == (1 if kind.startswith("json") else 4)
    chunked = pd.concat(chunks, ignore_index=True)
    for frame in (whole, chunked):
        assert list(frame.columns) == list(rows.columns)
        np.testing.assert_allclose(frame.to_numpy(float), rows.to_numpy(float))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.json", "{not json", r"bad\.json is not valid JSON: Expecting property name"),
        ("obj.json", '{"a": 1}', r"obj\.json: expected a list of records, or a dataframe_records"),
        ("nums.json", "[1, 2, 3]", r"nums\.json: expected a list of records"),
        ("split.json", '{"dataframe_split": {"columns": ["a"], "data": [[1, 2]]}}', r"split\.json: "),
        ("bad.parquet", "PAR1 this is not parquet", r"cannot read .*bad\.parquet as Parquet: "),
        ("bad.csv", b"\xff\xfe\x00garbage\n\x00", r"cannot read .*bad\.csv as CSV: "),
    ],
)
def test_unreadable_files_name_the_file_and_the_reason(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(tables.TableError, match=message):
        tables.read_table(path)
    with pytest.raises(tables.TableError, match=message):
        list(tables.iter_table(path))
    # Each caller keeps its own error type, and the same message.
    with pytest.raises(data.DataError, match=message):
        data.read_table(path)
    with pytest.raises(scoring.ScoringError, match=message):
        list(scoring.read_chunks(path))


def test_missing_files_are_named_by_each_caller(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(tables.TableError, match=r"file not found: .*nope\.csv"):
        tables.read_table(missing)
    with pytest.raises(data.DataError, match=r"data file not found: .*nope\.csv"):
        data.read_table(missing)
    with pytest.raises(scoring.ScoringError, match=r"input file not found: .*nope\.csv"):
        list(scoring.read_chunks(missing))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.csv", ".csv"),
        ("a.PARQUET", ".parquet"),
        ("a.json", ".json"),
        ("a.txt", ".csv"),
        ("a", ".csv"),
        ("a.csv.gz", ".csv"),
        ("a.JSON.bz2", ".json"),
        ("a.gz", ".csv"),
    ],
)
def test_format_comes_from_the_extension(name, expected):
    assert tables.table_format(name) == expected


def test_count_rows_reads_parquet_metadata_only(rows, tmp_path):
    rows.to_parquet(tmp_path / "r.parquet", index=False)
    rows.to_csv(tmp_path / "r.csv", index=False)
    assert tables.count_rows(tmp_path / "r.parquet") == len(rows)
    assert tables.count_rows(tmp_path / "r.csv") is None


#: A feature given twice, exactly: pandas would read the CSV's second copy as 'cap-shape.1' (and
#: score the first), a JSON object keeps the last.
COLUMNS_TWICE = ["cap-shape", "cap-diameter", "cap-shape"]


def _repeated_parquet(path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table([pa.array([2]), pa.array([1372]), pa.array([5])], names=COLUMNS_TWICE), path)


REPEATED = {
    "header.csv": lambda path: path.write_text(",".join(COLUMNS_TWICE) + "\n2,1372,5\n"),
    "header.csv.gz": lambda path: pd.DataFrame([[2, 1372, 5]], columns=COLUMNS_TWICE).to_csv(
        path, index=False
    ),
    "records.json": lambda path: path.write_text('[{"cap-shape": 2, "cap-diameter": 1372, "cap-shape": 5}]'),
    "split.json": lambda path: path.write_text(
        json.dumps({"dataframe_split": {"columns": COLUMNS_TWICE, "data": [[2, 1372, 5]]}})
    ),
    "fields.parquet": _repeated_parquet,
}


@pytest.mark.parametrize("name", list(REPEATED))
def test_a_column_given_twice_is_refused_by_name(tmp_path, name):
    path = tmp_path / name
    REPEATED[name](path)
    message = r"column\(s\) \['cap-shape'\] given more than once"
    with pytest.raises(tables.TableError, match=message):
        tables.read_table(path)
    with pytest.raises(tables.TableError, match=message):
        list(tables.iter_table(path, as_given=True))
    with pytest.raises(data.DataError, match=message):
        data.read_table(path)
    with pytest.raises(scoring.ScoringError, match=message):
        list(scoring.read_chunks(path))


def test_two_spellings_of_one_column_are_not_a_repeat(tmp_path):
    path = tmp_path / "spellings.csv"
    path.write_text("stem_height,stem-height\n3.5,3.5\n")
    assert tables.read_table(path).columns.tolist() == ["stem_height", "stem-height"]


@pytest.mark.parametrize("suffix", [".csv.gz", ".csv.bz2", ".json.gz", ".json.xz"])
def test_compressed_csv_and_json_read_back_the_same_rows(rows, tmp_path, suffix):
    path = tmp_path / f"rows{suffix}"
    if suffix.startswith(".csv"):
        rows.to_csv(path, index=False)  # pandas compresses by the extension
    else:
        rows.to_json(path, orient="records")
    assert tables.table_format(path) == suffix[: suffix.rindex(".")]
    for frame in (tables.read_table(path), pd.concat(tables.iter_table(path, chunk_rows=3))):
        assert list(frame.columns) == list(rows.columns)
        np.testing.assert_allclose(frame.to_numpy(float), rows.to_numpy(float))


@pytest.mark.parametrize("name", ["rows.parquet.gz", "ROWS.PARQUET.XZ"])
def test_a_compressed_parquet_name_is_refused(name):
    with pytest.raises(tables.TableError, match=r"Parquet files compress their own data; name it"):
        tables.table_format(name)


def test_as_given_keeps_the_files_own_values_in_every_chunk(tmp_path):
    """The reading side of 'input columns come out unchanged': no chunk retypes a column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv = tmp_path / "cells.csv"
    csv.write_text("id,n,x\n007,1520,1e5\n008,,NA\n009,1520,\n")
    chunks = list(tables.iter_table(csv, chunk_rows=2, as_given=True))
    assert [c.to_dict("list") for c in chunks] == [
        {"id": ["007", "008"], "n": ["1520", ""], "x": ["1e5", "NA"]},
        {"id": ["009"], "n": ["1520"], "x": [""]},
    ]
    parquet = tmp_path / "typed.parquet"
    pq.write_table(pa.table({"n": pa.array([1520, 1461, None, 7], pa.int64())}), parquet)
    chunks = list(tables.iter_table(parquet, chunk_rows=2, as_given=True))
    assert [str(c["n"].dtype) for c in chunks] == ["int64[pyarrow]"] * 2
    assert pd.concat(chunks)["n"].tolist() == [1520, 1461, pd.NA, 7]
    records = tmp_path / "values.json"
    records.write_text('[{"id": 1, "x": 3.8074667544799388}, {"id": null, "x": 1e5}]')
    (frame,) = tables.iter_table(records, as_given=True)
    assert frame.to_dict("list") == {"id": [1, None], "x": [3.8074667544799388, 100000.0]}
