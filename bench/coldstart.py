"""Cold start against MLflow's floor: starting a model server to its first answered prediction.

The floor is what one fresh Python process takes to ``import mlflow.pyfunc.scoring_server`` (the
module every MLflow model server runs). Against it, from launching the command to the first 200 on
``POST /invocations`` (one row; polled every 20 ms on new connections):

* ``serve``: ``mushroom-router serve`` of ``models:/mushroom-router@champion``: the registry
  lookup, the verified cache (already holding the version, as on every start but the first), the
  code check, and MLflow's scoring server started in the same process;
* ``supervise``: ``mushroom-router supervise``, the compose model server: the same, with the
  server in a child process (``python -m router_model.serving``);
* ``mlflow models serve`` of the same verified copy (the documented command, for reference).

The machine is shared, so the cases take turns within each round (floor, then each server, the
order rotating from round to round) and each ratio is the median over the median floor of the
same run. The registry is a local SQLite file, as for ``make run`` (``--store sqlite``), or an
``mlflow server`` on loopback, as in the compose stack (``--store http``).

Usage: ``python bench/coldstart.py [--rounds 9] [--store sqlite|http] [--data mushroom_cleaned.csv]
[--out results.json]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests
from benchlib import BIN, bench_env, free_port, train

from router_model import features as F
from router_model import serving

FLOOR = "floor"
CASES = ("serve", "supervise", "mlflow models serve")
BODY = json.dumps({"dataframe_records": F.example_rows()[:1]})
POLL_SECONDS = 0.02
TIMEOUT_SECONDS = 180.0


def floor_seconds(env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one fresh ``python -c "import mlflow.pyfunc.scoring_server"``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import mlflow.pyfunc.scoring_server"], env=env, check=True)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def tree_cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of ``pid`` and every process it started (even in another session)."""
    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = proc.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total


def first_prediction_seconds(
    argv: list[str], port: int, env: dict[str, str], log: Path
) -> tuple[float, float]:
    """Launch ``argv`` and time it until ``POST /invocations`` on ``port`` answers 200; then stop it.

    Returns:
        Wall seconds, and CPU seconds of its processes by then.
    """
    url = f"http://127.0.0.1:{port}/invocations"
    headers = {"Content-Type": "application/json", "Connection": "close"}
    with log.open("ab") as out:
        started = time.monotonic()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while True:
                try:
                    if requests.post(url, data=BODY, headers=headers, timeout=5).status_code == 200:
                        return time.monotonic() - started, tree_cpu_seconds(proc.pid)
                except requests.RequestException:
                    pass
                if proc.poll() is not None:
                    raise RuntimeError(f"{argv[:3]} exited with {proc.returncode}; see {log}")
                if time.monotonic() - started > TIMEOUT_SECONDS:
                    raise TimeoutError(f"{argv[:3]} did not answer within {TIMEOUT_SECONDS:.0f}s; see {log}")
                time.sleep(POLL_SECONDS)
        finally:
            serving.stop_server(proc)


def command(case: str, port: int, model_dir: Path) -> list[str]:
    """The command line of a case on ``port``."""
    where = ["--host", "127.0.0.1", "--port", str(port)]
    if case == "serve":
        return [str(BIN / "mushroom-router"), "serve", *where]
    if case == "supervise":
        return [str(BIN / "mushroom-router"), "supervise", *where, "--poll-seconds", "1"]
    return [*serving.serve_command(str(model_dir), "127.0.0.1", port)]


def summary(seconds: list[float], floor: float) -> dict:
    median = statistics.median(seconds)
    return {"seconds": seconds, "median": median, "ratio": median / floor}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="measurements of each case (median)")
    parser.add_argument("--data", default=None, help="train on this file (default: the synthetic sample)")
    parser.add_argument("--store", choices=("sqlite", "http"), default="sqlite", help="where the registry is")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="mushroom-coldstart-"))
    env = bench_env(work, MUSHROOM_INFERENCE_LOG="off")
    tracking = None
    if args.store == "http":
        port = free_port()
        tracking = subprocess.Popen(
            [
                str(BIN / "mlflow"),
                "server",
                "--backend-store-uri",
                env["MLFLOW_TRACKING_URI"],
                "--artifacts-destination",
                str(work / "mlartifacts"),
                "--serve-artifacts",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{port}"
        wait_for(f"{env['MLFLOW_TRACKING_URI']}/health", tracking)
    try:
        return measure(args, work, env)
    finally:
        if tracking is not None:
            serving.stop_server(tracking)


def wait_for(url: str, proc: subprocess.Popen) -> None:
    """Poll ``url`` until it answers 200."""
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the tracking server exited with {proc.returncode}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {TIMEOUT_SECONDS:.0f}s")


def measure(args: argparse.Namespace, work: Path, env: dict[str, str]) -> int:
    """Train, then time the floor and each case, interleaved; print and write the figures."""
    source = ["--data", args.data] if args.data else ["--synthetic"]
    if not train(env, source):
        return 1
    log = work / "servers.log"
    # One untimed start fills the verified cache, as any start after the first finds it.
    port = free_port()
    first_prediction_seconds(command("serve", port, work), port, env, log)  # untimed
    model_dir = next((work / "data" / "serving").glob("v*/model"))
    env_mlflow = {**serving.serve_env(env), "MLFLOW_TRACKING_URI": env["MLFLOW_TRACKING_URI"]}
    env_mlflow["MLFLOW_REGISTRY_URI"] = env_mlflow["MLFLOW_TRACKING_URI"]

    times: dict[str, list[float]] = {FLOOR: [], **{case: [] for case in CASES}}
    cpu: dict[str, list[float]] = {FLOOR: [], **{case: [] for case in CASES}}
    for round_ in range(args.rounds):
        wall, used = floor_seconds(env)
        times[FLOOR].append(wall)
        cpu[FLOOR].append(used)
        shift = round_ % len(CASES)
        for case in CASES[shift:] + CASES[:shift]:
            port = free_port()
            case_env = env_mlflow if case == "mlflow models serve" else env
            wall, used = first_prediction_seconds(command(case, port, model_dir), port, case_env, log)
            times[case].append(wall)
            cpu[case].append(used)
        print(
            f"round {round_ + 1}: "
            + ", ".join(
                f"{name} {values[-1]:.2f}s ({cpu[name][-1]:.2f}s CPU)" for name, values in times.items()
            ),
            flush=True,
        )
    floor = statistics.median(times[FLOOR])
    floor_cpu = statistics.median(cpu[FLOOR])
    results = {
        "rounds": args.rounds,
        "store": args.store,
        "floor": {"seconds": times[FLOOR], "median": floor, "cpu": summary(cpu[FLOOR], floor_cpu)},
        "cases": {
            case: {**summary(times[case], floor), "cpu": summary(cpu[case], floor_cpu)} for case in CASES
        },
        "load": list(os.getloadavg()),
    }
    print(f"floor (import mlflow.pyfunc.scoring_server): median {floor:.2f}s, {floor_cpu:.2f}s CPU")
    for case, figures in results["cases"].items():
        print(
            f"{case}: median {figures['median']:.2f}s = {figures['ratio']:.2f}x the floor; "
            f"CPU {figures['cpu']['median']:.2f}s = {figures['cpu']['ratio']:.2f}x"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
