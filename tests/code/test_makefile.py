"""The Makefile's targets bind loopback and assume no folder that only CI has."""

import os
import subprocess

from support import REPO


def make(*args: str) -> subprocess.CompletedProcess:
    """``make ARGS`` in the checkout, without a data path in the environment."""
    env = {k: v for k, v in os.environ.items() if k != "MUSHROOM_DATA"}
    return subprocess.run(["make", *args], cwd=REPO, capture_output=True, text=True, env=env, timeout=120)


def test_make_airflow_binds_loopback():
    out = make("-n", "airflow")
    assert out.returncode == 0, out.stderr
    assert "AIRFLOW__API__HOST=127.0.0.1" in out.stdout


def test_make_bench_needs_the_data_path_it_is_given():
    """It used to default to ../shared/data, a folder only this project's CI has."""
    out = make("bench")
    assert out.returncode == 2
    assert "make bench needs MUSHROOM_DATA=/path/to/mushroom_cleaned.csv" in out.stdout
