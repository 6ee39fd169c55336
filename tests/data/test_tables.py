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
    [("a.csv", ".csv"), ("a.PARQUET", ".parquet"), ("a.json", ".json"), ("a.txt", ".csv"), ("a", ".csv")],
)
def test_format_comes_from_the_extension(name, expected):
    assert tables.table_format(name) == expected


def test_count_rows_reads_parquet_metadata_only(rows, tmp_path):
    rows.to_parquet(tmp_path / "r.parquet", index=False)
    rows.to_csv(tmp_path / "r.csv", index=False)
    assert tables.count_rows(tmp_path / "r.parquet") == len(rows)
    assert tables.count_rows(tmp_path / "r.csv") is None
