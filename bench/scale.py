"""Large-file scoring: a 10-million-row file through ``mushroom-router predict``, memory and speed.

Generates the file from the synthetic sampler (in chunks, so generating is flat too), registers a
router trained on ``--data`` (or synthetic data), then runs ``mushroom-router predict`` as a child
process and reports its wall time, rows/s and peak resident memory (the child's ``ru_maxrss``).
For comparison it times the sub-models' own ``predict_proba`` on the same rows in one process,
chunk by chunk, reading the same file.

Usage: ``python bench/scale.py [--rows 10000000] [--format parquet] [--data mushroom_cleaned.csv]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from benchlib import BIN


def write_input(path: Path, rows: int, chunk: int = 1_000_000) -> None:
    """Write ``rows`` synthetic feature rows (both sets, some rows with one set only)."""
    from router_model import features as F
    from router_model.synthetic import make_synthetic

    writer = None
    done = 0
    seed = 0
    while done < rows:
        n = min(chunk, rows - done)
        frame = make_synthetic(n, seed=seed).drop(columns=["class"]).astype(float)
        third = n // 3
        frame.loc[: third - 1, list(F.LR_FEATURES)] = np.nan
        frame.loc[third : 2 * third - 1, list(F.NB_FEATURES)] = np.nan
        if path.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(frame, preserve_index=False)
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
        else:
            frame.to_csv(path, mode="a" if done else "w", header=not done, index=False)
        done += n
        seed += 1
    if writer is not None:
        writer.close()


def submodel_throughput(path: Path, router, chunk_rows: int) -> float:
    """Rows/s of the routed sub-models' own predict_proba over the file's chunks (scoring time only)."""
    from router_model import features as F
    from router_model.scoring import read_chunks

    rows, seconds = 0, 0.0
    for chunk in read_chunks(path, chunk_rows):
        complete = {r: chunk[list(F.ROUTE_FEATURES[r])].notna().all(axis=1).to_numpy() for r in F.ROUTES}
        other = F.ROUTES[1 - F.ROUTES.index(router.preferred)]
        masks = {
            router.preferred: complete[router.preferred],
            other: complete[other] & ~complete[router.preferred],
        }
        inputs = {r: chunk.loc[m, list(F.ROUTE_FEATURES[r])].to_numpy(np.float64) for r, m in masks.items()}
        started = time.perf_counter()
        for route, X in inputs.items():
            if len(X):
                router.submodels[route].predict_proba(X)
        seconds += time.perf_counter() - started
        rows += len(chunk)
    return rows / seconds


def router_throughput(path: Path, router, chunk_rows: int) -> float:
    """Rows/s of the router's own predict (validation, routing, scoring) over the same chunks."""
    from router_model.scoring import read_chunks

    rows, seconds = 0, 0.0
    for chunk in read_chunks(path, chunk_rows):
        started = time.perf_counter()
        router.predict(chunk)
        seconds += time.perf_counter() - started
        rows += len(chunk)
    return rows / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    parser.add_argument(
        "--data", default=os.environ.get("MUSHROOM_DATA"), help="train on this (else synthetic)"
    )
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="mushroom-scale-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MUSHROOM_", "MLFLOW_"))}
    env.update(
        MUSHROOM_HOME=str(work),
        MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}",
        MLFLOW_ALLOW_PICKLE_DESERIALIZATION="false",
    )
    train = [
        str(BIN / "mushroom-router"),
        "train",
        *(["--data", args.data] if args.data else ["--synthetic"]),
    ]
    subprocess.run(train, env=env, check=True, capture_output=True)

    src = work / f"input.{args.format}"
    started = time.perf_counter()
    write_input(src, args.rows)
    print(
        f"wrote {args.rows:,} rows to {src.name} ({src.stat().st_size / 2**20:,.0f} MiB) in "
        f"{time.perf_counter() - started:.0f}s",
        flush=True,
    )

    dst = work / f"scored.{args.format}"
    cmd = [
        sys.executable,
        "-c",
        "import resource, sys; from router_model.cli import main; rc = main(sys.argv[1:]); "
        "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(rc)",
        "predict",
        str(src),
        str(dst),
        "--quiet",
        "--chunk-rows",
        str(args.chunk_rows),
    ]
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        return 1
    peak_kb = int(next(line.split()[1] for line in done.stderr.splitlines() if line.startswith("MAXRSS_KB")))

    os.environ.update({k: env[k] for k in ("MUSHROOM_HOME", "MLFLOW_TRACKING_URI")})
    from router_model import registry

    router = registry.load_router("models:/mushroom-router@champion")
    sub_rps = submodel_throughput(src, router, args.chunk_rows)
    router_rps = router_throughput(src, router, args.chunk_rows)
    scored_rows = pd.read_parquet(dst, columns=["model"]).shape[0] if args.format == "parquet" else args.rows
    results = {
        "rows": args.rows,
        "format": args.format,
        "chunk_rows": args.chunk_rows,
        "input_mib": src.stat().st_size / 2**20,
        "seconds": seconds,
        "rows_per_s": args.rows / seconds,
        "peak_rss_mib": peak_kb / 1024,
        "submodel_rows_per_s": sub_rps,
        "scored_rows": scored_rows,
        "self_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    results["router_rows_per_s"] = router_rps
    results["ratio"] = router_rps / sub_rps
    print(
        f"mushroom-router predict: {args.rows:,} rows in {seconds:.1f}s = {results['rows_per_s']:,.0f} rows/s "
        f"end to end (read, score, write); peak RSS {results['peak_rss_mib']:.0f} MiB",
        flush=True,
    )
    print(
        f"in one process, same chunks, scoring only: router predict {router_rps:,.0f} rows/s, sub-models' own "
        f"predict_proba {sub_rps:,.0f} rows/s; ratio {results['ratio']:.2f}",
        flush=True,
    )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    for path in (src, dst):
        path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
