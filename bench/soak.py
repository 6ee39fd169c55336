"""Soak run: 16 clients send valid mixed requests to a real `mlflow models serve` for two minutes.

Trains the router on the built-in synthetic sample in a temporary MUSHROOM_HOME (its own SQLite
MLflow store), serves it with ``router_model.serving.start_server`` on 127.0.0.1, and runs
``--clients`` threads (one ``requests.Session`` each) for ``--seconds``: batches of 1-100 rows of
both feature sets, hyphen and underscore spellings (mixed within a batch), every JSON envelope and
``text/csv``. Every answer must be 200 with one prediction per row.

Reports total requests, non-2xx answers, requests/s, p50/p99 latency and the resident memory of
the server (the uvicorn process and its workers, summed) after ``--warmup`` seconds and at the end,
with the drift between the two. Then sends one body over the server's size limit (200 MB), which
must get 413 while the server keeps serving, and reports its memory peak. Prints a Markdown
snippet (also written to ``--out``) and exits 1 if any answer was not 2xx, the big body was not
refused, or the memory grew by more than ``--max-drift`` percent.

Usage: ``python bench/soak.py [--seconds 120] [--clients 16] [--out soak.md]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import psutil
import requests
from benchlib import free_port, machine, wait_ping

from router_model import features as F
from router_model import serving

HOST = "127.0.0.1"  # the only host this script ever sends to
ENVELOPES = ("dataframe_records", "dataframe_split", "instances", "inputs_records", "inputs_columns", "csv")
#: Upper bound on requests per client, whatever --seconds says.
MAX_REQUESTS_PER_CLIENT = 1_000_000


def _value(rng: random.Random, column: str) -> float:
    if column in F.CATEGORY_CARDINALITY:
        return rng.randrange(F.CATEGORY_CARDINALITY[column])
    if column == F.SEASON:
        return rng.choice(F.SEASON_VALUES)
    return round(rng.uniform(0, 2000), 2)


def _row(rng: random.Random, underscore: bool) -> dict:
    routes = rng.choice([(F.NAIVE_BAYES,), (F.LOGISTIC_REGRESSION,), F.ROUTES])
    row = {}
    for route in routes:
        for column in F.ROUTE_FEATURES[route]:
            name = column.replace("-", "_") if underscore or rng.random() < 0.2 else column
            row[name] = _value(rng, column)
    return row


def make_body(rng: random.Random) -> tuple[bytes, str, int]:
    """One valid request: (body, content type, number of rows)."""
    n = rng.choice([1, 1, 2, 5, 10, 25, 50, 100, rng.randint(1, 100)])
    underscore = rng.random() < 0.5
    rows = [_row(rng, underscore) for _ in range(n)]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    envelope = rng.choice(ENVELOPES)
    if envelope == "csv":
        return pd.DataFrame(rows, columns=columns).to_csv(index=False).encode(), "text/csv", n
    full = [{c: row.get(c) for c in columns} for row in rows]
    payload: dict = {
        "dataframe_records": lambda: {"dataframe_records": rows},
        "dataframe_split": lambda: {
            "dataframe_split": {"columns": columns, "data": [list(r.values()) for r in full]}
        },
        "instances": lambda: {"instances": full},
        "inputs_records": lambda: {"inputs": full},
        "inputs_columns": lambda: {"inputs": {c: [r[c] for r in full] for c in columns}},
    }[envelope]()
    if rng.random() < 0.3:
        payload["params"] = {"threshold": round(rng.random(), 3)}
    return json.dumps(payload).encode(), "application/json", n


@dataclass
class Tally:
    """What one client saw."""

    latencies: list[float] = field(default_factory=list)
    ok: int = 0
    non2xx: int = 0
    errors: int = 0
    wrong_rows: int = 0
    examples: list[str] = field(default_factory=list)


def client(
    url: str, bodies: list, deadline: float, stop_event: threading.Event, seed: int, tally: Tally
) -> None:
    rng = random.Random(seed)
    with requests.Session() as session:
        for _ in range(MAX_REQUESTS_PER_CLIENT):
            if stop_event.is_set() or time.monotonic() >= deadline:
                return
            body, content_type, n = rng.choice(bodies)
            started = time.perf_counter()
            try:
                response = session.post(url, data=body, headers={"Content-Type": content_type}, timeout=30)
            except requests.RequestException as err:
                tally.errors += 1
                if len(tally.examples) < 3:
                    tally.examples.append(f"{type(err).__name__}: {err}")
                continue
            tally.latencies.append(time.perf_counter() - started)
            if not 200 <= response.status_code < 300:
                tally.non2xx += 1
                if len(tally.examples) < 3:
                    tally.examples.append(f"{response.status_code}: {response.text[:200]}")
                continue
            if len(response.json()["predictions"]) != n:
                tally.wrong_rows += 1
                continue
            tally.ok += 1


def server_rss(pid: int) -> int:
    """Resident bytes of the uvicorn process under ``pid`` and all its children."""
    root = psutil.Process(pid)
    tree = [root, *root.children(recursive=True)]
    uvicorn = [p for p in tree if any("uvicorn" in part for part in _cmdline(p))]
    top = uvicorn[0] if uvicorn else root
    total = 0
    for proc in [top, *top.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def start_server(home: Path, port: int) -> subprocess.Popen:
    """Train on synthetic data into ``home`` and serve the champion on ``port``."""
    for name in ("MUSHROOM_DATA", "MUSHROOM_MODEL_URI", "MUSHROOM_ARTIFACT_ROOT", "MUSHROOM_DATA_DIR"):
        os.environ.pop(name, None)
    os.environ["MUSHROOM_HOME"] = str(home)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{home / 'mlflow.db'}"
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    from router_model import pipeline

    outcome = pipeline.retrain(source="synthetic")
    print(f"trained and registered version {outcome['version']} ({outcome['alias']}) in {home}", flush=True)
    log = open(home / "serve.log", "wb")  # noqa: SIM115 - the server process owns it until it exits
    return serving.start_server(
        host=HOST, port=port, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def oversized_body(url: str, pid: int, megabytes: int) -> dict:
    """POST one body of ``megabytes`` MB: the server must refuse it (413) and keep serving.

    Returns:
        The status, seconds to the answer, and the server's resident memory before and at its peak
        (sampled every 50 ms while the request runs).
    """
    record = b'{"cap-diameter": 1372, "cap-shape": 2, "gill-attachment": 2, "gill-color": 10},'
    body = b'{"dataframe_records": [' + record * (megabytes * 1_000_000 // len(record)) + record[:-1] + b"]}"
    before = server_rss(pid)
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], server_rss(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    try:
        response = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=300)
    finally:
        done.set()
        sampler.join()
    return {
        "megabytes": len(body) / 1e6,
        "status": response.status_code,
        "seconds": time.monotonic() - started,
        "rss_before": before,
        "rss_peak": peak[0],
        "message": response.json().get("message", "") if response.status_code != 200 else "",
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="load duration, warm-up included")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--warmup", type=float, default=10.0, help="seconds before the baseline memory sample"
    )
    parser.add_argument("--max-drift", type=float, default=10.0, help="allowed memory growth in percent")
    parser.add_argument("--bodies", type=int, default=500, help="distinct request bodies to cycle through")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default=None, help="also write the Markdown snippet here")
    parser.add_argument("--oversized-mb", type=int, default=200, help="size of the body that must get 413")
    args = parser.parse_args(argv)
    if args.seconds <= args.warmup:
        parser.error("--seconds must exceed --warmup")

    rng = random.Random(args.seed)
    bodies = [make_body(rng) for _ in range(args.bodies)]
    with tempfile.TemporaryDirectory(prefix="mushroom-soak-") as tmp:
        home = Path(tmp)
        port = free_port()
        proc = start_server(home, port)
        try:
            startup = wait_ping(port, proc)
            print(
                f"serving on {HOST}:{port} after {startup:.1f}s; {args.clients} clients for {args.seconds:.0f}s"
            )
            url = f"http://{HOST}:{port}/invocations"
            stop_event = threading.Event()
            started = time.monotonic()
            deadline = started + args.seconds
            tallies = [Tally() for _ in range(args.clients)]
            threads = [
                threading.Thread(
                    target=client,
                    args=(url, bodies, deadline, stop_event, args.seed + i, tallies[i]),
                    daemon=True,
                )
                for i in range(args.clients)
            ]
            for thread in threads:
                thread.start()
            time.sleep(args.warmup)
            rss_warm = server_rss(proc.pid)
            peak = rss_warm
            while time.monotonic() < deadline - 0.5 and any(t.is_alive() for t in threads):
                time.sleep(min(5.0, max(0.0, deadline - 0.5 - time.monotonic())))
                peak = max(peak, server_rss(proc.pid))
            rss_end = server_rss(proc.pid)
            peak = max(peak, rss_end)
            for thread in threads:
                thread.join(timeout=60)
            stop_event.set()
            elapsed = time.monotonic() - started
            big = oversized_body(url, proc.pid, args.oversized_mb)
            server_alive = proc.poll() is None and requests.get(f"http://{HOST}:{port}/ping", timeout=10).ok
        finally:
            serving.stop_server(proc)
        log_tail = (home / "serve.log").read_text(errors="replace").splitlines()[-5:]

    latencies = [x for t in tallies for x in t.latencies]
    total = sum(len(t.latencies) + t.errors for t in tallies)
    non2xx = sum(t.non2xx for t in tallies)
    errors = sum(t.errors for t in tallies)
    wrong_rows = sum(t.wrong_rows for t in tallies)
    drift = (rss_end - rss_warm) / rss_warm * 100
    mib = 1024 * 1024
    facts = machine()
    snippet = "\n".join(
        [
            f"### Soak run: {args.clients} clients, {args.seconds:.0f} s",
            "",
            "| figure | value |",
            "|---|---|",
            f"| requests | {total:,} |",
            f"| non-2xx answers | {non2xx} |",
            f"| connection errors | {errors} |",
            f"| answers with the wrong number of rows | {wrong_rows} |",
            f"| requests/s | {total / elapsed:,.1f} |",
            f"| latency p50 | {percentile(latencies, 0.50) * 1000:.1f} ms |",
            f"| latency p99 | {percentile(latencies, 0.99) * 1000:.1f} ms |",
            f"| latency mean | {statistics.fmean(latencies) * 1000:.1f} ms |"
            if latencies
            else "| latency | - |",
            f"| server RSS after {args.warmup:.0f} s warm-up | {rss_warm / mib:.1f} MiB |",
            f"| server RSS at the end | {rss_end / mib:.1f} MiB |",
            f"| server RSS peak (5 s samples) | {peak / mib:.1f} MiB |",
            f"| memory drift | {drift:+.1f}% (limit +{args.max_drift:.0f}%) |",
            f"| then one {big['megabytes']:,.0f} MB body | **{big['status']}** in {big['seconds']:.1f} s; server RSS "
            f"{big['rss_before'] / mib:.0f} MiB before, {big['rss_peak'] / mib:.0f} MiB peak; "
            f"{'still serving' if server_alive else 'SERVER DOWN'} |",
            "",
            f"Requests: batches of 1-100 valid rows of both feature sets, hyphen and underscore "
            f"spellings, all JSON envelopes and text/csv ({args.bodies} distinct bodies, seed {args.seed}); "
            f"one uvicorn worker on {HOST}. Machine: {facts['machine']}; Python {facts['python']}; "
            f"{facts['versions']}; {facts['date']}.",
        ]
    )
    print(snippet)
    if args.out:
        Path(args.out).write_text(snippet + "\n")
    problems = []
    if non2xx or errors or wrong_rows:
        examples = [e for t in tallies for e in t.examples][:3]
        problems.append(f"{non2xx} non-2xx, {errors} errors, {wrong_rows} wrong row counts: {examples}")
    if big["status"] != 413:
        problems.append(
            f"a {big['megabytes']:.0f} MB body got {big['status']}, not 413: {big['message'][:200]}"
        )
    if drift > args.max_drift:
        problems.append(f"memory grew {drift:.1f}% > {args.max_drift:.0f}%")
    if not server_alive:
        problems.append("the server exited during the run; last log lines: " + " | ".join(log_tail))
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
