"""The Airflow image stays consistent when docker/airflow.Dockerfile installs the package into it.

There is no Docker engine here, so the test rebuilds the image's Python environment in a scratch
venv: ``apache-airflow`` at the image's version with the official image's default extras (the
providers ``apache/airflow`` preinstalls), for the image's Python. It then installs the package
the way the Dockerfile does (``-c constraints.txt "apache-airflow==$AIRFLOW_VERSION" <package>``)
and runs ``uv pip check``. pip, like uv, resolves only the requirements it is given: it moves a
library the image's providers need (python-dateutil 4 under flask-appbuilder's ``<3``), prints a
warning and exits 0, so ``docker build`` succeeds with a broken image. The check catches that.

Both installs use uv (the package index and uv's cache): the first run on a machine downloads about
450 wheels, later runs take about 30 s, most of it resolving against the index.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO, skip_or_fail

DOCKERFILE = REPO / "docker" / "airflow.Dockerfile"
CONSTRAINTS = REPO / "constraints.txt"
VENV_BIN = Path(sys.executable).parent

#: ``AIRFLOW_EXTRAS`` in the apache/airflow Dockerfile of the 3.3 line: what the image preinstalls.
IMAGE_EXTRAS = (
    "aiobotocore,amazon,async,celery,cncf-kubernetes,common-io,common-messaging,docker,elasticsearch,"
    "fab,ftp,git,google,google-auth,graphviz,grpc,hashicorp,http,ldap,microsoft-azure,mysql,odbc,"
    "openlineage,opensearch,pandas,postgres,redis,sendgrid,sftp,slack,snowflake,ssh,statsd,uv"
)
#: The image installs those with Airflow's constraints for its release, resolved when it was made.
#: Nothing newer than the day after apache-airflow 3.3.2 was published (2026-09-17) reproduces
#: that set closely, and keeps this check from changing whenever a provider publishes a release.
IMAGE_RESOLVED_BEFORE = "2026-09-18T00:00:00Z"
#: C clients that build from source against headers the image has and this machine lacks; left out
#: of the scratch venv (their providers are installed). They share no library with this package.
NOT_BUILT = {
    "mysqlclient": "needs libmysqlclient headers (the mysql provider)",
    "python-ldap": "needs libldap and libsasl headers (the ldap extra)",
}
#: What the Dockerfile copies into /opt/mushroom-router before installing it from there.
PACKAGE_FILES = ("pyproject.toml", "README.md", "constraints.txt", "router_model")

#: Words of uv's error when it cannot reach the package index.
_OFFLINE = re.compile(r"Failed to fetch|dns error|Could not connect|error sending request|Connection refused")


def image_tag() -> tuple[str, str]:
    """The Airflow version and Python minor version in the Dockerfile's ``FROM apache/airflow:``."""
    match = re.search(
        r"^FROM apache/airflow:(\d+\.\d+\.\d+)-python(\d+\.\d+)\s*$", DOCKERFILE.read_text(), re.MULTILINE
    )
    assert match, f"{DOCKERFILE.name}: expected `FROM apache/airflow:X.Y.Z-pythonA.B`"
    return match[1], match[2]


def test_dockerfile_installs_the_way_the_check_reproduces():
    """The check below mirrors this install line: if it changes, the check must change with it."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    install = re.search(r"^RUN pip install (.*?)(?:&&|$)", text, re.MULTILINE)
    assert install, f"{DOCKERFILE.name}: no `RUN pip install` line"
    args = install[1].split()
    assert args == [
        "--no-cache-dir",
        "-c",
        "/opt/mushroom-router/constraints.txt",
        '"apache-airflow==${AIRFLOW_VERSION}"',
        "/opt/mushroom-router",
    ], args
    copied = re.findall(r"^COPY --chown=\S+ (.+) /opt/mushroom-router/?\S*$", text, re.MULTILINE)
    assert sorted(" ".join(copied).split()) == sorted(PACKAGE_FILES)


def _uv(*args: str, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "uv"), *args], capture_output=True, text=True, timeout=timeout)


def _installed(step: str, proc: subprocess.CompletedProcess[str]) -> None:
    """Fail (or skip without the package index) when an install step did not succeed."""
    if proc.returncode == 0:
        return
    if _OFFLINE.search(proc.stderr):
        skip_or_fail(f"{step}: the package index is unreachable: {proc.stderr.strip()[-300:]}")
    pytest.fail(f"{step} failed:\n{proc.stderr[-3000:]}")


def incompatibilities(check_output: str) -> list[str]:
    """uv pip check's complaints, less the C clients the scratch venv leaves out on purpose."""
    lines = [line for line in check_output.splitlines() if line.startswith("The package ")]
    return [
        line
        for line in lines
        if not any(re.search(rf"requires `{name}\b.*it's not installed", line) for name in NOT_BUILT)
    ]


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("Checked 3 packages in 1ms\nAll installed packages are compatible\n", []),
        (
            "The package `flask-appbuilder` requires `python-dateutil>=2.3,<3`, but `4.0.0` is installed\n"
            "The package `apache-airflow-providers-mysql` requires `mysqlclient>=2.2.5 ; sys_platform"
            " != 'darwin'`, but it's not installed\n",
            ["The package `flask-appbuilder` requires `python-dateutil>=2.3,<3`, but `4.0.0` is installed"],
        ),
        (
            "The package `x` requires `mysqlclient>=2`, but `1.0` is installed\n",
            ["The package `x` requires `mysqlclient>=2`, but `1.0` is installed"],
        ),
    ],
)
def test_incompatibilities_drop_only_the_missing_c_clients(output, expected):
    assert incompatibilities(output) == expected


@pytest.mark.network
def test_package_installs_into_the_airflow_image_without_conflicts(tmp_path):
    """pip check is clean after the Dockerfile's install on the image's own providers."""
    airflow_version, python_version = image_tag()
    if not (VENV_BIN / "uv").exists():
        skip_or_fail(f"uv is not in {VENV_BIN} (make install puts it there)")
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == python_version:
        python = sys._base_executable
    else:
        python = python_version  # uv looks for it; it must not download one
    venv = tmp_path / "image"
    try:
        made = _uv("venv", "-q", "--no-python-downloads", "--python", python, str(venv))
        if made.returncode:
            skip_or_fail(f"no Python {python_version} for the image's venv: {made.stderr.strip()}")
        excludes = tmp_path / "not-built.txt"
        excludes.write_text("\n".join(NOT_BUILT) + "\n")
        _installed(
            f"the image's apache-airflow[...]=={airflow_version}",
            _uv(
                "pip", "install", "-q", "--python", str(venv),
                "--exclude-newer", IMAGE_RESOLVED_BEFORE, "--excludes", str(excludes),
                f"apache-airflow[{IMAGE_EXTRAS}]=={airflow_version}",
            ),
        )  # fmt: skip
        package = tmp_path / "mushroom-router"
        package.mkdir()
        for name in PACKAGE_FILES:
            source = REPO / name
            if source.is_dir():
                shutil.copytree(source, package / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(source, package / name)
        _installed(
            "the Dockerfile's install of the package",
            _uv(
                "pip", "install", "-q", "--python", str(venv),
                "-c", str(package / "constraints.txt"), f"apache-airflow=={airflow_version}", str(package),
            ),
        )  # fmt: skip
        check = _uv("pip", "check", "--python", str(venv), timeout=120)
        output = check.stdout + check.stderr
        assert check.returncode == 0 or "The package " in output, f"uv pip check failed:\n{output}"
        conflicts = incompatibilities(output)
        assert not conflicts, (
            f"installing the package into apache/airflow:{airflow_version}-python{python_version} with "
            f"constraints.txt breaks the image's packages; bound them in docker/airflow-image-bounds.txt and "
            f"run `make lock`:\n" + "\n".join(conflicts)
        )
    finally:
        shutil.rmtree(venv, ignore_errors=True)
