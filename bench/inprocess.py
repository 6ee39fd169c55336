"""In-process cost of the router: the loaded pyfunc's ``predict`` against the sub-model's own.

Trains on the real data (in memory), logs the router to a temporary store, loads it with
``mlflow.pyfunc.load_model`` (pickle loading off) and times, on the same rows:

* ``predict`` of the loaded router (validation, routing, sub-model, output frame);
* ``predict_proba`` of the routed sub-model alone (what a plain model would do);

for 1 row and for 100,000 rows, per route. Medians of repeated calls (timeit).

Usage: ``python bench/inprocess.py --data mushroom_cleaned.csv [--out results.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import timeit
from pathlib import Path

import numpy as np


def median_seconds(func, number: int, repeat: int) -> float:
    """Median seconds per call over ``repeat`` runs of ``number`` calls."""
    func()
    return float(np.median(timeit.repeat(func, number=number, repeat=repeat)) / number)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("MUSHROOM_DATA"), help="mushroom_cleaned.csv")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    if not args.data:
        print("no data: pass --data or set MUSHROOM_DATA", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="mushroom-inproc-"))
    os.environ.update(
        MUSHROOM_HOME=str(work),
        MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}",
        MLFLOW_ALLOW_PICKLE_DESERIALIZATION="false",
    )
    import mlflow

    from router_model import features as F
    from router_model import pipeline

    out = pipeline.retrain(path=args.data)
    model = mlflow.pyfunc.load_model(out["model_uri"])
    router = model.unwrap_python_model().router
    frame = __import__("pandas").read_csv(args.data)
    results = []
    for route in F.ROUTES:
        columns = list(F.ROUTE_FEATURES[route])
        sub = router.submodels[route]
        for n in (1, 100_000):
            rows = frame[columns].sample(n, replace=n > len(frame), random_state=7).reset_index(drop=True)
            matrix = rows.to_numpy(np.float64)
            number, repeat = (300, 7) if n == 1 else (1, 5)
            t_router = median_seconds(lambda rows=rows: model.predict(rows), number, repeat)
            t_sub = median_seconds(lambda matrix=matrix, sub=sub: sub.predict_proba(matrix), number, repeat)
            results.append(
                {
                    "route": route,
                    "rows": n,
                    "router_ms": t_router * 1e3,
                    "submodel_ms": t_sub * 1e3,
                    "router_rows_per_s": n / t_router,
                    "submodel_rows_per_s": n / t_sub,
                    "overhead_ms": (t_router - t_sub) * 1e3,
                }
            )
            print(
                f"{route:<20} {n:>7} rows: router predict {t_router * 1e3:8.3f} ms, sub-model predict_proba "
                f"{t_sub * 1e3:8.3f} ms",
                flush=True,
            )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
