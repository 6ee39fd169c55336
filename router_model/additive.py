"""A route's sub-model as the additive log-odds tables it reduces to, scored with NumPy alone.

Both sub-model families this project trains are additive in the log-odds once their input is
coded (:mod:`router_model.scorers` says why): P(poisonous) = expit(bias + sum over the coded
columns of ``table[column][code]``). At training time each route's tables are read from the
fitted estimators, checked against ``predict_proba`` (:func:`router_model.scorers.checked_additive`)
and logged with the version as a NumPy ``.npz`` file, read back without pickle.

A model server loads these files instead of the skops files, so it never imports scikit-learn,
which costs a serving process more start-up time than anything but MLflow's own scoring server.
The skops files stay the model of record: a notebook or a Spark job reaches the estimators through
``Router.submodels``, which loads them on first use. What a version scores from its tables is
checked against its golden answers every time it loads (:func:`router_model.router.check_golden`).

:class:`Codes` codes rows exactly as :class:`router_model.transformers.BinCross` does (which
codes through it): the same code serves training, the fast scorers and the explanations.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit

from router_model import features as F
from router_model.errors import RouterError

#: The artifact file of a route's tables, next to its skops file.
SUFFIX = ".tables.npz"
#: Written into every file; :meth:`AdditiveModel.load` refuses any other.
FORMAT = 1


def tables_filename(route: str) -> str:
    """The artifact file name of a route's tables."""
    return f"{route}{SUFFIX}"


def artifact_key(route: str) -> str:
    """The key of a route's tables in the logged model's artifacts (its skops file's is ``route``)."""
    return f"{route}_tables"


def carries_tables(model_dir: str | Path) -> bool:
    """Whether a local model folder holds every route's tables (versions logged before them do not)."""
    folder = Path(model_dir) / "artifacts"
    return all((folder / tables_filename(route)).is_file() for route in F.ROUTES)


class TablesFormatError(RouterError, ValueError):
    """A tables file this code cannot read (another format, or damaged); the message names it."""


def column_codes(columns: Sequence[str], edges: Sequence[np.ndarray | None], X: np.ndarray) -> np.ndarray:
    """Code each column on its own: bin index, category code or season index.

    Args:
        columns: Canonical names of ``X``'s columns.
        edges: Interior bin edges of each continuous column (``None`` for the others).
        X: Validated values, shape ``(n_rows, len(columns))``.

    Returns:
        An int64 array of ``X``'s shape.

    Raises:
        ValueError: On a season value that is not one of the four (validated upstream; a table
            is never indexed with -1).
    """
    codes = np.empty(X.shape, dtype=np.int64)
    for j, name in enumerate(columns):
        cut = edges[j]
        if cut is not None:
            codes[:, j] = np.searchsorted(cut, X[:, j], side="right")
        elif name == F.SEASON:
            season = F.season_codes(X[:, j])
            unknown = season < 0
            if unknown.any():
                bad = X[np.argmax(unknown), j]
                raise ValueError(f"season {bad!r} is not {F.expected_values(F.SEASON)}")
            codes[:, j] = season
        else:
            codes[:, j] = X[:, j]
    return codes


def crossed_codes(
    codes: np.ndarray, combinations: list[tuple[int, ...]], base_cardinalities: list[int]
) -> Iterator[np.ndarray]:
    """Yield the code of each crossed column in turn: ``((c0 * n1) + c1) * n2 + c2`` for a triple."""
    for combo in combinations:
        code = codes[:, combo[0]]
        for j in combo[1:]:
            code = code * base_cardinalities[j] + codes[:, j]
        yield code


@dataclass(frozen=True)
class Codes:
    """A fitted coder: what a :class:`~router_model.transformers.BinCross` learned, without scikit-learn.

    The attributes carry ``BinCross``'s fitted names, so code that reads a fitted ``BinCross``
    (the explanations, the terms table) reads this alike.
    """

    columns: tuple[str, ...]
    edges_: tuple[np.ndarray | None, ...]
    base_cardinalities_: list[int]
    combinations_: list[tuple[int, ...]]

    @classmethod
    def of(cls, fitted: Any) -> Codes:
        """The coder of a fitted ``BinCross`` (or anything with its fitted attributes)."""
        return cls(
            tuple(fitted.columns),
            tuple(None if e is None else np.asarray(e, dtype=np.float64) for e in fitted.edges_),
            [int(n) for n in fitted.base_cardinalities_],
            [tuple(int(j) for j in combo) for combo in fitted.combinations_],
        )

    def base_codes(self, X: np.ndarray) -> np.ndarray:
        """Code each column on its own (:func:`column_codes`)."""
        return column_codes(self.columns, self.edges_, X)

    def iter_codes(self, X: np.ndarray) -> Iterator[np.ndarray]:
        """Yield the code vector of each output column in turn."""
        return crossed_codes(self.base_codes(X), self.combinations_, self.base_cardinalities_)


@dataclass(frozen=True)
class AdditiveModel:
    """A route's calibrated log-odds: ``bias + sum over output columns of tables[column][code]``.

    Attributes:
        codes: How a row is coded.
        tables: Per output column of ``codes``, the log-odds term of every code.
        bias: The log-odds before any feature.
    """

    codes: Codes
    tables: tuple[np.ndarray, ...]
    bias: float

    def log_odds(self, X: np.ndarray) -> np.ndarray:
        """The calibrated log-odds of poisonous for every row of ``X`` (a route's validated columns)."""
        logit = np.full(len(X), self.bias)
        for table, code in zip(self.tables, self.codes.iter_codes(X), strict=True):
            logit += table[code]
        return logit

    def poisonous_probability(self, X: np.ndarray) -> np.ndarray:
        """P(poisonous) for every row, what the fitted estimator's ``predict_proba`` gives."""
        return expit(self.log_odds(X))

    def save(self, path: str | Path) -> None:
        """Write the tables as an ``.npz`` file (plain arrays, readable without pickle)."""
        codes = self.codes
        meta = {
            "format": FORMAT,
            "columns": list(codes.columns),
            "binned": [e is not None for e in codes.edges_],
            "base_cardinalities": codes.base_cardinalities_,
            "combinations": [list(c) for c in codes.combinations_],
        }
        arrays = {f"edges_{j}": e for j, e in enumerate(codes.edges_) if e is not None}
        arrays.update(
            {f"table_{t}": np.asarray(table, dtype=np.float64) for t, table in enumerate(self.tables)}
        )
        with open(path, "wb") as out:
            np.savez(out, meta=np.array(json.dumps(meta)), bias=np.float64(self.bias), **arrays)

    @classmethod
    def load(cls, path: str | Path) -> AdditiveModel:
        """Read a file :meth:`save` wrote.

        Raises:
            TablesFormatError: Naming the file, when it is not one this code reads.
        """
        if not zipfile.is_zipfile(path):  # NumPy would call it pickled data and suggest unpickling it
            raise TablesFormatError(f"{path}: not a tables file this code reads (not an .npz archive)")
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                if meta.get("format") != FORMAT:
                    raise TablesFormatError(
                        f"{path}: tables format {meta.get('format')!r}, expected {FORMAT}"
                    )
                combinations = [tuple(int(j) for j in c) for c in meta["combinations"]]
                codes = Codes(
                    tuple(meta["columns"]),
                    tuple(data[f"edges_{j}"] if binned else None for j, binned in enumerate(meta["binned"])),
                    [int(n) for n in meta["base_cardinalities"]],
                    combinations,
                )
                tables = tuple(data[f"table_{t}"] for t in range(len(combinations)))
                bias = float(data["bias"])
        except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile) as err:
            if isinstance(err, TablesFormatError):
                raise
            raise TablesFormatError(f"{path}: not a tables file this code reads ({err})") from None
        return cls(codes, tables, bias)
