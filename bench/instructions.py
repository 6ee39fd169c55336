"""Instructions a request: the same router served with metrics on and off, counted by callgrind.

Requests/s on a shared machine move by more than a few per cent from one run to the next, so a
cost of a few per cent is at the edge of what wrk resolves (bench/metrics.py). The instructions a
request executes do not move: valgrind's callgrind counts every one. Two servers of the trained
router (``mushroom-router serve``, the app ``mlflow models serve`` runs, in one process) start
under callgrind, identical but for ``MUSHROOM_METRICS=off`` in one; each is sent the same bodies,
one request at a time after a warm-up, and its counters are zeroed before and dumped after. What
comes out is exact but narrow: user-space instructions only, so no time in the kernel, no cache
misses, no waiting for the other core. It says how much work the counting adds, not what that
work costs in time; a wall-clock cost well above it is the machine, not the code. It also gives
the share of the cyclic garbage collector (``gc_collect_main``, inclusive).

Needs valgrind (``apt-get install valgrind``). Run on its own, or from bench/metrics.py.

Usage: ``python bench/instructions.py --data mushroom_cleaned.csv [--requests 100] [--out x.json]``
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from benchlib import free_port, trained_work, wait_ping
from serving import alike, same_size, write_body

from router_model import features as F
from router_model import metrics, serving

BATCHES = (1, 1000)
SERVERS = ("metrics_on", "metrics_off")
#: Requests before the counters are zeroed (caches filled, first-call work done).
WARM_REQUESTS = 20
#: Single-row requests are cheap: this many times more of them, for counts of a similar size.
SINGLE_ROW_FACTOR = 4
#: Seconds to wait for a server under callgrind to answer /ping (imports run about 20x slower).
START_TIMEOUT = 600.0
#: The function whose inclusive count is the cyclic garbage collector's work.
COLLECTOR = "gc_collect_main"


def available() -> bool:
    """Whether valgrind's callgrind and its control tool are installed."""
    return shutil.which("valgrind") is not None and shutil.which("callgrind_control") is not None


def _control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True, timeout=120)


def _send(port: int, body: bytes, n: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    for _ in range(n):
        connection.request("POST", "/invocations", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        answer = response.read()
        if response.status != 200:
            raise RuntimeError(f"port {port} answered {response.status}: {answer[:300]!r}")
    connection.close()


def totals(dump_text: str) -> int:
    """The instructions a callgrind dump counted (its ``totals:`` line)."""
    found = re.search(r"^totals:\s+(\d+)$", dump_text, re.MULTILINE)
    if found is None:
        raise ValueError("no 'totals:' line in the callgrind dump")
    return int(found.group(1))


def inclusive(annotated: str, function: str) -> int:
    """``function``'s inclusive count in ``callgrind_annotate --inclusive=yes`` output (0 if absent).

    A function is listed once per file it was compiled from (inlined parts); the largest is its own.
    """
    pattern = re.compile(r"^\s*([\d,]+) \([^)]*\)\s+\S*:" + re.escape(function) + r"(?: |$)")
    counts = [int(m.group(1).replace(",", "")) for m in map(pattern.match, annotated.splitlines()) if m]
    return max(counts, default=0)


def _counts(dump: Path) -> tuple[int, int]:
    """A dump's total instructions and the collector's inclusive share of them."""
    annotated = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(dump)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return totals(dump.read_text()), inclusive(annotated, COLLECTOR)


def _count(pid: int, port: int, body: bytes, n: int, dumps: str) -> dict[str, float]:
    """One server's instructions a request of ``body``: warm up, zero, send ``n``, dump, read.

    ``dumps`` is the server's ``--callgrind-out-file``; callgrind numbers each dump after it.
    """
    _send(port, body, WARM_REQUESTS)
    _control(pid, "--zero")
    _send(port, body, n)
    _control(pid, "--dump")
    total, collector = _counts(
        max(Path(dumps).parent.glob(f"{Path(dumps).name}.*"), key=lambda p: p.stat().st_mtime)
    )
    return {"per_request": total / n, "collector_share": collector / total}


def measure(work: Path, env: dict[str, str], frame: pd.DataFrame, requests: int = 100) -> dict:
    """Instructions a request of each batch size, for both servers (see the module docstring).

    Args:
        work: A folder with the trained router (``trained_work``); dumps go to ``work/callgrind``.
        env: The servers' environment (the trained home and store).
        frame: Rows of the LR features; the bodies are samples of it, as in bench/metrics.py.
        requests: 1,000-row requests counted per server (single rows: ``SINGLE_ROW_FACTOR`` times more).
    """
    out_dir = work / "callgrind"
    out_dir.mkdir(exist_ok=True)
    bodies = {
        b: write_body(frame.sample(b, random_state=b), work / f"callgrind-body-{b}.json") for b in BATCHES
    }
    envs = same_size(
        {
            name: {
                **serving.serve_env(env),
                "MUSHROOM_INFERENCE_LOG": "off",
                **({metrics.METRICS_ENV: metrics.OFF} if name == "metrics_off" else {}),
            }
            for name in SERVERS
        }
    )
    ports = {name: free_port() for name in SERVERS}
    dumps = {name: str(out_dir / f"callgrind.{name}") for name in SERVERS}
    procs: dict[str, subprocess.Popen] = {}
    results: dict = {"requests": requests, "single_row_requests": requests * SINGLE_ROW_FACTOR, "cases": []}
    try:
        for name in SERVERS:
            command = [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",  # imports run uninstrumented, faster
                f"--callgrind-out-file={dumps[name]}",
                *serving.server_command(port=ports[name]),
            ]
            args, server_env = alike(command, envs[name])
            procs[name] = subprocess.Popen(
                args,
                env=server_env,
                stdout=open(work / f"callgrind-{name}.log", "wb"),  # noqa: SIM115 - the process holds it
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        for name in SERVERS:
            wait_ping(ports[name], procs[name], timeout=START_TIMEOUT)
            _control(procs[name].pid, "--instr=on")
        for batch in BATCHES:
            body = bodies[batch].read_bytes()
            n = requests * (SINGLE_ROW_FACTOR if batch == 1 else 1)
            with ThreadPoolExecutor(len(SERVERS)) as pool:  # both at once: one core each
                counted = pool.map(
                    lambda name, body=body, n=n: _count(procs[name].pid, ports[name], body, n, dumps[name]),
                    SERVERS,
                )
                case: dict = {"batch": batch, **dict(zip(SERVERS, counted, strict=True))}
            case["ratio"] = case["metrics_on"]["per_request"] / case["metrics_off"]["per_request"]
            results["cases"].append(case)
    finally:
        for proc in procs.values():
            serving.stop_server(proc)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="mushroom_cleaned.csv")
    parser.add_argument("--requests", type=int, default=100, help="1,000-row requests counted per server")
    parser.add_argument("--out", help="write the figures here as JSON")
    args = parser.parse_args(argv)
    if not available():
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    trained = trained_work("mushroom-bench-instructions-", args.data, MUSHROOM_INFERENCE_LOG="off")
    if trained is None:
        return 1
    work, env = trained
    frame = pd.read_csv(args.data)[list(F.LR_FEATURES)].astype(float)
    results = measure(work, env, frame, args.requests)
    for case in results["cases"]:
        on, off = case["metrics_on"], case["metrics_off"]
        print(
            f"batch {case['batch']:>5}: instructions a request, metrics on {on['per_request']:,.0f}, off "
            f"{off['per_request']:,.0f}: on/off {case['ratio']:.4f}; the collector's share "
            f"{on['collector_share']:.2%} on, {off['collector_share']:.2%} off",
            flush=True,
        )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
