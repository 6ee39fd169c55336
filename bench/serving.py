"""Serving benchmark: the router against its own Logistic Regression sub-model served plainly.

Three ``mlflow models serve --env-manager local`` processes with the same worker count on
loopback: the router, the LR sub-model as a plain ``mlflow.sklearn`` model answering labels
(``plain``), and the same answering ``predict_proba`` (``plain_proba``). wrk (a C load generator)
sends them the identical requests, taking the servers in turn each round: single rows and batches
of 100, 1,000 and 10,000 rows of the real data's LR features. Also measures the cold start of
``mushroom-router serve`` and the wall time of ``mushroom-router train`` on the real data (which
registers the router it then serves).

Usage: ``python bench/serving.py --data mushroom_cleaned.csv [--duration 10] [--out results.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from benchlib import BIN, REPO, free_port, wait_ping

from router_model import features as F
from router_model import serving

BATCHES = (1, 100, 1000, 10000)
#: The router, its LR sub-model answering labels, and the same answering probabilities.
SERVERS = ("router", "plain", "plain_proba")
RESULT = re.compile(r"RESULT (.*)")


def wrk(port: int, body_file: Path, duration: int, connections: int, threads: int) -> dict[str, float]:
    """One wrk run against /invocations; returns requests/s, latency percentiles and error counts."""
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{duration}s",
            "--timeout",
            "30s",
            "-s",
            str(REPO / "bench" / "post.lua"),
            f"http://127.0.0.1:{port}/invocations",
        ],
        env={**os.environ, "BODY_FILE": str(body_file)},
        capture_output=True,
        text=True,
        check=True,
    )
    fields = dict(kv.split("=") for kv in RESULT.search(out.stdout).group(1).split())
    seconds = int(fields["duration_us"]) / 1e6
    return {
        "requests": int(fields["requests"]),
        "rps": int(fields["requests"]) / seconds,
        "p50_ms": int(fields["p50_us"]) / 1000,
        "p99_ms": int(fields["p99_us"]) / 1000,
        "non2xx": int(fields["non2xx"]),
        "socket_errors": int(fields["socket_errors"]),
    }


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        args, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("MUSHROOM_DATA"), help="mushroom_cleaned.csv")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating router/plain rounds per case")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers of each server")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    if not args.data:
        print("no data: pass --data or set MUSHROOM_DATA", file=sys.stderr)
        return 2
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk); `make bench` installs it", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="mushroom-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MUSHROOM_", "MLFLOW_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        MUSHROOM_HOME=str(work),
        MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}",
    )
    results: dict = {
        "duration_s": args.duration,
        "connections": args.connections,
        "threads": args.threads,
        "workers": args.workers,
    }

    started = time.monotonic()
    train = subprocess.run(
        [str(BIN / "mushroom-router"), "train", "--data", args.data], env=env, capture_output=True, text=True
    )
    if train.returncode != 0:
        print(train.stderr[-3000:], file=sys.stderr)
        return 1
    results["train_seconds"] = time.monotonic() - started
    print(f"train on the real data: {results['train_seconds']:.1f}s", flush=True)

    # The plain model: the router's own LR sub-model as an ordinary mlflow.sklearn model.
    os.environ.update({k: env[k] for k in ("MUSHROOM_HOME", "MLFLOW_TRACKING_URI")})
    import mlflow

    from router_model import registry
    from router_model.submodels import TRUSTED_TYPES

    router = registry.load_router("models:/mushroom-router@champion")
    lr_model = router.submodels[F.LOGISTIC_REGRESSION]
    frame = pd.read_csv(args.data)[list(F.LR_FEATURES)].astype(float)
    # "plain" answers labels (mlflow.sklearn's default); "plain_proba" answers predict_proba, the
    # probabilities the router's answer also carries, so the answer's size is separated from routing.
    plain_dirs = {"plain": work / "plain-lr", "plain_proba": work / "plain-lr-proba"}
    for name, predict_fn in (("plain", "predict"), ("plain_proba", "predict_proba")):
        example = frame.iloc[:5]
        mlflow.sklearn.save_model(
            lr_model,
            str(plain_dirs[name]),
            serialization_format="skops",
            skops_trusted_types=list(TRUSTED_TYPES),
            pyfunc_predict_fn=predict_fn,
            signature=mlflow.models.infer_signature(
                example, getattr(lr_model, predict_fn)(example.to_numpy())
            ),
        )

    # Cold start: launch `mushroom-router serve` to the first 200 on /ping.
    cold = []
    for _ in range(3):
        port = free_port()
        launched = time.monotonic()
        proc = start([str(BIN / "mushroom-router"), "serve", "--port", str(port)], env, work / "cold.log")
        try:
            wait_ping(port, proc)
            cold.append(time.monotonic() - launched)
        finally:
            serving.stop_server(proc)
    results["cold_start_seconds"] = cold
    print(f"cold start: {', '.join(f'{c:.1f}s' for c in cold)}", flush=True)

    ports = {name: free_port() for name in SERVERS}
    serve = [
        str(BIN / "mlflow"),
        "models",
        "serve",
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "--workers",
        str(args.workers),
    ]
    procs = {
        "router": start(
            [*serve, "-m", "models:/mushroom-router@champion", "--port", str(ports["router"])],
            {**env, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"},
            work / "router.log",
        ),
        # mlflow.sklearn gates every serialization format (skops too) behind this switch.
        **{
            name: start(
                [*serve, "-m", str(path), "--port", str(ports[name])],
                {**env, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true"},
                work / f"{name}.log",
            )
            for name, path in plain_dirs.items()
        },
    }
    try:
        for name, proc in procs.items():
            wait_ping(ports[name], proc)
        cases = []
        for batch in BATCHES:
            rows = frame.sample(batch, replace=batch > len(frame), random_state=batch)
            body = work / f"body-{batch}.json"
            body.write_text(
                json.dumps(
                    {"dataframe_split": {"columns": list(F.LR_FEATURES), "data": rows.to_numpy().tolist()}}
                )
            )
            runs: dict[str, list[dict]] = {name: [] for name in SERVERS}
            for _ in range(args.rounds):
                for name in SERVERS:
                    runs[name].append(wrk(ports[name], body, args.duration, args.connections, args.threads))
            case = {"batch": batch}
            for name, measured in runs.items():
                case[name] = {
                    "rps": statistics.median(r["rps"] for r in measured),
                    "rows_per_s": statistics.median(r["rps"] for r in measured) * batch,
                    "p50_ms": statistics.median(r["p50_ms"] for r in measured),
                    "p99_ms": statistics.median(r["p99_ms"] for r in measured),
                    "non2xx": sum(r["non2xx"] for r in measured),
                    "socket_errors": sum(r["socket_errors"] for r in measured),
                    "requests": sum(r["requests"] for r in measured),
                }
            case["ratio"] = case["router"]["rps"] / case["plain"]["rps"]
            case["ratio_proba"] = case["router"]["rps"] / case["plain_proba"]["rps"]
            cases.append(case)
            print(
                f"batch {batch:>5}: router {case['router']['rps']:8.1f} req/s, plain {case['plain']['rps']:8.1f}"
                f" req/s, ratio {case['ratio']:.3f}; plain_proba {case['plain_proba']['rps']:8.1f} req/s, ratio "
                f"{case['ratio_proba']:.3f}; non-2xx {'/'.join(str(case[n]['non2xx']) for n in SERVERS)}",
                flush=True,
            )
        results["cases"] = cases
    finally:
        for proc in procs.values():
            serving.stop_server(proc)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
