"""What ``GET /metrics`` costs the model server: the same router served with metrics on and off.

Two ``mlflow models serve --env-manager local`` processes of the router trained on the real data,
identical but for ``MUSHROOM_METRICS=off`` in one; the inference log is off in both, so the
difference is the counting alone (with the log on, its callback already runs on every request
and the counting adds less). wrk posts identical bodies (single rows as ``dataframe_records``,
1,000-row batches as ``dataframe_split``), taking the two servers in turn each round, while a
scraper reads ``/metrics`` of the server that has it once a second, as Prometheus would. The
machine may be shared, so each round's ratio compares two runs made seconds apart, and the load
average is reported with them.

Usage: ``python bench/metrics.py --data mushroom_cleaned.csv [--duration 5] [--rounds 6] [--out x.json]``
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import requests
from benchlib import free_port, trained_work, wait_ping, wrk_parser, wrk_ready
from serving import on_off, start, write_body

from router_model import features as F
from router_model import metrics, serving

BATCHES = (1, 1000)
SERVERS = ("metrics_on", "metrics_off")
#: Seconds between scrapes of the server with metrics (Prometheus' default is 60 s; the stack uses 15 s).
SCRAPE_SECONDS = 1.0


def in_process(frame: pd.DataFrame, work: Path, repeat: int = 2000) -> dict:
    """The counting's own cost, timed in this process where the machine's load matters less.

    The loaded router's ``predict`` with and without the metrics callback (multiprocess values,
    as in the server), alternating, and the request-counting middleware around an app that
    answers at once, against that app alone.
    """
    import asyncio

    from router_model import registry

    os.environ[metrics.MULTIPROC_ENV] = str(work / "values")
    (work / "values").mkdir()
    server_metrics = metrics.ServerMetrics("bench", multiprocess_path=work / "values")
    router = registry.load_router("models:/mushroom-router@champion")
    out: dict = {"predict": []}

    def count(matrix, routes, poisonous, threshold):  # what the served model's callback does
        server_metrics.observe(routes, poisonous, threshold)

    for batch in BATCHES:
        rows = frame.sample(batch, random_state=batch)
        timings: dict[str, list[float]] = {"with": [], "without": []}
        n = repeat if batch == 1 else repeat // 10
        for _ in range(n):
            for name, observe in (("without", None), ("with", count)):
                started = time.perf_counter()
                router.predict(rows, observe=observe)
                timings[name].append(time.perf_counter() - started)
        with_ms = statistics.median(timings["with"]) * 1000
        without_ms = statistics.median(timings["without"]) * 1000
        out["predict"].append({"batch": batch, "with_ms": with_ms, "without_ms": without_ms})

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def send(message):
        return None

    async def receive():
        return {"type": "http.request"}

    counted = metrics.RequestCounter(app, server_metrics)
    scope = {"type": "http", "path": metrics.INVOCATIONS_PATH, "method": "POST"}

    async def loop(target, n):
        started = time.perf_counter()
        for _ in range(n):
            await target(scope, receive, send)
        return (time.perf_counter() - started) / n

    plain = min(asyncio.run(loop(app, 20000)) for _ in range(5))
    wrapped = min(asyncio.run(loop(counted, 20000)) for _ in range(5))
    out["middleware_us"] = (wrapped - plain) * 1e6
    return out


def main(argv: list[str] | None = None) -> int:
    parser = wrk_parser(
        __doc__.splitlines()[0], duration=5, rounds=6, rounds_help="on/off pairs per batch size"
    )
    args = parser.parse_args(argv)
    if not wrk_ready(args):
        return 2

    trained = trained_work("mushroom-bench-metrics-", args.data, MUSHROOM_INFERENCE_LOG="off")
    if trained is None:
        return 1
    work, env = trained
    ports = {name: free_port() for name in SERVERS}
    procs = {}
    for name in SERVERS:
        server_env = {
            **serving.serve_env(env),
            **({metrics.METRICS_ENV: metrics.OFF} if name == "metrics_off" else {}),
        }
        procs[name] = start(serving.serve_command(port=ports[name]), server_env, work / f"{name}.log")
    stop = threading.Event()
    scrapes = {"count": 0, "failed": 0}

    def scrape() -> None:
        while not stop.wait(SCRAPE_SECONDS):
            try:
                ok = requests.get(f"http://127.0.0.1:{ports['metrics_on']}/metrics", timeout=5).ok
            except requests.RequestException:
                ok = False
            scrapes["count"] += 1
            scrapes["failed"] += not ok

    results: dict = {
        "duration_s": args.duration,
        "rounds": args.rounds,
        "connections": args.connections,
        "threads": args.threads,
        "scrape_seconds": SCRAPE_SECONDS,
        "cases": [],
    }
    scraper = threading.Thread(target=scrape, daemon=True)
    frame = pd.read_csv(args.data)[list(F.LR_FEATURES)].astype(float)
    try:
        for name, proc in procs.items():
            wait_ping(ports[name], proc)
        off = requests.get(f"http://127.0.0.1:{ports['metrics_off']}/metrics", timeout=5).status_code
        assert off == 404, f"the server with MUSHROOM_METRICS=off answered /metrics with {off}"
        scraper.start()
        for batch in BATCHES:
            body = write_body(frame.sample(batch, random_state=batch), work / f"body-{batch}.json")
            case = on_off(ports, SERVERS, body, batch, args)
            pairs, loads = case["round_ratios"], case["load_average"]
            results["cases"].append(case)
            print(
                f"batch {batch:>5}: metrics on {case['metrics_on']['rps']:.1f} req/s, off "
                f"{case['metrics_off']['rps']:.1f}; on/off {case['ratio']:.3f} (median of round ratios "
                f"{case['median_round_ratio']:.3f}; rounds {', '.join(f'{p:.3f}' for p in pairs)}); load "
                f"average {loads['min']:.1f}-{loads['max']:.1f}",
                flush=True,
            )
        results["scrapes"] = dict(scrapes)
        final = requests.get(f"http://127.0.0.1:{ports['metrics_on']}/metrics", timeout=5).text
        results["metrics_bytes"] = len(final)
        print(f"scrapes during the runs: {scrapes['count']} ({scrapes['failed']} failed)", flush=True)
    finally:
        stop.set()
        for proc in procs.values():
            serving.stop_server(proc)
    results["in_process"] = in_process(frame, work)
    for r in results["in_process"]["predict"]:
        print(
            f"in process, {r['batch']} rows: predict {r['without_ms']:.3f} ms, with the counting "
            f"{r['with_ms']:.3f} ms",
            flush=True,
        )
    print(
        f"request-counting middleware: {results['in_process']['middleware_us']:.1f} us a request", flush=True
    )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
