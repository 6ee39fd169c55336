"""Fixtures for the model tests: a small training file in a fresh store."""

from __future__ import annotations

from pathlib import Path

import pytest

from router_model import synthetic


@pytest.fixture
def small_csv(fresh_store: Path) -> str:
    """3,000 synthetic rows as a CSV in this test's own project home (enough held-out rows to judge)."""
    path = fresh_store / "train.csv"
    synthetic.make_synthetic(3000).to_csv(path, index=False)
    return str(path)
