"""What ``GET /metrics`` costs the model server: the same router served with metrics on and off.

Two ``mlflow models serve --env-manager local`` processes of the router trained on the real data,
identical but for ``MUSHROOM_METRICS=off`` in one; the inference log is off in both, so the
difference is the counting alone (with the log on, its callback already runs on every request
and the counting adds less). wrk posts identical bodies (single rows as ``dataframe_records``,
1,000-row batches as ``dataframe_split``), taking the two servers in turn each round, while a
scraper reads ``/metrics`` of the server that has it once a second, as Prometheus would. The
machine may be shared, so each round's ratio compares two runs made seconds apart, the rounds come
from several pairs of servers each started afresh, laid out at random (:data:`serving.LAYOUTS`), and
the estimate is their geometric mean with a 95% interval over the pairs (:func:`serving.paired`);
the load average is reported with them. Each server's CPU time per answered request is measured
around each run too (as in bench/inference_log.py): its main thread's, where requests are answered
under the GIL, moves less with the machine's other load than the requests/s do. Where valgrind is
installed, the instructions a request executes on each server are counted too (bench/instructions.py):
exact where the requests/s are not.

Usage: ``python bench/metrics.py --data mushroom_cleaned.csv [--duration 2] [--rounds 6] [--pairs 10]
[--batches 1 1000] [--out x.json]``
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

import instructions
import pandas as pd
import requests
from benchlib import on_off_parser, trained_work, wrk_ready
from serving import LAYOUTS, merged, on_off, served_alike, write_body

from router_model import features as F
from router_model import metrics, serving

BATCHES = (1, 1000)
SERVERS = ("metrics_on", "metrics_off")
#: Seconds between scrapes of the server with metrics (Prometheus' default is 60 s; the stack uses 15 s).
SCRAPE_SECONDS = 1.0


def in_process(
    frame: pd.DataFrame, work: Path, batches: tuple[int, ...] = BATCHES, repeat: int = 2000
) -> dict:
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

    for batch in batches:
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
    args = on_off_parser(__doc__.splitlines()[0], BATCHES).parse_args(argv)
    batches = tuple(args.batches)
    if not wrk_ready(args):
        return 2

    trained = trained_work("mushroom-bench-metrics-", args.data, MUSHROOM_INFERENCE_LOG="off")
    if trained is None:
        return 1
    work, env = trained
    stop = threading.Event()
    scrapes = {"count": 0, "failed": 0}
    scraped: dict[str, int | None] = {"port": None}  # the server with metrics of the current pair

    def scrape() -> None:
        while not stop.wait(SCRAPE_SECONDS):
            if scraped["port"] is None:
                continue
            try:
                ok = requests.get(f"http://127.0.0.1:{scraped['port']}/metrics", timeout=5).ok
            except requests.RequestException:
                ok = False
            scrapes["count"] += 1
            scrapes["failed"] += not ok

    results: dict = {
        "duration_s": args.duration,
        "rounds": args.rounds,
        "pairs": args.pairs,
        "connections": args.connections,
        "threads": args.threads,
        "scrape_seconds": SCRAPE_SECONDS,
        "layouts": LAYOUTS,
    }
    scraper = threading.Thread(target=scrape, daemon=True)
    scraper.start()
    frame = pd.read_csv(args.data)[list(F.LR_FEATURES)].astype(float)
    bodies = {b: write_body(frame.sample(b, random_state=b), work / f"body-{b}.json") for b in batches}
    cases: dict[int, list[dict]] = {b: [] for b in batches}
    try:
        envs = {
            name: {
                **serving.serve_env(env),
                **({metrics.METRICS_ENV: metrics.OFF} if name == "metrics_off" else {}),
            }
            for name in SERVERS
        }
        for pair in range(args.pairs):
            with served_alike(envs, work / f"pair-{pair}", reverse=pair % 2 == 1) as (ports, procs):
                pids = {name: proc.pid for name, proc in procs.items()}
                off = requests.get(f"http://127.0.0.1:{ports['metrics_off']}/metrics", timeout=5).status_code
                assert off == 404, f"the server with MUSHROOM_METRICS=off answered /metrics with {off}"
                scraped["port"] = ports["metrics_on"]
                try:
                    for batch in batches:
                        cases[batch].append(on_off(ports, SERVERS, bodies[batch], batch, args, pids))
                        ratio = merged(cases[batch][-1:], SERVERS)["paired"]["mean"]
                        print(f"pair {pair + 1}, batch {batch:>5}: on/off {ratio:.3f}", flush=True)
                finally:
                    scraped["port"] = None
                final = requests.get(f"http://127.0.0.1:{ports['metrics_on']}/metrics", timeout=5).text
                results["metrics_bytes"] = len(final)
    finally:
        stop.set()
    results["cases"] = [merged(cases[b], SERVERS) for b in batches]
    for case in results["cases"]:
        paired, loads, main_ = case["paired"], case["load_average"], case["main_paired"]
        print(
            f"batch {case['batch']:>5}: metrics on {case['metrics_on']['rps']:.1f} req/s, off "
            f"{case['metrics_off']['rps']:.1f}; on/off {paired['mean']:.3f} (95% {paired['low']:.3f}-"
            f"{paired['high']:.3f}, {args.pairs} pairs of servers, {args.rounds} rounds each; pairs "
            f"{', '.join(f'{x:.3f}' for x in case['pair_ratios'])}); main thread CPU a request off/on "
            f"{main_['mean']:.3f} (95% {main_['low']:.3f}-{main_['high']:.3f}); load average "
            f"{loads['min']:.1f}-{loads['max']:.1f}",
            flush=True,
        )
    results["scrapes"] = dict(scrapes)
    print(f"scrapes during the runs: {scrapes['count']} ({scrapes['failed']} failed)", flush=True)
    results["in_process"] = in_process(frame, work, batches)
    for r in results["in_process"]["predict"]:
        print(
            f"in process, {r['batch']} rows: predict {r['without_ms']:.3f} ms, with the counting "
            f"{r['with_ms']:.3f} ms",
            flush=True,
        )
    print(
        f"request-counting middleware: {results['in_process']['middleware_us']:.1f} us a request", flush=True
    )
    if args.out:  # the timed figures are kept whatever happens to the count below
        Path(args.out).write_text(json.dumps(results, indent=2))
    if instructions.available():
        results["instructions"] = instructions.measure(work, env, frame)
        for case in results["instructions"]["cases"]:
            print(f"instructions a request, batch {case['batch']:>5}: on/off {case['ratio']:.4f}", flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=2))
    else:
        print("instructions a request: not counted (valgrind is not installed)", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
