"""Batch scoring of files with the registered router: predictions beside the input columns."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from router_model import settings

_logger = logging.getLogger(__name__)

CHUNK_ROWS = 100_000


class ScoringError(RuntimeError):
    """A file cannot be scored; the message says which and why."""


def load_model(model_uri: str | None = None) -> Any:
    """Load the router pyfunc (default ``models:/mushroom-router@champion``)."""
    import mlflow

    from router_model.registry import client

    client()
    uri = model_uri or settings.model_uri()
    try:
        return mlflow.pyfunc.load_model(uri)
    except Exception as err:
        raise ScoringError(f"cannot load {uri}: {str(err).splitlines()[0]}") from None


def read_chunks(path: str | os.PathLike[str], chunk_rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """Yield the input in chunks: CSV streamed, JSON (records or ``dataframe_split``) whole."""
    path = Path(path)
    if not path.is_file():
        raise ScoringError(f"input file not found: {path}")
    if path.suffix.lower() == ".json":
        try:
            payload = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise ScoringError(f"{path} is not valid JSON: {err}") from None
        if isinstance(payload, dict) and "dataframe_split" in payload:
            payload = payload["dataframe_split"]
            yield pd.DataFrame(payload.get("data", []), columns=payload.get("columns"))
        elif isinstance(payload, dict) and "dataframe_records" in payload:
            yield pd.DataFrame(payload["dataframe_records"])
        elif isinstance(payload, list):
            yield pd.DataFrame(payload)
        else:
            raise ScoringError(f"{path}: expected a list of records or a dataframe_split object")
        return
    try:
        yield from pd.read_csv(path, chunksize=chunk_rows)
    except (ValueError, UnicodeDecodeError) as err:
        raise ScoringError(f"cannot read {path} as CSV: {err}") from None


def score_file(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str] | None = None,
    model_uri: str | None = None,
    params: dict[str, Any] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> pd.DataFrame | int:
    """Score a CSV or JSON file; write CSV (or JSON records for a ``.json`` output).

    Args:
        input_path: Rows to score.
        output_path: Where to write; ``None`` returns the scored frame instead.
        model_uri: Router to use.
        params: ``model`` / ``threshold``.
        chunk_rows: Rows per chunk for CSV input.

    Returns:
        The scored frame when ``output_path`` is ``None``, else the number of rows written.

    Raises:
        ScoringError: On unreadable input; the router's own error (naming the row) on bad rows.
    """
    model = load_model(model_uri)
    scored_chunks = []
    rows = 0
    offset = 0
    out = Path(output_path) if output_path else None
    as_json = out is not None and out.suffix.lower() == ".json"
    tmp = out.with_name(out.name + ".partial") if out else None
    try:
        for chunk in read_chunks(input_path, chunk_rows):
            try:
                predictions = model.predict(chunk, params=params)
            except Exception as err:
                message = str(err).replace("Invalid input: ", "")
                raise ScoringError(f"{input_path} (chunk starting at data row {offset}): {message}") from None
            scored = pd.concat([chunk.reset_index(drop=True), predictions.reset_index(drop=True)], axis=1)
            offset += len(chunk)
            rows += len(scored)
            if out is None or as_json:
                scored_chunks.append(scored)
            else:
                scored.to_csv(
                    tmp, mode="a" if rows > len(scored) else "w", header=rows == len(scored), index=False
                )
        if out is None:
            return pd.concat(scored_chunks, ignore_index=True) if scored_chunks else pd.DataFrame()
        if as_json:
            frame = pd.concat(scored_chunks, ignore_index=True) if scored_chunks else pd.DataFrame()
            frame.to_json(tmp, orient="records", indent=1)
        elif not tmp.exists():
            pd.DataFrame().to_csv(tmp, index=False)
        tmp.replace(out)
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()
    _logger.info("Scored %d rows from %s into %s", rows, input_path, out)
    return rows
