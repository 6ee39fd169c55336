"""Input validation: every bad value is refused with a message naming row, column and domain."""

import numpy as np
import pandas as pd
import pytest

from router_model.validation import InvalidInputError, feature_matrix

NB_ROW = {"cap-diameter": 100, "cap-shape": 2, "gill-attachment": 1, "gill-color": 5}
LR_ROW = {"stem-height": 1.5, "stem-width": 300, "stem-color": 4, "season": 0.8884502877862838}


def test_integer_frame_from_csv_is_accepted(tmp_path):
    path = tmp_path / "rows.csv"
    pd.DataFrame([NB_ROW | LR_ROW]).to_csv(path, index=False)
    frame = pd.read_csv(path)
    assert frame["cap-shape"].dtype == np.int64
    matrix = feature_matrix(frame)
    assert matrix.dtype == np.float64
    assert matrix.shape == (1, 8)
    assert not np.isnan(matrix).any()


def test_missing_values_become_nan_and_unknown_columns_are_ignored():
    frame = pd.DataFrame([NB_ROW | {"id": "a"}, LR_ROW | {"id": "b"}])
    matrix = feature_matrix(frame)
    assert np.isnan(matrix[0, 4:]).all() and not np.isnan(matrix[0, :4]).any()
    assert np.isnan(matrix[1, :4]).all() and not np.isnan(matrix[1, 4:]).any()


def test_both_spellings_in_one_batch_are_merged():
    frame = pd.DataFrame([{"stem_height": 1.0}, {"stem-height": 2.0}])
    assert feature_matrix(frame)[:, 4].tolist() == [1.0, 2.0]


def test_both_spellings_with_different_values_are_refused():
    frame = pd.DataFrame([{"stem_height": 1.0, "stem-height": 2.0}])
    with pytest.raises(
        InvalidInputError, match=r"row 0: 'stem-height' and 'stem_height'|row 0: 'stem_height'"
    ):
        feature_matrix(frame)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("cap-shape", 7, r"row 1, column 'cap-shape': got 7; expected an integer code 0-6"),
        ("cap-shape", -1, r"got -1; expected an integer code 0-6"),
        ("gill-color", 2.5, r"column 'gill-color': got 2.5; expected an integer code 0-11"),
        ("stem-color", 13, r"expected an integer code 0-12"),
        ("season", 0.5, r"column 'season': got 0.5; expected one of the season codes"),
        ("cap-diameter", -3.0, r"column 'cap-diameter': got -3; expected a finite number >= 0"),
        ("stem-width", np.inf, r"got inf; expected a finite number >= 0, not an infinite value"),
        ("stem-height", -np.inf, r"not an infinite value"),
        ("cap-diameter", "twelve", r"got the string 'twelve'; expected a finite number"),
        ("cap-diameter", "1e999", r"not an infinite value"),
        ("gill-attachment", True, r"got the boolean True; expected an integer code 0-6"),
        ("stem_width", "wide", r"column 'stem_width': got the string 'wide'"),
        ("cap-shape", [1, 2], r"got a list"),
        ("cap-shape", {"a": 1}, r"got a dict"),
    ],
)
def test_bad_values_name_row_column_and_expectation(column, value, message):
    rows = [NB_ROW | LR_ROW, NB_ROW | LR_ROW]
    frame = pd.DataFrame(rows)
    frame[column] = pd.Series([frame.get(column, pd.Series([1, 1])).iloc[0], value], dtype=object)
    with pytest.raises(InvalidInputError, match=message) as info:
        feature_matrix(frame)
    assert info.value.row == 1


def test_all_bad_rows_are_counted():
    frame = pd.DataFrame({"cap-shape": [9, 1, 9, 9]})
    with pytest.raises(InvalidInputError, match=r"row 0, .*\(2 more row\(s\) have the same problem\)"):
        feature_matrix(frame)


def test_numeric_strings_count_as_numbers_and_only_bad_cells_are_blamed():
    frame = pd.DataFrame({"cap-shape": ["1", " 2 ", "round", None], "season": ["0.027372133055605714"] * 4})
    with pytest.raises(
        InvalidInputError, match=r"^row 2, column 'cap-shape': got the string 'round'"
    ) as info:
        feature_matrix(frame)
    assert info.value.row == 2
    matrix = feature_matrix(frame.iloc[[0, 1, 3]])
    assert matrix[:, 1].tolist()[:2] == [1.0, 2.0] and np.isnan(matrix[2, 1])


def test_boolean_column_dtype_is_refused():
    with pytest.raises(InvalidInputError, match="boolean"):
        feature_matrix(pd.DataFrame({"gill-color": [True, False]}))


def test_duplicate_column_labels_are_refused():
    frame = pd.DataFrame([[1, 2]], columns=["cap-shape", "cap-shape"])
    with pytest.raises(InvalidInputError, match="given twice"):
        feature_matrix(frame)


def test_non_frame_is_refused():
    with pytest.raises(InvalidInputError, match="expected a table"):
        feature_matrix([1, 2, 3])


def test_huge_integer_is_refused_not_crashing():
    frame = pd.DataFrame({"cap-diameter": pd.Series([10**400], dtype=object)})
    with pytest.raises(InvalidInputError, match="cap-diameter"):
        feature_matrix(frame)
