"""Shared helpers for the benchmark scripts: processes, ports, machine facts."""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ping(port: int, proc: subprocess.Popen | None = None, timeout: float = 120.0) -> float:
    """Poll /ping until 200; return the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200:
                return time.monotonic() - started
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"port {port} did not answer /ping within {timeout}s")


def wrk_parser(description: str, duration: int, rounds: int, rounds_help: str) -> argparse.ArgumentParser:
    """The options every wrk benchmark takes: data, run length, rounds, load shape, output file."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", default=os.environ.get("MUSHROOM_DATA"), help="mushroom_cleaned.csv")
    parser.add_argument("--duration", type=int, default=duration, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=rounds, help=rounds_help)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    return parser


def on_off_parser(description: str, batches: tuple[int, ...]) -> argparse.ArgumentParser:
    """The options of an on/off benchmark (bench/metrics.py, bench/inference_log.py): wrk's, pairs, batch sizes."""
    parser = wrk_parser(
        description, duration=2, rounds=6, rounds_help="on/off rounds per batch size and pair"
    )
    parser.add_argument("--pairs", type=int, default=10, help="pairs of servers, each started afresh")
    parser.add_argument("--batches", type=int, nargs="+", default=list(batches), help="rows a request")
    return parser


def wrk_ready(args: argparse.Namespace) -> bool:
    """Whether a wrk benchmark can run (data given, wrk installed); says why not on stderr."""
    if not args.data:
        print("no data: pass --data or set MUSHROOM_DATA", file=sys.stderr)
        return False
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk); `make bench` installs it", file=sys.stderr)
        return False
    return True


def bench_env(work: Path, drop: tuple[str, ...] = ("MUSHROOM_", "MLFLOW_"), **extra: str) -> dict[str, str]:
    """This environment without the ``drop`` prefixes, pointed at a fresh home and SQLite store in ``work``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        MUSHROOM_HOME=str(work),
        MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}",
        **extra,
    )
    return env


def train(env: dict[str, str], source: list[str]) -> bool:
    """Run ``mushroom-router train`` on ``source`` (CLI options); print its stderr tail if it fails."""
    done = subprocess.run(
        [str(BIN / "mushroom-router"), "train", *source], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        return False
    return True


def trained_work(prefix: str, data: str, **extra: str) -> tuple[Path, dict[str, str]] | None:
    """A fresh work folder with the router trained on ``data``, and the servers' environment.

    The home and tracking store are also set in this process (for the in-process parts of a
    benchmark). ``extra`` goes into the environment; ``None`` if training failed (said on stderr).
    """
    work = Path(tempfile.mkdtemp(prefix=prefix))
    env = bench_env(work, drop=("MUSHROOM_", "MLFLOW_", "PROMETHEUS_"), **extra)
    if not train(env, ["--data", data]):
        return None
    os.environ.update({k: env[k] for k in ("MUSHROOM_HOME", "MLFLOW_TRACKING_URI")})
    return work, env


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    versions = ", ".join(
        f"{name} {version(name)}" for name in ("mlflow", "scikit-learn", "pandas", "numpy", "skops")
    )
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} cores ({cpu}), {mem} RAM, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": versions,
    }
