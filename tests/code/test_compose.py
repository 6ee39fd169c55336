"""Static checks of the Docker Compose stack (no Docker engine needed).

* ``docker-compose.yaml`` validates against the Compose specification (``check-jsonschema``);
* every ``docker/*.Dockerfile`` passes ``hadolint`` and ends as a non-root user;
* the wiring: ``depends_on`` targets exist and wait for health, every environment variable that
  ``router_model`` reads (found by scanning its source) reaches the services that run it, ports
  bind 127.0.0.1, secrets come only from ``.env`` (documented in ``.env.example``), and the
  README's table of URLs matches the published ports.
"""

from __future__ import annotations

import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from support import SECRET_NAME

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
README = ROOT / "README.md"
PACKAGE_DIR = ROOT / "router_model"
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))
#: The venv's console scripts (check-jsonschema, hadolint come with the ``dev`` extra).
VENV_BIN = Path(sys.executable).parent

#: Images that run router_model code (DAG tasks, the model server); the MLflow image installs the
#: package only to pin the same MLflow version (and mlflow-accounts to read its names from
#: router_model.settings).
PACKAGE_DOCKERFILES = {"docker/airflow.Dockerfile", "docker/model-server.Dockerfile"}

#: Variables router_model reads that the stack may leave unset: the default is right in a container.
OPTIONAL_ENV = {
    "MUSHROOM_HOME": "only locates the local defaults (SQLite store, mlartifacts/, data/), all overridden",
    "MUSHROOM_ARTIFACT_ROOT": "unset, the tracking server's proxied artifact store (mlflow-artifacts:/) decides",
    "MUSHROOM_EXPERIMENT": "the default experiment name mushroom-router is the one the stack uses",
    "MUSHROOM_MODEL_URI": "the default models:/mushroom-router@champion is what the model server follows",
    "KAGGLE_CONFIG_DIR": "Kaggle credentials reach the containers as KAGGLE_* variables, not kaggle.json",
    "MUSHROOM_METRICS": "/metrics is on by default, as the stack's Prometheus needs",
    "PROMETHEUS_MULTIPROC_DIR": "the model server picks a folder for its workers' metric files itself",
    "MUSHROOM_SERVED_VERSION": "set by the supervisor for each server it starts, not by the stack",
    "MUSHROOM_SERVED_SWITCHES": "set by the supervisor for each server it starts, not by the stack",
    "MUSHROOM_SWITCH_FILE": "set by the supervisor for each server it starts, not by the stack",
    "MLFLOW_TRACKING_USERNAME": "only named in an error; each client of the tracking server sets its account",
}

#: Variables a particular package service does not need, with the reason.
_ONLY_THE_MODEL_SERVER = {
    "MUSHROOM_MAX_REQUEST_BYTES": "only the model server answers HTTP requests for the model"
}
NOT_NEEDED = {
    **{
        service: _ONLY_THE_MODEL_SERVER
        for service in (
            "airflow-apiserver",
            "airflow-dag-processor",
            "airflow-init",
            "airflow-scheduler",
            "airflow-triggerer",
            "airflow-worker",
        )
    },
    "model-server": {
        "MUSHROOM_DATA": "the model server never trains",
        "KAGGLE_API_TOKEN": "the model server never downloads training data",
        "KAGGLE_USERNAME": "the model server never downloads training data",
        "KAGGLE_KEY": "the model server never downloads training data",
    },
}


def is_secret_name(name: str) -> bool:
    """Whether an environment variable holds a secret (one regex for every test: support.SECRET_NAME)."""
    return re.fullmatch(SECRET_NAME, name) is not None


#: ``${NAME}``, ``${NAME:-default}``, ``${NAME-default}``, ``${NAME:?message}``, ``${NAME?message}``;
#: ``$$`` is Compose's escaped dollar.
_INTERPOLATION = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}")

#: How router_model reads the environment: settings.env("NAME"), os.environ.get("NAME"),
#: os.environ["NAME"] (also through a local ``environ`` mapping), os.getenv("NAME").
_ENV_READS = [
    re.compile(r"\benv\(\s*[\"']([A-Z][A-Z0-9_]*)[\"']"),
    re.compile(r"\benviron(?:\.get\(\s*|\[\s*)[\"']([A-Z][A-Z0-9_]*)[\"']"),
    re.compile(r"\bgetenv\(\s*[\"']([A-Z][A-Z0-9_]*)[\"']"),
]

#: A row of the README's table of URLs: ``| http://127.0.0.1:5000 | MLflow UI and tracking API |``.
_README_URL_ROW = re.compile(r"^\|\s*<?https?://127\.0\.0\.1:(\d+)[^|]*\|", re.MULTILINE)


# --------------------------------------------------------------------------------------------- helpers


@cache
def compose_text() -> str:
    return COMPOSE_FILE.read_text()


@cache
def compose() -> dict[str, Any]:
    """docker-compose.yaml with YAML anchors and ``<<`` merge keys resolved (PyYAML does both)."""
    return yaml.safe_load(compose_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def service_names() -> list[str]:
    return sorted(services())


def environment(service: str) -> dict[str, str]:
    """A service's ``environment`` as a mapping (Compose accepts a mapping or ``NAME=value`` list)."""
    env = services()[service].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def package_services() -> list[str]:
    """Services whose image runs router_model code."""
    return sorted(
        name
        for name, spec in services().items()
        if isinstance(spec.get("build"), dict) and spec["build"].get("dockerfile") in PACKAGE_DOCKERFILES
    )


def depends_on(service: str) -> dict[str, Any]:
    return services()[service].get("depends_on") or {}


def one_shot_services() -> set[str]:
    """Services others wait for with ``service_completed_successfully`` (they run once and exit)."""
    return {
        target
        for name in services()
        for target, spec in depends_on(name).items()
        if isinstance(spec, dict) and spec.get("condition") == "service_completed_successfully"
    }


def long_running_services() -> list[str]:
    return sorted(set(services()) - one_shot_services())


def interpolations(text: str) -> list[re.Match[str]]:
    """Every ``${...}`` in ``text``, skipping ``$$`` escapes."""
    return [m for m in _INTERPOLATION.finditer(text) if m.group("name")]


def with_defaults(text: str) -> str:
    """``text`` as Compose would interpolate it with no variables set (``:-``/``-`` defaults only)."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        if match.group("op") in (":-", "-"):
            return match.group("arg")
        raise AssertionError(f"{match.group(0)} has no default")

    return _INTERPOLATION.sub(substitute, text)


def published_ports(service: str) -> list[tuple[str | None, int, int]]:
    """``(host_ip, host_port, container_port)`` of a service's published ports, with defaults applied."""
    result = []
    for port in services()[service].get("ports") or []:
        if isinstance(port, dict):
            host_ip = port.get("host_ip")
            host_port = with_defaults(str(port.get("published", port["target"])))
            target = str(port["target"])
        else:
            parts = with_defaults(str(port)).split("/", 1)[0].split(":")
            host_ip = parts[0] if len(parts) == 3 else None
            host_port, target = (parts[-2], parts[-1]) if len(parts) >= 2 else (parts[0], parts[0])
        result.append((host_ip, int(host_port), int(target)))
    return result


def all_published_ports() -> dict[int, str]:
    """Default host port -> service."""
    return {host_port: name for name in services() for _, host_port, _ in published_ports(name)}


def env_vars_read_by_package() -> dict[str, list[str]]:
    """Every environment variable router_model reads -> the files that read it (from the source)."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        source = path.read_text()
        for pattern in _ENV_READS:
            for name in pattern.findall(source):
                found.setdefault(name, [])
                if path.name not in found[name]:
                    found[name].append(path.name)
    return found


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            name, value = line.split("=", 1)
            values[name.strip()] = value.strip()
    return values


def run_tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    tool = VENV_BIN / name
    assert tool.exists(), f"{tool} is missing: install the dev extra (make install)"
    return subprocess.run([str(tool), *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def last_user(dockerfile: Path) -> str | None:
    users = re.findall(r"^\s*USER\s+(\S+)", dockerfile.read_text(), flags=re.MULTILINE | re.IGNORECASE)
    return users[-1] if users else None


# ------------------------------------------------------------------------------- schema and linting


def test_compose_file_matches_the_compose_specification():
    result = run_tool("check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE))
    assert result.returncode == 0, (
        f"docker-compose.yaml fails the Compose spec:\n{result.stdout}{result.stderr}"
    )


def test_the_three_images_have_dockerfiles():
    names = {path.name for path in DOCKERFILES}
    expected = {"airflow.Dockerfile", "mlflow.Dockerfile", "model-server.Dockerfile"}
    assert expected <= names, f"missing in docker/: {sorted(expected - names)}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile):
    result = run_tool("hadolint", "--no-color", str(dockerfile))
    assert result.returncode == 0, f"hadolint {dockerfile.name}:\n{result.stdout}{result.stderr}"


#: hadolint settings files: at the top or beside the Dockerfiles.
HADOLINT_CONFIGS = sorted([*ROOT.glob("*hadolint.yaml"), *ROOT.glob("docker/*hadolint.yaml")])


@pytest.mark.parametrize("config", HADOLINT_CONFIGS, ids=lambda p: p.name)
def test_hadolint_ignores_give_a_reason(config):
    ignored = [
        line.strip() for line in config.read_text().splitlines() if re.match(r"^\s*-\s*(DL|SC)\d+", line)
    ]
    assert ignored, f"{config} ignores nothing: delete it"
    unexplained = [line for line in ignored if not re.search(r"#\s*\S.{10,}", line)]
    assert not unexplained, f"{config.name} ignores rules without a reason comment: {unexplained}"


def test_every_hadolint_config_is_found():
    """The reason check above runs on files that exist (it used to return early on a missing one)."""
    assert [
        p.relative_to(ROOT).as_posix() for p in ROOT.glob("**/*hadolint.yaml") if ".venv" not in p.parts
    ] == ["docker/mlflow-generated.hadolint.yaml"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_does_not_run_as_root(dockerfile):
    user = last_user(dockerfile)
    assert user is not None, f"{dockerfile.name} has no USER instruction: the container would run as root"
    assert user.split(":")[0] not in ("root", "0"), f"{dockerfile.name} ends with USER {user}"


# ---------------------------------------------------------------------------------------- wiring


@pytest.mark.parametrize("service", service_names())
def test_depends_on_targets_exist_and_wait_for_health(service):
    deps = depends_on(service)
    assert isinstance(deps, dict), f"{service}: use the long depends_on form with a condition"
    for target, spec in deps.items():
        assert target in services(), f"{service} depends on {target!r}, which is not a service"
        condition = (spec or {}).get("condition")
        if "healthcheck" in services()[target]:
            assert condition == "service_healthy", (
                f"{service} -> {target}: {target} has a healthcheck, so wait for service_healthy, "
                f"not {condition}"
            )
        else:
            assert condition == "service_completed_successfully", (
                f"{service} -> {target}: {target} has no healthcheck; only a one-shot service may be "
                f"waited for (service_completed_successfully), got {condition}"
            )
            assert str(services()[target].get("restart", "no")) == "no", f"one-shot {target} must not restart"


@pytest.mark.parametrize("service", long_running_services())
def test_long_running_services_restart_and_report_health(service):
    spec = services()[service]
    assert spec.get("restart") == "unless-stopped", f"{service}: restart is {spec.get('restart')!r}"
    assert "healthcheck" in spec, f"{service} has no healthcheck"


def test_package_services_are_the_airflow_services_and_the_model_server():
    found = set(package_services())
    assert "model-server" in found, f"model-server is not built from a package image: {sorted(found)}"
    assert {"airflow-scheduler", "airflow-apiserver", "airflow-dag-processor"} <= found, sorted(found)


@pytest.mark.parametrize("service", package_services())
def test_package_services_talk_to_the_tracking_server(service):
    uri = environment(service).get("MLFLOW_TRACKING_URI")
    assert uri, f"{service} runs router_model but has no MLFLOW_TRACKING_URI"
    parsed = urlsplit(uri)
    assert parsed.scheme == "http", f"{service}: MLFLOW_TRACKING_URI={uri} is not the tracking server"
    assert parsed.hostname in services(), f"{service}: {parsed.hostname!r} in {uri} is not a service"
    assert environment(service).get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION") == "false", (
        f"{service} must set MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false"
    )


def mlflow_allowed_hosts() -> list[str]:
    command = services()["mlflow"]["command"]
    assert isinstance(command, list), "the mlflow command should be a list"
    assert "--allowed-hosts" in command, "mlflow server needs --allowed-hosts for the host name 'mlflow'"
    return command[command.index("--allowed-hosts") + 1].split(",")


@pytest.mark.parametrize("service", package_services())
def test_mlflow_accepts_the_host_header_of_each_client(service):
    from mlflow.server.security_utils import is_allowed_host_header

    netloc = urlsplit(environment(service)["MLFLOW_TRACKING_URI"]).netloc
    assert is_allowed_host_header(mlflow_allowed_hosts(), netloc), (
        f"mlflow server --allowed-hosts {mlflow_allowed_hosts()} rejects Host: {netloc} from {service}"
    )


def test_mlflow_accepts_the_browser_on_the_published_port():
    from mlflow.server.security_utils import is_allowed_host_header

    (host_ip, host_port, _), *_ = published_ports("mlflow")
    for host in (f"{host_ip}:{host_port}", f"localhost:{host_port}"):
        assert is_allowed_host_header(mlflow_allowed_hosts(), host), f"mlflow rejects Host: {host}"


def test_scanning_router_model_finds_its_settings():
    found = env_vars_read_by_package()
    assert {"MLFLOW_TRACKING_URI", "MUSHROOM_DATA_DIR"} <= set(found), f"scan found only {sorted(found)}"


@pytest.mark.parametrize("name", sorted(env_vars_read_by_package()))
def test_env_vars_read_by_router_model_reach_the_services_that_run_it(name):
    if name in OPTIONAL_ENV:
        return
    missing = [
        service
        for service in package_services()
        if name not in environment(service) and name not in NOT_NEEDED.get(service, {})
    ]
    read_in = ", ".join(env_vars_read_by_package()[name])
    assert not missing, (
        f"router_model ({read_in}) reads {name}, but {missing} do not set it: set it in docker-compose.yaml "
        f"or, if its default is right in a container, add it to OPTIONAL_ENV with the reason"
    )


@pytest.mark.parametrize("name", sorted(OPTIONAL_ENV))
def test_optional_env_allowlist_is_current(name):
    assert name in env_vars_read_by_package(), (
        f"router_model no longer reads {name}: drop it from OPTIONAL_ENV"
    )


@pytest.mark.parametrize("service", sorted(name for name in services() if services()[name].get("ports")))
def test_published_ports_bind_loopback_by_default(service):
    for host_ip, host_port, _ in published_ports(service):
        assert host_ip == "127.0.0.1", f"{service} publishes {host_port} on {host_ip or 'every interface'}"


def test_named_volumes_are_declared():
    declared = set(compose().get("volumes") or {})
    for name, spec in services().items():
        for volume in spec.get("volumes") or []:
            source = volume.get("source") if isinstance(volume, dict) else str(volume).split(":", 1)[0]
            if source and not source.startswith((".", "/", "~", "$")):
                assert source in declared, f"{name} mounts volume {source!r}, not declared under volumes:"


def test_urls_between_services_name_existing_services():
    for name in services():
        for key, value in environment(name).items():
            host = urlsplit(value).hostname if re.match(r"^https?://", value) else None
            if host and host not in ("localhost", "127.0.0.1"):
                assert host in services(), f"{name}: {key}={value} points at {host!r}, which is not a service"


# ---------------------------------------------------------------------------------------- secrets


def test_variables_without_default_fail_loudly():
    vague = sorted(
        {m.group(0) for m in interpolations(compose_text()) if m.group("op") in (None, "?", "-", "+")}
    )
    assert not vague, (
        f"use ${{NAME:?set NAME in .env}} for a required variable (or :- with a default): {vague}"
    )


def test_env_example_defines_every_required_variable():
    required = {m.group("name") for m in interpolations(compose_text()) if m.group("op") in (None, ":?", "?")}
    assert required, "docker-compose.yaml requires no variable from .env?"
    missing = sorted(required - set(env_example()))
    assert not missing, f".env.example does not define {missing}, which docker-compose.yaml requires"


def test_env_example_documents_every_variable_compose_reads():
    used = {m.group("name") for m in interpolations(compose_text())}
    missing = sorted(used - set(env_example()))
    assert not missing, f".env.example does not mention {missing}"


@pytest.mark.parametrize(
    ("name", "value"), sorted((n, v) for n, v in env_example().items() if is_secret_name(n))
)
def test_env_example_holds_placeholders_only(name, value):
    assert value in ("", "change-me"), (
        f".env.example: {name}={value!r} looks like a real secret; use change-me"
    )


@pytest.mark.parametrize("service", service_names())
def test_no_literal_secret_in_environment(service):
    for key, value in environment(service).items():
        if not is_secret_name(key):
            continue
        match = _INTERPOLATION.fullmatch(value)
        assert match and match.group("name"), (
            f"{service}: {key} must come from .env as ${{...}}, not a literal"
        )
        assert match.group("op") in (None, ":?", "?") or match.group("arg") == "", (
            f"{service}: {key}={value} has a default secret"
        )


def test_no_literal_password_in_urls():
    for match in re.finditer(r"[a-z0-9+.-]+://[^\s:/@\"']+:([^\s@\"']+)@", compose_text()):
        password = match.group(1)
        found = _INTERPOLATION.fullmatch(password)
        assert found and found.group("op") in (":?", "?"), f"literal password in {match.group(0)}"


# ----------------------------------------------------------------------------------------- README


def test_readme_lists_the_published_ports():
    rows = {int(port) for port in _README_URL_ROW.findall(README.read_text())}
    published = all_published_ports()
    assert rows, (
        "README.md has no `| http://127.0.0.1:PORT | ... |` rows: add the Docker Compose section's URL table"
    )
    assert rows == set(published), (
        f"README lists ports {sorted(rows)}, docker-compose.yaml publishes "
        f"{ {port: published[port] for port in sorted(published)} }"
    )


def test_the_model_server_has_time_to_stop_cleanly():
    """Without stop_grace_period, Docker kills the supervisor 10 s after SIGTERM (issue #20)."""
    from router_model import serving, settings

    limits = settings.MLFLOW_HTTP_LIMITS
    registry_call = float(limits["MLFLOW_HTTP_REQUEST_TIMEOUT"]) * (
        1 + int(limits["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
    )
    # The trial server of a switch and the served one are stopped one after the other.
    needed = registry_call + 2 * (serving.STOP_TIMEOUT_SECONDS + serving.KILL_WAIT_SECONDS)
    grace = services()["model-server"].get("stop_grace_period", "10s")
    assert re.fullmatch(r"\d+s", grace), f"model-server: stop_grace_period {grace!r}: write it as seconds"
    assert int(grace[:-1]) >= needed, (
        f"model-server: stop_grace_period {grace} < the {needed:.0f}s a stop may take"
    )


# ------------------------------------------------------------------------- placeholders (#20)

#: The passwords PostgreSQL's init script bakes into the roles on its first start.
DATABASE_PASSWORDS = (
    "POSTGRES_PASSWORD",
    "AIRFLOW_DB_PASSWORD",
    "MLFLOW_DB_PASSWORD",
    "INFERENCE_DB_PASSWORD",
)
#: The tracking server's: the admin's is baked into its user store on the first start (#18).
MLFLOW_SECRETS = (
    "MLFLOW_ADMIN_PASSWORD",
    "MLFLOW_TRAINER_PASSWORD",
    "MLFLOW_READER_PASSWORD",
    "MLFLOW_FLASK_SECRET_KEY",
)
CHECKED_SECRETS = DATABASE_PASSWORDS + MLFLOW_SECRETS


def compose_shell(script: str) -> str:
    """A ``command`` script as the container's shell gets it (Compose turns ``$$`` into ``$``)."""
    return script.replace("$$", "$")


@pytest.mark.parametrize(
    ("placeholders", "status"),
    [
        ((), 0),
        (("POSTGRES_PASSWORD",), 1),
        (("MLFLOW_DB_PASSWORD", "AIRFLOW_DB_PASSWORD"), 1),
        (("MLFLOW_ADMIN_PASSWORD",), 1),
        (("MLFLOW_READER_PASSWORD", "MLFLOW_FLASK_SECRET_KEY"), 1),
    ],
    ids=["real-passwords", "postgres-placeholder", "two-placeholders", "mlflow-admin", "mlflow-two"],
)
def test_check_secrets_refuses_change_me_database_passwords(placeholders, status):
    """airflow-init checked the Airflow secrets only, and the mlflow service did not wait for it."""
    spec = services()["check-secrets"]
    assert set(spec["environment"]) == set(CHECKED_SECRETS)
    shell, flag, script = spec["command"]
    env = {name: "change-me" if name in placeholders else "s3cret-value" for name in CHECKED_SECRETS}
    done = subprocess.run(
        [shell, flag, compose_shell(script)], env=env, capture_output=True, text=True, check=False, timeout=30
    )
    assert done.returncode == status, done.stderr
    if placeholders:
        named = re.search(r"replace the change-me placeholders in \.env \((.*)\)", done.stderr)
        assert named and set(named.group(1).split()) == set(placeholders), done.stderr


@pytest.mark.parametrize("service", ["postgres", "mlflow"])
def test_the_database_and_the_tracking_server_wait_for_check_secrets(service):
    assert depends_on(service).get("check-secrets") == {"condition": "service_completed_successfully"}


@pytest.mark.parametrize("service", service_names())
def test_no_secret_on_a_command_line(service):
    """A command line is shown by ``ps`` on the host and by ``docker inspect``."""
    spec = services()[service]
    argv = [str(a) for key in ("entrypoint", "command") for a in (spec.get(key) or [])]
    for match in interpolations("\n".join(argv)):
        name = match.group("name")
        assert not (name and is_secret_name(name)), f"{service}: ${{{name}}} on its command line"


#: The tracking server's secret files and the .env variable each comes from (its name, upper case).
MLFLOW_SECRET_FILES = {
    name: name.upper() for name in ("mlflow_db_password", "mlflow_admin_password", "mlflow_flask_secret_key")
}


def test_mlflow_gets_its_store_uri_from_the_secret_file_in_its_environment(tmp_path):
    """And the auth app's admin password, session key and settings file (#18), none on a command line."""
    import configparser

    spec = services()["mlflow"]
    assert sorted(spec["secrets"]) == sorted(MLFLOW_SECRET_FILES)
    for secret, variable in MLFLOW_SECRET_FILES.items():
        assert compose()["secrets"][secret] == {"environment": variable}
        (tmp_path / secret).write_text(f"s3cret-{secret}")
    shell, flag, script, name = spec["entrypoint"]
    script = compose_shell(script).replace("/run/secrets/", f"{tmp_path}/")
    ini = tmp_path / "basic_auth.ini"
    show = (
        "import os, sys; print(os.environ['MLFLOW_BACKEND_STORE_URI']); "
        "print(os.environ['MLFLOW_AUTH_ADMIN_PASSWORD']); print(os.environ['MLFLOW_FLASK_SERVER_SECRET_KEY']); "
        "print(sys.argv)"
    )
    done = subprocess.run(
        [shell, flag, script, name, sys.executable, "-c", show],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "MLFLOW_AUTH_CONFIG_PATH": str(ini)},
    )
    uri, admin_password, secret_key, argv = done.stdout.splitlines()
    assert uri == "postgresql+psycopg2://mlflow:" + "s3cret-mlflow_db_password" + "@postgres:5432/mlflow"
    assert (admin_password, secret_key) == ("s3cret-mlflow_admin_password", "s3cret-mlflow_flask_secret_key")
    assert "s3cret" not in argv
    assert spec["command"][:2] == ["mlflow", "server"] and "--backend-store-uri" not in spec["command"]
    # The auth app's settings: its user store in the same database, READ for every account.
    config = configparser.ConfigParser()
    config.read(ini)
    assert dict(config["mlflow"]) == {
        "default_permission": "READ",
        "database_uri": uri,
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
    }
    assert ini.stat().st_mode & 0o077 == 0, "the settings file holds the database password"
    env = environment("mlflow")
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == "/home/mlflow/basic_auth.ini"
    assert "${MLFLOW_ADMIN_USER:-" in env["MLFLOW_AUTH_ADMIN_USERNAME"]


# ------------------------------------------------------------------------ MLflow accounts (#18)


def test_the_tracking_server_runs_the_auth_app():
    command = services()["mlflow"]["command"]
    assert command[command.index("--app-name") + 1] == "basic-auth"


#: Which MLflow account each service that talks to the tracking server uses (None: no login).
ACCOUNTS = {
    "airflow-scheduler": ("MLFLOW_TRAINER_USER", "MLFLOW_TRAINER_PASSWORD"),
    "airflow-worker": ("MLFLOW_TRAINER_USER", "MLFLOW_TRAINER_PASSWORD"),
    "model-server": ("MLFLOW_READER_USER", "MLFLOW_READER_PASSWORD"),
    "mlflow-accounts": ("MLFLOW_ADMIN_USER", "MLFLOW_ADMIN_PASSWORD"),
}


@pytest.mark.parametrize(
    "service", sorted(name for name in services() if "MLFLOW_TRACKING_URI" in environment(name))
)
def test_each_client_of_the_tracking_server_logs_in_with_its_own_account(service):
    """The DAG's tasks as the trainer, the model server as the reader, nothing else with a login."""
    env = environment(service)
    if service not in ACCOUNTS:
        assert "MLFLOW_TRACKING_PASSWORD" not in env, f"{service} needs no MLflow login"
        return
    user, password = ACCOUNTS[service]
    assert env["MLFLOW_TRACKING_USERNAME"].startswith(f"${{{user}:-"), env["MLFLOW_TRACKING_USERNAME"]
    assert env["MLFLOW_TRACKING_PASSWORD"] == f"${{{password}:?set {password} in .env}}"


def test_the_accounts_exist_before_their_users_start():
    for service in ("airflow-scheduler", "airflow-worker", "model-server"):
        assert depends_on(service).get("mlflow-accounts") == {"condition": "service_completed_successfully"}
    accounts = services()["mlflow-accounts"]
    assert accounts["image"] == services()["mlflow"]["image"]
    assert depends_on("mlflow-accounts") == {"mlflow": {"condition": "service_healthy"}}
    source = accounts["volumes"][0].split(":", 1)[0]
    assert (ROOT / source).is_file(), f"mlflow-accounts mounts {source}, which does not exist"
    env = environment("mlflow-accounts")
    for role, client in (("TRAINER", "airflow-scheduler"), ("READER", "model-server")):
        assert env[f"MLFLOW_{role}_USER"] == environment(client)["MLFLOW_TRACKING_USERNAME"], role


# ------------------------------------------------------------------------------- the celery profile


def profile(name: str) -> set[str]:
    return {service for service, spec in services().items() if name in (spec.get("profiles") or [])}


def test_the_celery_profile_adds_redis_and_a_worker_only():
    assert profile("celery") == {"redis", "airflow-worker"}
    assert {name for name, spec in services().items() if spec.get("profiles")} == profile("celery")


def test_the_default_stack_does_not_require_a_profiled_service():
    """Without --profile celery, nothing may wait for Redis or a worker (compose would refuse to start)."""
    profiled = profile("celery")
    for name in set(services()) - profiled:
        for target, spec in depends_on(name).items():
            if target in profiled:
                assert spec.get("required") is False, (
                    f"{name} requires {target}, which only --profile celery starts"
                )


def test_the_worker_runs_the_package_like_the_scheduler():
    worker, scheduler = environment("airflow-worker"), environment("airflow-scheduler")
    assert "airflow-worker" in package_services()
    assert services()["airflow-worker"]["command"] == "celery worker"
    assert {k: v for k, v in worker.items() if k != "DUMB_INIT_SETSID"} == scheduler
    assert depends_on("airflow-worker")["redis"]["condition"] == "service_healthy"
    assert not services()["redis"].get("ports"), "the broker is for the containers only"


def test_the_executor_defaults_to_local_and_celery_talks_to_the_profile_services():
    env = environment("airflow-scheduler")
    assert with_defaults(env["AIRFLOW__CORE__EXECUTOR"]) == "LocalExecutor"
    assert env_example()["AIRFLOW_EXECUTOR"] == "LocalExecutor"
    assert urlsplit(env["AIRFLOW__CELERY__BROKER_URL"]).hostname == "redis"
    backend = env["AIRFLOW__CELERY__RESULT_BACKEND"]
    assert backend.startswith("db+postgresql://") and "@postgres:5432/airflow" in backend
