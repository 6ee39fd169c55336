"""A deterministic synthetic stand-in for ``mushroom_cleaned.csv``: the embedded default for offline demos and tests.

It is never a substitute for the real data: a model trained on it says nothing about real
mushrooms, which is why training on it warns loudly and the gate never lets a synthetic-data
version replace a real-data champion unless allowed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from router_model import features as F
from router_model import settings

SYNTHETIC_ROWS = 8000
SYNTHETIC_SEED = 20240607


def make_synthetic(n_rows: int = SYNTHETIC_ROWS, seed: int = SYNTHETIC_SEED) -> pd.DataFrame:
    """Make a deterministic stand-in for ``mushroom_cleaned.csv``.

    Like the real data, rows are drawn from simulated species, each edible or poisonous, with
    its own typical cap, gill, stem and season, so both routes have signal to learn and rows of
    one species resemble each other. It is for offline demos and tests, not for real decisions.

    Args:
        n_rows: Number of rows.
        seed: Random seed; the same arguments always give the same frame.

    Returns:
        A frame with the real file's columns and dtypes (``class`` 1 = poisonous).
    """
    if n_rows < 20:
        raise ValueError(f"n_rows must be >= 20, got {n_rows}")
    rng = np.random.default_rng(seed)
    n_species = 60
    species = pd.DataFrame(
        {
            "poisonous": rng.random(n_species) < 0.55,
            "cap": rng.lognormal(6.2, 0.6, n_species),
            "cap-shape": rng.integers(0, 7, n_species),
            "gill-attachment": rng.integers(0, 7, n_species),
            "gill-color": rng.integers(0, 12, n_species),
            "height": rng.uniform(0.2, 2.0, n_species),
            "width": rng.lognormal(6.5, 0.7, n_species),
            "stem-color": rng.integers(0, 13, n_species),
            "season": rng.integers(0, 4, n_species),
        }
    )
    pick = rng.integers(0, n_species, n_rows)
    s = species.iloc[pick].reset_index(drop=True)

    def typical(column: str, cardinality: int, keep: float) -> np.ndarray:
        other = rng.integers(0, cardinality, n_rows)
        return np.where(rng.random(n_rows) < keep, s[column].to_numpy(), other)

    seasons = np.asarray(F.SEASON_VALUES)
    frame = pd.DataFrame(
        {
            "cap-diameter": np.clip(np.round(s["cap"] * rng.lognormal(0, 0.25, n_rows)), 0, 1891),
            "cap-shape": typical("cap-shape", 7, 0.8),
            "gill-attachment": typical("gill-attachment", 7, 0.8),
            "gill-color": typical("gill-color", 12, 0.75),
            "stem-height": np.clip(s["height"] * rng.lognormal(0, 0.2, n_rows), 0.0, 3.84),
            "stem-width": np.clip(np.round(s["width"] * rng.lognormal(0, 0.25, n_rows)), 0, 3569),
            "stem-color": typical("stem-color", 13, 0.8),
            "season": seasons[typical("season", 4, 0.7)],
            F.TARGET: s["poisonous"].astype(int).to_numpy(),
        }
    )
    flip = rng.random(n_rows) < 0.03
    frame.loc[flip, F.TARGET] = 1 - frame.loc[flip, F.TARGET]
    ints = ["cap-diameter", "cap-shape", "gill-attachment", "gill-color", "stem-width"]
    ints += ["stem-color", F.TARGET]
    return frame.astype({c: "int64" for c in ints})


def write_synthetic(dest_dir: str | os.PathLike[str] | None = None, n_rows: int = SYNTHETIC_ROWS) -> Path:
    """Write :func:`make_synthetic` to the data cache (idempotent) and return its path."""
    dest = Path(dest_dir) if dest_dir else settings.data_dir()
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / f"synthetic-{n_rows}-{SYNTHETIC_SEED}.csv"
    if not target.is_file():
        tmp = target.with_suffix(".tmp")
        make_synthetic(n_rows).to_csv(tmp, index=False)
        tmp.replace(target)
    return target
