"""Drift: how far served inputs and answers have moved from what the champion was trained on.

At training time :func:`reference_profile` records, per feature, the distribution of the version's
held-out rows (ten quantile bins for a measurement, the share of each code for a category or
season: rows the model did not fit, from the same data) and, per route, their distribution of
``poisonous_probability`` in ten fixed bins. It is logged with
the model (``monitoring/reference.json``). :func:`compare` bins the rows the model server logged
the same way and measures each feature with the population stability index (PSI, the usual drift
alarm: below 0.1 stable, 0.1-0.2 moderate, above 0.2 a shift) and a chi-square test of the bin
counts against the reference shares.

A feature is judged only with at least ``min_rows`` logged values (rows carry one route's features
or both, so features differ in how many values they get); with none judged the window has too
few rows and nothing is concluded.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from router_model import features as F

#: Quantile bins per measurement in the reference.
BINS = 10
#: Fixed bin edges of ``poisonous_probability`` (ten bins of width 0.1).
PROBABILITY_EDGES: tuple[float, ...] = tuple(round(0.1 * k, 1) for k in range(1, BINS))
#: Share given to an empty bin so the PSI stays finite (a bin nobody fell into, on either side).
EMPTY_SHARE = 1e-4
#: The usual PSI alarm level.
DEFAULT_PSI_THRESHOLD = 0.2
#: Fewest logged values a feature needs to be judged.
DEFAULT_MIN_ROWS = 500
PROFILE_VERSION = 1
PROBABILITY = "poisonous_probability"


def _categories(column: str) -> list[float]:
    if column == F.SEASON:
        return list(F.SEASON_VALUES)
    return [float(code) for code in range(F.CATEGORY_CARDINALITY[column])]


def bin_index(values: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
    """The reference bin of each value (NaN values must be dropped first).

    Args:
        values: Finite values of one feature.
        spec: The feature's entry in a reference profile.

    Returns:
        Bin indices into ``spec["shares"]``.
    """
    if spec["kind"] == "numeric":
        return np.searchsorted(np.asarray(spec["edges"]), values, side="right")
    if spec["kind"] == "season":
        return F.season_codes(values)
    return np.asarray(values, dtype=np.int64)


def _shares(index: np.ndarray, n_bins: int) -> list[float]:
    counts = np.bincount(index, minlength=n_bins)[:n_bins]
    return (counts / max(1, counts.sum())).tolist()


def reference_profile(train: pd.DataFrame, scores: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The distribution the monitor compares served rows with.

    Args:
        train: Validated rows of the training data (every feature); training passes the held-out rows.
        scores: Per route, ``poisonous_probability`` of the same rows.

    Returns:
        A JSON-friendly profile.
    """
    features: dict[str, Any] = {}
    for column in F.ALL_FEATURES:
        values = train[column].to_numpy(np.float64)
        if column in F.NUMERIC_FEATURES:
            edges = np.unique(np.quantile(values, np.linspace(0, 1, BINS + 1)[1:-1]))
            spec: dict[str, Any] = {"kind": "numeric", "edges": edges.tolist()}
            n_bins = len(edges) + 1
        else:
            kind = "season" if column == F.SEASON else "category"
            spec = {"kind": kind, "values": _categories(column)}
            n_bins = len(spec["values"])
        spec["shares"] = _shares(bin_index(values, spec), n_bins)
        features[column] = spec
    probability = {
        route: _shares(np.searchsorted(PROBABILITY_EDGES, np.asarray(p), side="right"), BINS)
        for route, p in scores.items()
    }
    return {"version": PROFILE_VERSION, "rows": len(train), "features": features, PROBABILITY: probability}


def psi(reference: list[float] | np.ndarray, current: list[float] | np.ndarray) -> float:
    """Population stability index of two share vectors over the same bins."""
    ref = np.maximum(np.asarray(reference, dtype=float), EMPTY_SHARE)
    cur = np.maximum(np.asarray(current, dtype=float), EMPTY_SHARE)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def chi_square_pvalue(reference: list[float], counts: np.ndarray) -> float:
    """p-value of the bin counts under the reference shares (empty reference bins smoothed)."""
    from scipy.stats import chisquare

    expected_shares = np.maximum(np.asarray(reference, dtype=float), EMPTY_SHARE)
    expected = expected_shares / expected_shares.sum() * counts.sum()
    return float(chisquare(counts, expected).pvalue)


@dataclass
class Comparison:
    """One feature (or one route's probability), reference against the window."""

    name: str
    rows: int
    judged: bool
    psi: float = math.nan
    p_value: float = math.nan
    reference: list[float] = field(default_factory=list)
    current: list[float] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)


@dataclass
class DriftReport:
    """What :func:`compare` found.

    Attributes:
        rows: Logged rows in the window.
        features: One comparison per feature.
        probability: One comparison per route's ``poisonous_probability``.
        route_share: Share of the window's rows each route answered.
        psi_threshold: The alarm level used.
        min_rows: The fewest values a feature needed to be judged.
    """

    rows: int
    features: list[Comparison]
    probability: list[Comparison]
    route_share: dict[str, float]
    psi_threshold: float
    min_rows: int

    @property
    def judged(self) -> bool:
        """Whether any comparison had enough rows."""
        return any(c.judged for c in self.features + self.probability)

    @property
    def drifted(self) -> list[str]:
        """Names of the judged comparisons whose PSI is above the threshold."""
        return [c.name for c in self.features + self.probability if c.judged and c.psi > self.psi_threshold]

    @property
    def drift_detected(self) -> bool:
        """Whether anything judged drifted."""
        return bool(self.drifted)


def _labels(spec: Mapping[str, Any]) -> list[str]:
    if spec["kind"] == "numeric":
        edges = [f"{e:g}" for e in spec["edges"]]
        return [
            f"< {edges[0]}",
            *(f"{a}-{b}" for a, b in itertools.pairwise(edges)),
            f">= {edges[-1]}",
        ]
    return [f"{v:g}" for v in spec["values"]]


def _compare(
    name: str, reference: list[float], index: np.ndarray, labels: list[str], min_rows: int
) -> Comparison:
    n_bins = len(reference)
    counts = np.bincount(index, minlength=n_bins)[:n_bins]
    found = Comparison(name, len(index), len(index) >= min_rows, reference=list(reference), labels=labels)
    if len(index):
        found.current = (counts / counts.sum()).tolist()
    if found.judged:
        found.psi = psi(reference, found.current)
        found.p_value = chi_square_pvalue(reference, counts)
    return found


def compare(
    reference: Mapping[str, Any],
    rows: pd.DataFrame,
    psi_threshold: float = DEFAULT_PSI_THRESHOLD,
    min_rows: int = DEFAULT_MIN_ROWS,
) -> DriftReport:
    """Compare logged rows (:data:`router_model.inference_log.COLUMNS`) with a reference profile.

    Args:
        reference: A :func:`reference_profile`.
        rows: The window's logged rows.
        psi_threshold: PSI above which a comparison counts as drift.
        min_rows: Fewest values a comparison needs to be judged.

    Returns:
        The :class:`DriftReport`.
    """
    features = []
    for column, spec in reference["features"].items():
        values = rows[column].to_numpy(np.float64) if column in rows else np.empty(0)
        values = values[~np.isnan(values)]
        index = bin_index(values, spec)
        index = index[index >= 0]  # an unknown season cannot be logged: validation refuses it
        features.append(_compare(column, spec["shares"], index, _labels(spec), min_rows))
    probability = []
    labels = [f"{a:.1f}-{a + 0.1:.1f}" for a in (0.0, *PROBABILITY_EDGES)]
    for route, shares in reference[PROBABILITY].items():
        scored = (
            rows.loc[rows["route"] == route, PROBABILITY].to_numpy(np.float64) if len(rows) else np.empty(0)
        )
        index = np.searchsorted(PROBABILITY_EDGES, scored, side="right")
        probability.append(_compare(f"{PROBABILITY}_{route}", shares, index, labels, min_rows))
    counts = rows["route"].value_counts() if len(rows) else pd.Series(dtype=int)
    route_share = {route: float(counts.get(route, 0) / max(1, len(rows))) for route in F.ROUTES}
    return DriftReport(len(rows), features, probability, route_share, psi_threshold, min_rows)
