"""Latency while `champion` moves: wrk against `mushroom-router supervise`, switching versions in place.

Trains three versions into a private store, starts the supervisor (a subprocess, default poll),
and for 8 and 32 connections alternates a steady wrk window with a window in which `champion`
moves (5 moves each, promotions and rollbacks). Prints per window p50/p99, requests, non-2xx and
socket errors, and the delay from each move to the new version's first answer (a probe reads
``X-Model-Version`` every 20 ms). Writes the figures as JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from benchlib import REPO, free_port, machine
from serving import wrk

CLIENTS = (8, 32)
#: One row on the fast path, as most clients send.
ROW = {"cap-diameter": 1372, "cap-shape": 2, "gill-attachment": 2, "gill-color": 10}
MOVES = [2, 3, 1, 3, 2]


def first_answer(port: int, version: int, since: float, timeout: float = 60.0) -> float:
    """Seconds from ``since`` until an answer says ``X-Model-Version: version``."""
    body = {"dataframe_records": [ROW]}
    while time.monotonic() - since < timeout:
        try:
            got = requests.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=10)
            if got.headers.get("X-Model-Version") == str(version):
                return time.monotonic() - since
        except requests.RequestException:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"version {version} did not answer within {timeout}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default=os.environ.get("MUSHROOM_DATA"), help="training file (default synthetic)"
    )
    parser.add_argument("--window", type=int, default=5, help="seconds per wrk window")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="bench-switch-"))
    env = {
        **os.environ,
        "MUSHROOM_HOME": str(home),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "MUSHROOM_INFERENCE_LOG": "off",
        "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false",
    }
    os.environ.update(env)
    from router_model import pipeline, registry
    from router_model.settings import WEAK_TRAIN_PARAMS
    from router_model.supervisor import read_state

    first = pipeline.retrain(path=args.data) if args.data else pipeline.retrain(source="synthetic")
    for params in (WEAK_TRAIN_PARAMS, {"nb_alpha": 20.0, "lr_c": 0.01}):
        pipeline.train_and_register(first["data"]["path"], train_params=params)
    registry.set_alias("champion", 1)

    port = free_port()
    body = home / "body.json"
    body.write_text(json.dumps({"dataframe_records": [ROW]}))
    log = open(home / "supervise.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "router_model", "supervise", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    cache = home / "data" / "serving"
    results: dict = {"machine": machine(), "window_seconds": args.window, "moves": MOVES, "cases": []}
    results["load_before"] = os.getloadavg()
    try:
        while (read_state(cache) or {}).get("served_version") != 1:
            if proc.poll() is not None:
                raise SystemExit((home / "supervise.log").read_text()[-3000:])
            time.sleep(0.2)
        for clients in CLIENTS:
            steady, switching, delays = [], [], []
            for version in MOVES:
                steady.append(wrk(port, body, args.window, clients, 2))
                delay: list[float] = []

                def move(version: int = version, delay: list[float] = delay) -> None:
                    time.sleep(0.5)
                    moved = time.monotonic()
                    registry.promote(version)
                    delay.append(first_answer(port, version, moved))

                mover = threading.Thread(target=move)
                mover.start()
                switching.append(wrk(port, body, args.window, clients, 2))
                mover.join()
                delays.append(delay[0])
                while (read_state(cache) or {}).get("served_version") != version:
                    time.sleep(0.1)
            case = {
                "clients": clients,
                "steady": summarise(steady),
                "switching": summarise(switching),
                "delay_s": {"median": statistics.median(delays), "max": max(delays)},
            }
            results["cases"].append(case)
            print(
                f"{clients} clients: steady p50 {case['steady']['p50_ms']:.2f} ms p99 "
                f"{case['steady']['p99_ms']:.2f} ms; switching p50 {case['switching']['p50_ms']:.2f} ms "
                f"p99 {case['switching']['p99_ms']:.2f} ms (max {case['switching']['p99_max_ms']:.2f}); "
                f"{case['switching']['requests']} requests while switching, non-2xx "
                f"{case['switching']['non2xx']}, socket errors {case['switching']['socket_errors']}; "
                f"new version answered {case['delay_s']['median']:.1f} s (max {case['delay_s']['max']:.1f} s) "
                "after each move",
                flush=True,
            )
    finally:
        proc.terminate()
        proc.wait(timeout=120)
        log.close()
    results["load_after"] = os.getloadavg()
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


def summarise(windows: list[dict]) -> dict[str, float]:
    """Median p50 and p99 over the windows, the worst p99, and summed counts."""
    return {
        "p50_ms": statistics.median(w["p50_ms"] for w in windows),
        "p99_ms": statistics.median(w["p99_ms"] for w in windows),
        "p99_max_ms": max(w["p99_ms"] for w in windows),
        "rps": statistics.median(w["rps"] for w in windows),
        "requests": sum(w["requests"] for w in windows),
        "non2xx": sum(w["non2xx"] for w in windows),
        "socket_errors": sum(w["socket_errors"] for w in windows),
    }


if __name__ == "__main__":
    sys.exit(main())
