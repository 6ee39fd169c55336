"""In-process cost of the router: the loaded pyfunc's ``predict`` against the sub-model's own.

Trains on the real data (in memory), logs the router to a temporary store, loads it with
``mlflow.pyfunc.load_model`` (pickle loading off) and times, on the same rows:

* ``predict`` of the loaded router (validation, routing, sub-model, output frame);
* ``predict_proba`` of the routed sub-model alone (what a plain model would do);

for 1 row and for 100,000 rows, per route. Medians of repeated calls (timeit).

Explanations (issue #14), per route, explain off against on (every term): the pyfunc's
``predict`` and the model server's fast path (``server_guard.fast_answer``, JSON bytes in, JSON
bytes out, what a plain JSON request costs the server besides HTTP), for 1 row and 1,000 rows,
with the garbage collector running (timeit pauses it by default). The fast path explains from
templates made once per codes (``router_model.explain``): timed as served again and again (the
templates made), and with them forgotten before each call (every row's made anew).
``--explain-only`` measures only these.

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


def median_seconds(func, number: int, repeat: int, gc_enabled: bool = False) -> float:
    """Median seconds per call over ``repeat`` runs of ``number`` calls.

    timeit pauses the garbage collector; ``gc_enabled`` keeps it running, for code whose cost
    includes the collections its allocations trigger (explanations).
    """
    func()
    setup = "import gc; gc.enable()" if gc_enabled else "pass"
    return float(np.median(timeit.repeat(func, setup=setup, number=number, repeat=repeat)) / number)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("MUSHROOM_DATA"), help="mushroom_cleaned.csv")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    parser.add_argument("--explain-only", action="store_true", help="only the explain off/on figures")
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
    results: list[dict] = []
    explain = explain_figures(model, frame)
    if args.explain_only:
        if args.out:
            Path(args.out).write_text(json.dumps({"explain": explain}, indent=1))
        return 0
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
        Path(args.out).write_text(json.dumps({"cases": results, "explain": explain}, indent=1))
    return 0


def explain_figures(model, frame) -> list[dict]:
    """Per route and size, explain off vs on: pyfunc ``predict`` and the server's fast path."""
    from router_model import features as F
    from router_model import server_guard

    figures = []
    for route in F.ROUTES:
        columns = list(F.ROUTE_FEATURES[route])
        for n in (1, 1000):
            rows = frame[columns].sample(n, random_state=11).reset_index(drop=True).astype(float)
            number, repeat = (200, 7) if n == 1 else (5, 7)
            case: dict = {"route": route, "rows": n}
            for name, params in (("off", {}), ("on", {"explain": True})):
                body = json.dumps(
                    {
                        "dataframe_split": {"columns": columns, "data": rows.to_numpy().tolist()},
                        "params": params,
                    }
                ).encode()
                assert server_guard.fast_answer(body, "application/json", model) is not None
                typed = {"explain": True} if params else None
                case[f"predict_{name}_ms"] = 1e3 * median_seconds(
                    lambda rows=rows, typed=typed: model.predict(rows, params=typed), number, repeat, True
                )
                case[f"fast_{name}_ms"] = 1e3 * median_seconds(
                    lambda body=body: server_guard.fast_answer(body, "application/json", model),
                    number,
                    repeat,
                )
                case[f"answer_{name}_bytes"] = len(server_guard.fast_answer(body, "application/json", model))
            pieces = model.unwrap_python_model().router._terms[route].json_pieces()  # the loaded route's

            def cold(body=body, pieces=pieces):
                pieces.forget()
                return server_guard.fast_answer(body, "application/json", model)

            case["fast_on_cold_ms"] = 1e3 * median_seconds(cold, number, repeat)
            figures.append(case)
            print(
                f"explain {route:<20} {n:>5} rows: predict {case['predict_off_ms']:.3f} -> {case['predict_on_ms']:.3f}"
                f" ms, fast path {case['fast_off_ms']:.3f} -> {case['fast_on_ms']:.3f} ms "
                f"(templates made anew {case['fast_on_cold_ms']:.3f} ms), answer "
                f"{case['answer_off_bytes']:,} -> {case['answer_on_bytes']:,} bytes",
                flush=True,
            )
    return figures


if __name__ == "__main__":
    sys.exit(main())
