"""Serving benchmark: the router against its plain sub-model and against a hand-written app.

Three ``mlflow models serve --env-manager local`` processes with the same worker count on
loopback: the router, the LR sub-model as a plain ``mlflow.sklearn`` model answering labels
(``plain``), and the same answering ``predict_proba`` (``plain_proba``); and the yardstick
``bench/reference_app.py`` (``reference``: FastAPI + pydantic + pandas + scikit-learn, one record
per request, uvicorn, one worker), the kind of app ``mlflow models serve`` is meant to replace.
wrk (a C load generator) sends them the identical requests, taking the servers in turn each
round: single rows as ``dataframe_records`` (the reference app gets the same record as its own
JSON object), batches of 100, 1,000 and 10,000 rows of the real data's LR features as
``dataframe_split`` (the reference app takes one record per request: its rows/s is its single-row
requests/s), and single rows from 64 concurrent connections. Also measures the wall time of
``mushroom-router train`` on the real data (which registers the router it then serves; the cold
start is ``bench/coldstart.py``'s). Explanations (issue #14): the router with ``explain`` off
against on (every term), single rows and 1,000-row batches, the same bodies but for the param
(``--explain-only`` trains, serves the router alone and measures only these).

Usage: ``python bench/serving.py --data mushroom_cleaned.csv [--duration 10] [--out results.json]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from benchlib import BIN, REPO, bench_env, free_port, train, wait_ping, wrk_parser, wrk_ready

from router_model import features as F
from router_model import log_process, serving

BATCHES = (1, 100, 1000, 10000)
#: The router, its LR sub-model answering labels, and the same answering probabilities.
SERVERS = ("router", "plain", "plain_proba")
#: The hand-written app (bench/reference_app.py) and the path it answers on.
REFERENCE = "reference"
REFERENCE_PATH = "/predict"
#: Concurrent connections of the many-clients case (single rows).
MANY_CLIENTS = 64
RESULT = re.compile(r"RESULT (.*)")


def wrk(
    port: int, body_file: Path, duration: int, connections: int, threads: int, path: str = "/invocations"
) -> dict[str, float]:
    """One wrk run against ``path``; returns requests/s, latency percentiles and error counts.

    ``body_file`` is one body sent on every request, or a ``.list`` file (:func:`write_bodies`)
    naming bodies sent in turn.
    """
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
            f"http://127.0.0.1:{port}{path}",
        ],
        env={**os.environ, "BODY_LIST" if body_file.suffix == ".list" else "BODY_FILE": str(body_file)},
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


def summary(measured: list[dict], batch: int) -> dict[str, float]:
    """The median of the rounds of one server in one case."""
    rps = statistics.median(r["rps"] for r in measured)
    return {
        "rps": rps,
        "rows_per_s": rps * batch,
        "p50_ms": statistics.median(r["p50_ms"] for r in measured),
        "p99_ms": statistics.median(r["p99_ms"] for r in measured),
        "non2xx": sum(r["non2xx"] for r in measured),
        "socket_errors": sum(r["socket_errors"] for r in measured),
        "requests": sum(r["requests"] for r in measured),
    }


def write_body(rows: pd.DataFrame, path: Path, params: dict | None = None) -> Path:
    """A request body of ``rows``: one row as ``dataframe_records``, more as ``dataframe_split``."""
    if len(rows) == 1:
        body: dict = {"dataframe_records": rows.to_dict(orient="records")}
    else:
        body = {"dataframe_split": {"columns": list(rows.columns), "data": rows.to_numpy().tolist()}}
    if params:
        body["params"] = params
    path.write_text(json.dumps(body))
    return path


def write_bodies(rows: pd.DataFrame, batch: int, folder: Path, params: dict | None = None) -> Path:
    """Bodies of ``batch`` rows each, every row of ``rows`` in one of them, and the ``.list`` naming them.

    For servers whose cost depends on the rows themselves (the inference log compresses what it
    writes, and one body sent over and over compresses far better than real traffic).
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = [
        write_body(rows.iloc[start : start + batch], folder / f"body-{start // batch}.json", params)
        for start in range(0, len(rows) - batch + 1, batch)
    ]
    listed = folder / "bodies.list"
    listed.write_text("".join(f"{path}\n" for path in paths))
    return listed


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process and its children (``mlflow models serve`` and its uvicorn).

    Returns:
        ``(all threads, main threads)``: requests are answered on the uvicorn process's main
        thread, which holds the GIL while it does; other threads and processes (the inference
        log's writer process, say) can use another core, so a saturated server's throughput
        follows its main thread. The writer process's CPU counts in all, not in main threads.
    """
    import psutil

    parent = psutil.Process(pid)
    total = main = 0.0
    for proc in (parent, *parent.children(recursive=True)):
        try:
            times = proc.cpu_times()
            threads = proc.threads()
            writer = any(log_process.__name__ in part for part in proc.cmdline())
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
        if not writer:
            main += sum(t.user_time + t.system_time for t in threads if t.id == proc.pid)
    return total, main


def paired(groups: list[list[float]]) -> dict[str, float]:
    """The geometric mean of paired ratios (each round's on over off) and its 95% confidence interval.

    On a shared machine the speed of a run moves by more than a cost being measured, but two runs
    seconds apart move together: each round's ratio is the unit. Two server processes also differ
    by a few per cent for their whole life (:data:`LAYOUTS`), which no number of
    rounds against the same two averages out; so the rounds come in groups, one per pair of
    processes started afresh, and with two groups or more the interval is taken over the groups'
    means. Student's t on the logs, which suits ratios (1.1 and 1/1.1 weigh alike).

    Args:
        groups: Per pair of server processes, its rounds' ratios.

    Returns:
        ``{"mean", "low", "high"}``.
    """
    from scipy import stats

    means = [statistics.fmean(math.log(r) for r in group) for group in groups]
    units = means if len(means) > 1 else [math.log(r) for r in groups[0]]
    mean = statistics.fmean(units)
    half = (
        stats.t.ppf(0.975, len(units) - 1) * statistics.stdev(units) / math.sqrt(len(units))
        if len(units) > 1
        else math.inf
    )
    return {"mean": math.exp(mean), "low": math.exp(mean - half), "high": math.exp(mean + half)}


def merged(cases: list[dict], names: tuple[str, str]) -> dict:
    """The figures of :func:`on_off`'s cases of one batch size, each against a fresh pair of servers.

    Returns:
        ``{"batch", "pairs", <on>: {...}, <off>: {...}, "round_ratios", "paired", "pair_ratios",
        "load_average"}`` (and ``"cpu_paired"``, ``"main_paired"`` when CPU was measured): per
        server :func:`_medians` of every run; ``paired`` :func:`paired` of the round ratios grouped
        by pair, ``pair_ratios`` each pair's own; ``cpu_paired`` and ``main_paired`` likewise for
        the CPU a request, off over on. Only what a renderer reads: a median ratio beside the
        paired one would invite quoting the figure the pairs exist to replace.
    """
    out: dict = {"batch": cases[0]["batch"], "pairs": len(cases)}
    for name in names:
        out[name] = _medians([run for case in cases for run in case["runs"][name]])
    out["round_ratios"] = [r for case in cases for r in case["round_ratios"]]
    out["paired"] = paired([case["round_ratios"] for case in cases])
    out["pair_ratios"] = [paired([case["round_ratios"]])["mean"] for case in cases]
    if "cpu_round_ratios" in cases[0]:
        for key in ("cpu", "main"):
            out[f"{key}_paired"] = paired([case[f"{key}_round_ratios"] for case in cases])
    loads = [case["load_average"] for case in cases]
    out["load_average"] = {"min": min(x["min"] for x in loads), "max": max(x["max"] for x in loads)}
    return out


def _medians(measured: list[dict]) -> dict:
    """One server's runs: the medians of ``rps``, ``p50_ms``, ``p99_ms`` (and CPU a request, when
    measured), the sum of ``non2xx`` and socket errors, and the ``requests`` answered in all."""
    keys = ("rps", "p50_ms", "p99_ms", "cpu_ms_per_request", "main_ms_per_request")
    return {
        **{key: statistics.median(r[key] for r in measured) for key in keys if key in measured[0]},
        "non2xx": sum(r["non2xx"] + r["socket_errors"] for r in measured),
        "requests": sum(r["requests"] for r in measured),
    }


def on_off(
    ports: dict[str, int],
    names: tuple[str, str],
    body: Path,
    batch: int,
    args: argparse.Namespace,
    pids: dict[str, int] | None = None,
) -> dict:
    """Two servers identical but for one switch, measured in turn: what the switch costs.

    ``args.rounds`` rounds of one wrk run each (``args.duration``, ``args.connections``,
    ``args.threads``), the first of each round alternating, so neither always runs on the warmer
    machine and load from other processes falls on both alike. Each round's ratio compares two runs
    made seconds apart.

    With ``pids`` (each server's process), also the CPU time each server spent per answered
    request during its runs: other processes' load slows a server down but does not add to its CPU
    time, so on a shared machine the CPU ratio (off over on) says what the switch costs a CPU-bound
    server more steadily than the requests/s do. The same ratio for the main threads alone (where
    requests are answered, under the GIL) says what the switch costs a single saturated
    server's throughput, when its other threads' work can run on another core.

    Returns:
        ``{"batch", "runs", "round_ratios", "load_average"}`` (and ``"cpu_round_ratios"``,
        ``"main_round_ratios"`` with ``pids``): every server's runs, each round's requests/s on
        over off (CPU a request off over on), the load average's range; :func:`merged` makes the
        figures of one or more such cases.
    """
    on, off = names
    runs: dict[str, list[dict]] = {name: [] for name in names}
    loads = [os.getloadavg()[0]]
    for round_ in range(args.rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            before = cpu_seconds(pids[name]) if pids else (0.0, 0.0)
            run = wrk(ports[name], body, args.duration, args.connections, args.threads)
            if pids:
                after = cpu_seconds(pids[name])
                answered = max(run["requests"], 1)
                run["cpu_ms_per_request"] = (after[0] - before[0]) * 1000 / answered
                run["main_ms_per_request"] = (after[1] - before[1]) * 1000 / answered
            runs[name].append(run)
        loads.append(os.getloadavg()[0])
    case: dict = {
        "batch": batch,
        "runs": runs,
        "round_ratios": [a["rps"] / b["rps"] for a, b in zip(runs[on], runs[off], strict=True)],
        "load_average": {"min": min(loads), "max": max(loads)},
    }
    if pids:
        for key in ("cpu", "main"):
            field = f"{key}_ms_per_request"
            case[f"{key}_round_ratios"] = [
                b[field] / a[field] for a, b in zip(runs[on], runs[off], strict=True)
            ]
    return case


def alike(args: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """A server command and environment that start two processes laid out alike.

    Address-space randomisation off (``setarch -R``, where it exists) and one hash seed make the
    layouts of two processes the same but for what differs between them. For counting
    instructions (bench/instructions.py), where a dict probed differently is work of its own; not
    for timing on/off pairs (:data:`LAYOUTS`).
    """
    env = {**env, "PYTHONHASHSEED": "0"}
    if shutil.which("setarch"):
        return ["setarch", os.uname().machine, "-R", *args], env
    return args, env


#: How :func:`served_alike` lays its servers out, recorded with every on/off result. Two
#: identical servers can differ by several per cent in speed, steadily for their lifetime, from
#: where their memory lands and how their dicts hash. Fixed layouts (:func:`alike`) do not remove
#: that, they draw it once: every pair of servers repeats the same two layouts, so the interval
#: over pairs is narrow around a figure that holds for those two only. Left random, as on users'
#: machines, each pair is a fresh draw and the interval over pairs covers the layouts' spread.
LAYOUTS = "random"


#: The variables :func:`same_size` adds: fillers up to the same count, then one of padding.
PAD_PREFIX = "BENCH_ENV_PAD"


def same_size(envs: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """The environments given the same number of variables and the same size in bytes, by padding.

    A process starts with its environment copied onto its stack, so its size shifts where the
    stack and what is laid out after it land. The switch an on/off benchmark measures is itself
    a variable (``MUSHROOM_METRICS=off`` in one server only); padded alike, the two servers
    differ by the switch's meaning, not its size.
    """
    count = max(len(env) for env in envs.values())
    filled = {
        name: {**env, **{f"{PAD_PREFIX}_{k}": "" for k in range(count - len(env))}}
        for name, env in envs.items()
    }

    def size(env: dict[str, str]) -> int:  # bytes on the stack: "NAME=value\0" each
        return sum(len(os.fsencode(k)) + len(os.fsencode(v)) + 2 for k, v in env.items())

    largest = max(size(env) for env in filled.values())
    return {name: {**env, PAD_PREFIX: "x" * (largest - size(env))} for name, env in filled.items()}


@contextlib.contextmanager
def served_alike(
    envs: dict[str, dict[str, str]], logs: Path, reverse: bool = False
) -> Iterator[tuple[dict[str, int], dict[str, subprocess.Popen]]]:
    """One server of the trained model per name, each with its environment, started alike.

    With environments of one size (:func:`same_size`), each laid out afresh as users' servers
    are (:data:`LAYOUTS`).

    Yields their ports and processes once every one answers; stops them on the way out.

    Args:
        envs: Per name, the server's environment.
        logs: Where each server's output goes (``<logs>-<name>.log``).
        reverse: Start them in the reverse order of ``envs``. Alternate it from pair to pair, so
            that what comes of being started first (which core a process settles on) falls on
            each server alike.
    """
    ports = {name: free_port() for name in envs}
    envs = same_size(envs)
    procs: dict[str, subprocess.Popen] = {}
    try:
        for name, env in reversed(envs.items()) if reverse else envs.items():
            procs[name] = start(serving.serve_command(port=ports[name]), env, Path(f"{logs}-{name}.log"))
        for name, proc in procs.items():
            wait_ping(ports[name], proc)
        yield ports, procs
    finally:
        for proc in procs.values():
            serving.stop_server(proc)


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        args, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def serve_command(workers: int) -> list[str]:
    """``mlflow models serve`` on loopback with the local environment (the model is added by the caller)."""
    return [
        str(BIN / "mlflow"),
        "models",
        "serve",
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "--workers",
        str(workers),
    ]


def explain_cases(port: int, work: Path, frame: pd.DataFrame, args: argparse.Namespace) -> list[dict]:
    """The router with ``explain`` off and on: one LR row (``dataframe_records``) and 1,000 (split).

    The LR route is the costlier one to explain (14 terms a row against naive Bayes' 4). The two
    bodies of a size differ only in ``"params": {"explain": true}``; off and on alternate each round.
    Each size runs twice: one body sent over and over, and bodies of different rows in turn (2,000
    random rows one a request; every row of the data, 1,000 a request), since an explanation's
    template is made once per codes (router_model.explain) and one body reuses its rows' at once.
    """
    cases = []
    for batch, varied in ((1, False), (1000, False), (1, True), (1000, True)):
        bodies = {}
        for name, params in (("off", {}), ("on", {"explain": True})):
            if varied:
                rows = frame.sample(2000, random_state=7) if batch == 1 else frame
                bodies[name] = write_bodies(rows, batch, work / f"explain-{name}-{batch}", params)
            else:
                rows = frame.sample(batch, random_state=batch)
                bodies[name] = write_body(rows, work / f"body-explain-{name}-{batch}.json", params)
        runs: dict[str, list[dict]] = {"off": [], "on": []}
        for _ in range(args.rounds):
            for name in runs:
                runs[name].append(wrk(port, bodies[name], args.duration, args.connections, args.threads))
        case = {
            "batch": batch,
            "varied": varied,
            **{name: summary(measured, batch) for name, measured in runs.items()},
        }
        case["p50_ratio"] = case["on"]["p50_ms"] / case["off"]["p50_ms"]
        case["rows_per_s_ratio"] = case["off"]["rows_per_s"] / case["on"]["rows_per_s"]
        cases.append(case)
        print(
            f"explain, batch {batch:>5}{' varied' if varied else ''}: off {case['off']['rps']:8.1f} req/s p50 "
            f"{case['off']['p50_ms']:.2f} ms, on {case['on']['rps']:8.1f} req/s p50 {case['on']['p50_ms']:.2f} ms; "
            f"non-2xx {case['off']['non2xx']}/{case['on']['non2xx']}",
            flush=True,
        )
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = wrk_parser(
        __doc__.splitlines()[0], duration=10, rounds=2, rounds_help="alternating router/plain rounds per case"
    )
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers of each server")
    parser.add_argument("--explain-only", action="store_true", help="only the explain off/on cases")
    args = parser.parse_args(argv)
    if not wrk_ready(args):
        return 2

    work = Path(tempfile.mkdtemp(prefix="mushroom-bench-"))
    env = bench_env(work)
    results: dict = {
        "duration_s": args.duration,
        "connections": args.connections,
        "threads": args.threads,
        "workers": args.workers,
    }

    started = time.monotonic()
    if not train(env, ["--data", args.data]):
        return 1
    results["train_seconds"] = time.monotonic() - started
    print(f"train on the real data: {results['train_seconds']:.1f}s", flush=True)

    frame = pd.read_csv(args.data)[list(F.LR_FEATURES)].astype(float)
    if args.explain_only:
        port = free_port()
        proc = start(
            [*serve_command(args.workers), "-m", "models:/mushroom-router@champion", "--port", str(port)],
            {**env, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"},
            work / "router.log",
        )
        try:
            wait_ping(port, proc)
            results["explain"] = explain_cases(port, work, frame, args)
        finally:
            serving.stop_server(proc)
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=1))
        shutil.rmtree(work, ignore_errors=True)
        return 0

    # The plain model: the router's own LR sub-model as an ordinary mlflow.sklearn model.
    os.environ.update({k: env[k] for k in ("MUSHROOM_HOME", "MLFLOW_TRACKING_URI")})
    import mlflow

    from router_model import registry
    from router_model.submodels import TRUSTED_TYPES

    router = registry.load_router("models:/mushroom-router@champion")
    lr_model = router.submodels[F.LOGISTIC_REGRESSION]
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

    ports = {name: free_port() for name in (*SERVERS, REFERENCE)}
    serve = serve_command(args.workers)
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
        REFERENCE: start(
            [
                sys.executable,
                str(REPO / "bench" / "reference_app.py"),
                "--data",
                args.data,
                "--port",
                str(ports[REFERENCE]),
            ],
            env,
            work / "reference.log",
        ),
    }
    try:
        for name, proc in procs.items():
            wait_ping(ports[name], proc)
        # The reference app's body: the same single record, as its own JSON object.
        record = frame.sample(1, random_state=1).iloc[0].to_dict()
        reference_body = work / "body-reference.json"
        reference_body.write_text(json.dumps(record))

        def measure(name: str, body: Path, connections: int) -> dict[str, float]:
            path = REFERENCE_PATH if name == REFERENCE else "/invocations"
            body = reference_body if name == REFERENCE else body
            return wrk(ports[name], body, args.duration, connections, args.threads, path)

        cases = []
        for batch in BATCHES:
            body = work / f"body-{batch}.json"
            if batch == 1:  # the most common request: one record
                body.write_text(json.dumps({"dataframe_records": [record]}))
            else:
                rows = frame.sample(batch, replace=batch > len(frame), random_state=batch)
                columns = list(F.LR_FEATURES)
                body.write_text(
                    json.dumps({"dataframe_split": {"columns": columns, "data": rows.to_numpy().tolist()}})
                )
            names = (*SERVERS, REFERENCE) if batch == 1 else SERVERS
            runs: dict[str, list[dict]] = {name: [] for name in names}
            for _ in range(args.rounds):
                for name in names:
                    runs[name].append(measure(name, body, args.connections))
            case: dict = {
                "batch": batch,
                **{name: summary(measured, batch) for name, measured in runs.items()},
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
        reference = cases[0][REFERENCE]
        for case in cases:  # the reference app answers one row per request
            case["ratio_reference"] = case["router"]["rows_per_s"] / reference["rows_per_s"]
            print(
                f"batch {case['batch']:>5}: router rows/s over the reference app's: {case['ratio_reference']:.2f}x"
            )
        results["cases"] = cases

        many_names = ("router", "plain", REFERENCE)
        runs = {name: [] for name in many_names}
        for _ in range(args.rounds):
            for name in many_names:
                runs[name].append(measure(name, work / "body-1.json", MANY_CLIENTS))
        many: dict = {"connections": MANY_CLIENTS, **{name: summary(runs[name], 1) for name in many_names}}
        many["ratio_reference"] = many["router"]["rps"] / many[REFERENCE]["rps"]
        many["ratio"] = many["router"]["rps"] / many["plain"]["rps"]
        results["many_clients"] = many
        results["explain"] = explain_cases(ports["router"], work, frame, args)
        print(
            f"{MANY_CLIENTS} clients, single rows: router {many['router']['rps']:.1f} req/s, plain "
            f"{many['plain']['rps']:.1f}, reference {many[REFERENCE]['rps']:.1f}; router/reference "
            f"{many['ratio_reference']:.2f}",
            flush=True,
        )
    finally:
        for proc in procs.values():
            serving.stop_server(proc)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
