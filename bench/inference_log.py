"""What the inference log costs the model server: the same router served with the log on and off.

Two ``mlflow models serve --env-manager local`` processes of the router trained on the real data,
identical but for ``MUSHROOM_INFERENCE_LOG``: Parquet files in a folder of its own in one (the
default sink), ``off`` in the other; ``/metrics`` is on in both, as served. wrk posts the same
bodies to both (single rows as ``dataframe_records``, 1,000-row batches as ``dataframe_split``),
taking each in turn from :data:`DISTINCT_ROWS` real rows, so the log writes rows as varied as real
traffic's (one body repeated compresses far better, and flatters the writer); it takes the
two servers in turn each round with the first alternating, so load from other processes on a
shared machine falls on both alike; each round's ratio compares two runs made seconds apart. The
rounds come from several pairs of servers, each pair started afresh, since two processes differ
by a few per cent for their whole life (:func:`serving.paired`: geometric mean and 95% interval
over the pairs).

After the runs the log server is stopped with SIGTERM (it flushes what it holds) and its Parquet
files are counted against the rows it answered, so a cheap log that loses rows cannot pass.

Each server's CPU time per answered request is measured too (its process, its uvicorn child and
the log's writer process, around each wrk run): other processes slow a server down without adding
to its CPU time, so for a CPU-bound server ``cpu_paired`` (off over on) is the steadier figure of
what the log costs. Its main thread's alone (``main_paired``) says how much of that lands where a
saturated server's throughput is made; the rest is the writer process, which can use another core.

The log's own cost is then timed in one process, in CPU time: the request path (the router's
observer copying the batch into the shared memory the writer process reads) and the writer's work
per request (turning the batches into one table and writing it), which on busy cores competes with
requests for the CPU, set against the CPU time the server without the log spends on a request.

Usage: ``python bench/inference_log.py --data mushroom_cleaned.csv [--duration 2] [--rounds 6] [--pairs 10]
[--batches 1 1000] [--out x.json]``
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import requests
from benchlib import on_off_parser, trained_work, wrk_ready
from serving import LAYOUTS, merged, on_off, served_alike, write_bodies

from router_model import features as F
from router_model import inference_log, log_process, serving

BATCHES = (1, 1000)
SERVERS = ("log_on", "log_off")
#: Distinct real rows the bodies of each batch size are cut from (each row in one body; the rows
#: cycle far beyond what the Parquet writer's LZ4 looks back over).
DISTINCT_ROWS = 50_000
#: The log's share of the server's time must stay within this (issue #13).
TARGET = 0.05


def _cpu_timed(func, repeat: int) -> list[float]:
    """CPU seconds of this process for each of ``repeat`` calls (the load of others does not count)."""
    out = []
    for _ in range(repeat):
        started = time.process_time()
        func()
        out.append(time.process_time() - started)
    return out


def in_process(
    frame: pd.DataFrame, work: Path, batches: tuple[int, ...] = BATCHES, repeat: int = 2000
) -> list[dict]:
    """The log's cost per request in this process: request path and writer, per batch size.

    The loaded router's ``predict`` with the served model's observer feeding a real
    :class:`router_model.log_process.ProcessLog` (Parquet files) against ``predict`` with no
    observer, alternating; then the writer's work (an
    :class:`router_model.inference_log.InferenceLog`'s ``_write``, as in the writer process) on a
    flush's worth of batches.
    """
    import mlflow

    from router_model import registry
    from router_model.router import MushroomRouterModel

    registry.client()
    model = mlflow.pyfunc.load_model("models:/mushroom-router@champion").unwrap_python_model()
    assert isinstance(model, MushroomRouterModel)
    log = inference_log.InferenceLog(inference_log.ParquetSink(work / "inproc"), flush_seconds=3600)
    served = log_process.ProcessLog(str(work / "inproc"))
    # As in a server that has logged its first ring's worth: the shared memory's pages are in place
    # (the first pass through them costs a page fault each, once in a server's life).
    served.ring.prefault()
    # What load_context sets inside the scoring server, with the metrics off: the log alone.
    model._log, model._metrics, model._run_id = served, None, "bench"
    observe = model.observer()
    out = []
    try:
        for batch in batches:
            rows = frame.sample(batch, random_state=batch)
            n = repeat if batch == 1 else repeat // 10
            timings: dict[str, list[float]] = {"with": [], "without": []}
            for _ in range(n):
                for name, callback in (("without", None), ("with", observe)):
                    started = time.process_time()
                    model.router.predict(rows, observe=callback)
                    timings[name].append(time.process_time() - started)
            # A flush's worth of this batch size, as the writer thread receives it: distinct rows,
            # as served (the same rows over and over compress far better than real traffic).
            per_flush = 2000 if batch == 1 else 50
            distinct = frame.sample(per_flush * batch, random_state=batch).reset_index(drop=True)
            queued: list[inference_log.Batch] = []
            model._log = SimpleNamespace(submit=lambda b, q=queued: q.append(b.copied()))
            for start in range(0, per_flush * batch, batch):
                model.router.predict(distinct.iloc[start : start + batch], observe=model.observer())
            model._log = served
            writes = _cpu_timed(lambda q=queued: log._write(q), 5)  # the writer process's work
            out.append(
                {
                    "batch": batch,
                    "without_ms": statistics.median(timings["without"]) * 1000,
                    "with_ms": statistics.median(timings["with"]) * 1000,
                    "writer_us_per_request": min(writes) / per_flush * 1e6,
                }
            )
    finally:
        served.close()
        log.close()
    return out


def logged_rows(folder: Path) -> int:
    """Rows in the Parquet files of a log folder."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in folder.glob("part-*.parquet"))


def main(argv: list[str] | None = None) -> int:
    args = on_off_parser(__doc__.splitlines()[0], BATCHES).parse_args(argv)
    batches = tuple(args.batches)
    if not wrk_ready(args):
        return 2

    trained = trained_work("mushroom-bench-log-", args.data)
    if trained is None:
        return 1
    work, env = trained
    folder = work / "inference"
    targets = {"log_on": str(folder), "log_off": inference_log.OFF}
    results: dict = {
        "duration_s": args.duration,
        "rounds": args.rounds,
        "pairs": args.pairs,
        "connections": args.connections,
        "threads": args.threads,
        "dropped": 0.0,
        "layouts": LAYOUTS,
    }
    frame = pd.read_csv(args.data)[list(F.LR_FEATURES)].astype(float)
    rows = frame.sample(DISTINCT_ROWS, random_state=7).reset_index(drop=True)
    bodies = {b: write_bodies(rows, b, work / f"bodies-{b}") for b in batches}
    cases: dict[int, list[dict]] = {b: [] for b in batches}
    envs = {name: {**serving.serve_env(env), "MUSHROOM_INFERENCE_LOG": targets[name]} for name in SERVERS}
    for pair in range(args.pairs):
        with served_alike(envs, work / f"pair-{pair}", reverse=pair % 2 == 1) as (ports, procs):
            pids = {name: proc.pid for name, proc in procs.items()}
            for batch in batches:
                cases[batch].append(on_off(ports, SERVERS, bodies[batch], batch, args, pids))
                ratio = merged(cases[batch][-1:], SERVERS)["paired"]["mean"]
                print(f"pair {pair + 1}, batch {batch:>5}: on/off {ratio:.3f}", flush=True)
            scraped = requests.get(f"http://127.0.0.1:{ports['log_on']}/metrics", timeout=5).text
            dropped = [
                line
                for line in scraped.splitlines()
                if line.startswith("mushroom_router_inference_log_dropped")
            ]
            results["dropped"] += sum(float(line.split()[-1]) for line in dropped if "_created" not in line)
    results["cases"] = [merged(cases[b], SERVERS) for b in batches]
    for case in results["cases"]:
        loads = case["load_average"]
        rps, cpu, main_ = case["paired"], case["cpu_paired"], case["main_paired"]
        print(
            f"batch {case['batch']:>5}: log on {case['log_on']['rps']:.1f} req/s, off {case['log_off']['rps']:.1f}; "
            f"on/off {rps['mean']:.3f} (95% {rps['low']:.3f}-{rps['high']:.3f}, {args.pairs} pairs of servers, "
            f"{args.rounds} rounds each; pairs {', '.join(f'{x:.3f}' for x in case['pair_ratios'])}); "
            f"CPU a request on {case['log_on']['cpu_ms_per_request']:.3f} ms, off "
            f"{case['log_off']['cpu_ms_per_request']:.3f} ms (off/on {cpu['mean']:.3f}, 95% "
            f"{cpu['low']:.3f}-{cpu['high']:.3f}); main thread {case['log_on']['main_ms_per_request']:.3f} ms, "
            f"{case['log_off']['main_ms_per_request']:.3f} ms (off/on {main_['mean']:.3f}, 95% "
            f"{main_['low']:.3f}-{main_['high']:.3f}); load average {loads['min']:.1f}-{loads['max']:.1f}",
            flush=True,
        )
    answered = sum(c["log_on"]["requests"] * c["batch"] for c in results["cases"])
    results["rows_answered"] = answered
    results["rows_logged"] = logged_rows(folder)
    print(
        f"log server: {results['rows_logged']:,} rows in Parquet for {answered:,} rows wrk counted as answered "
        f"(wrk leaves in-flight requests uncounted), {results['dropped']:.0f} dropped",
        flush=True,
    )
    results["in_process"] = in_process(frame, work, batches)
    server_ms = {c["batch"]: c["log_off"]["cpu_ms_per_request"] for c in results["cases"]}
    for r in results["in_process"]:
        request_us = (r["with_ms"] - r["without_ms"]) * 1000
        r["server_cpu_ms_per_request"] = server_ms[r["batch"]]
        r["share"] = (request_us + r["writer_us_per_request"]) / (server_ms[r["batch"]] * 1000)
        print(
            f"in process, {r['batch']} rows: predict {r['without_ms']:.3f} ms, with the log's observer "
            f"{r['with_ms']:.3f} ms; writer {r['writer_us_per_request']:.1f} us a request; "
            f"{r['share']:.2%} of the {server_ms[r['batch']]:.3f} ms of CPU the server without the log spends "
            "on a request",
            flush=True,
        )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
