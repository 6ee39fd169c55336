"""No secret in the repository, the image build inputs, a training run's logs or what MLflow stored.

* A real ``mushroom-router train`` runs with fake credentials in its environment (Kaggle, MLflow,
  AWS, and a database password inside the tracking URI when the store is PostgreSQL). Its output,
  every param, tag, metric key, description and artifact of the run, the registered version and
  the logged model, every row of the tracking database and every file under the project home are
  read back, and none may contain a credential value. A canary (in the data folder's name, which a
  run legitimately records and prints) proves each of those readers sees what the run wrote.
* Every file in the git tree and every blob in its history is scanned for private keys, access
  keys, tokens, credentials assigned literal values and passwords in URLs, and for files that hold
  credentials (``.env``, ``kaggle.json``, keys); the scanner itself is checked on planted secrets
  and on the placeholders that ``.env.example`` and ``docker-compose.yaml`` use.
* The Dockerfiles set no secret-named ``ENV``/``ARG`` and copy no credential file, and
  ``.dockerignore`` keeps credential files and local state out of the build context. (The images
  themselves are not built here: there is no Docker engine in the test environment.)
"""

from __future__ import annotations

import re
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import (
    PG_HOST,
    PG_PORT,
    PG_USER,
    REPO,
    create_database,
    drop_database,
    postgres_or_skip,
)

DOCKERFILES = sorted((REPO / "docker").glob("*.Dockerfile"))
DOCKERIGNORE = REPO / ".dockerignore"
MODEL_NAME = "mushroom-router"

#: Credentials a training process may find in its environment (the values are generated per test).
#: Not ``MLFLOW_TRACKING_USERNAME``: MLflow records it as the run's user (``mlflow.user``) by design.
CREDENTIAL_ENV = (
    "KAGGLE_API_TOKEN",
    "KAGGLE_USERNAME",
    "KAGGLE_KEY",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
)

# --------------------------------------------------------------------------------------- the scanner

#: Names that hold credentials: ``KAGGLE_KEY``, ``AIRFLOW_DB_PASSWORD``, ``AWS_SECRET_ACCESS_KEY``...
#: (not any ``..._KEY``: ``TAG_RETRAIN_KEY`` is a tag name; and a ``..._FILE`` holds a path).
SECRET_NAME = (
    r"(?:[A-Z][A-Z0-9_]*)?(?:PASSWORD|PASSWD|SECRET|TOKEN|FERNET"
    r"|(?:API|SECRET|ACCESS|PRIVATE|KAGGLE|SIGNING|ENCRYPTION|FERNET)_KEY)(?:[A-Z0-9_]*(?<!_FILE))?\b"
)
_QUOTED = r"\"[^\"\n]*\"|'[^'\n]*'"

#: ``(kind, pattern)``; a pattern's ``value`` group, if any, is what must be a placeholder.
PATTERNS = [
    ("private key", re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")),
    ("AWS access key id", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("GitHub token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b")),
    ("Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    # NAME=value (.env, shell, Dockerfile), NAME: value (YAML), NAME = "value" (Python, TOML).
    ("credential assigned a literal", re.compile(rf"\b{SECRET_NAME}=(?P<value>{_QUOTED}|[^\s#]*)")),
    ("credential assigned a literal", re.compile(rf"\b{SECRET_NAME}:[ \t]+(?P<value>{_QUOTED}|[^\s#]+)")),
    ("credential assigned a literal", re.compile(rf"\b{SECRET_NAME}[ \t]+=[ \t]*(?P<value>{_QUOTED})")),
    (
        "password assigned a literal",
        re.compile(
            rf"(?i)\b[a-z0-9_]*(?:password|passwd|secret|api_key)[\"']?[ \t]*[:=][ \t]*(?P<value>{_QUOTED})"
        ),
    ),
    ("password in a URL", re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s:/@\"'{}$]+:(?P<value>[^\s@/\"']+)@")),
]

#: Files that hold credentials, by name (``.env.example`` holds placeholders and is checked above).
SECRET_FILE = re.compile(
    r"(?:^|/)(?:\.env(?:\.(?!example$)[^/]+)?|kaggle\.json|\.kaggle/access_token|\.netrc|\.pgpass"
    r"|id_(?:rsa|dsa|ecdsa|ed25519)|[^/]+\.(?:pem|p12|pfx|key))$"
)


def is_placeholder(value: str) -> bool:
    """A documented non-secret.

    Empty, ``change-me``, the redaction mark ``***``, ``<...>``, an interpolation (``${X:?...}``,
    ``$X``, ``$(...)``), the name of another variable (``"AIRFLOW_ADMIN_PASSWORD"``), or the bare
    word a docstring writes in a URL's password place (``postgresql://user:password@host``).
    """
    value = value.strip().strip("\"'")
    return (
        value in ("", "change-me", "***", "pass" + "word")
        or value.startswith("$")
        or bool(re.fullmatch(r"<[^>]*>|[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+", value))
    )


@dataclass(frozen=True)
class Hit:
    where: str
    line: int
    kind: str
    text: str

    def __str__(self) -> str:
        return f"{self.where}:{self.line}: {self.kind}: {self.text}"


def scan_text(text: str, where: str) -> list[Hit]:
    """Secret-looking strings in ``text`` (placeholders excluded)."""
    hits = []
    for kind, pattern in PATTERNS:
        for match in pattern.finditer(text):
            if "value" in pattern.groupindex and is_placeholder(match.group("value")):
                continue
            line = text.count("\n", 0, match.start()) + 1
            hits.append(Hit(where, line, kind, match.group(0)[:80]))
    return hits


def scan_file(path: str, content: bytes) -> list[Hit]:
    """Hits in one file: its name, then (for a text file) its content."""
    hits = [Hit(path, 0, "credential file", path)] if SECRET_FILE.search(path) else []
    if b"\0" not in content:
        hits += scan_text(content.decode("utf-8", errors="replace"), path)
    return hits


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout


def tree_files() -> list[str]:
    """Tracked files, and untracked ones that are not ignored (what ``git add .`` would commit)."""
    return sorted(set(git("ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")) - {""})


def history() -> tuple[set[str], dict[str, bytes]]:
    """Every path that any commit (of any ref) had, and every blob's content, each once."""
    paths: set[str] = set()
    shas: list[str] = []
    for line in git("rev-list", "--objects", "--all").splitlines():
        sha, _, path = line.partition(" ")
        if path:
            paths.add(path)
            shas.append(sha)
    request = "".join(f"{sha}\n" for sha in dict.fromkeys(shas)).encode()
    out = subprocess.run(
        ["git", "cat-file", "--batch"], cwd=REPO, input=request, capture_output=True, check=True
    ).stdout
    blobs, pos = {}, 0
    while pos < len(out):
        header_end = out.index(b"\n", pos)
        sha, kind, size = out[pos:header_end].decode().split()
        if kind == "blob":
            blobs[sha] = out[header_end + 1 : header_end + 1 + int(size)]
        pos = header_end + 1 + int(size) + 1
    return paths, blobs


# ------------------------------------------------------------------------------------ scanner checks

#: ``(file name, content)`` the scanner must flag; secrets are assembled at run time, so this file
#: holds none.
PLANTED = [
    ("id_rsa", "-----BEGIN OPENSSH " + "PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"),
    ("notes.md", "key: -----BEGIN RSA " + "PRIVATE KEY-----\n"),
    ("settings.py", "aws = '" + "AKIA" + "Q" * 16 + "'\n"),
    ("ci.yaml", "token: gh" + "p_" + "a1" * 20 + "\n"),
    ("run.sh", "export KAGGLE" + "_KEY=" + secrets.token_hex(16) + "\n"),
    ("compose.yaml", "      MLFLOW_DB_PASS" + "WORD: " + secrets.token_urlsafe(12) + "\n"),
    ("config.py", "db_pass" + "word = '" + secrets.token_urlsafe(12) + "'\n"),
    ("app.ini", "url = postgresql://mlflow:" + secrets.token_urlsafe(12) + "@db:5432/mlflow\n"),
    (".env", "X=1\n"),
    ("deploy/.env.production", "X=1\n"),
    ("home/kaggle.json", "{}\n"),
    ("certs/server.pem", "\n"),
]

#: Documented placeholders and references that are not secrets.
NOT_SECRETS = [
    ("env.example", "AIRFLOW_DB" + "_PASSWORD=change-me\nKAGGLE" + "_KEY=\n"),
    ("compose.yaml", "POSTGRES_PASS" + 'WORD: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in .env}"\n'),
    (
        "compose.yaml",
        'URL: "postgresql+psycopg2://airflow:${AIRFLOW_DB_PASSWORD:?set it}@postgres:5432/airflow"\n',
    ),
    ("README.md", "TOK" + "EN=$(curl -s -X POST http://127.0.0.1:8080/auth/token)\n"),
    ("init.sh", 'local name="$1" pass' + 'word="$2"\n'),
    ("pipeline.py", 'retrain_key=f"{ti.dag_id}/{ti.run_id}"\n'),
    (".env.example", "AIRFLOW_FERNET" + "_KEY=change-me\n"),
    ("compose.yaml", '("AIRFLOW_ADMIN_PASS' + 'WORD": "AIRFLOW_ADMIN_PASSWORD"),\n'),  # a name, not a value
    ("inference_log.py", "url: ``postgresql://user:pass" + "word@host:port/database``.\n"),  # the word itself
]


@pytest.mark.parametrize(("name", "content"), PLANTED, ids=[name for name, _ in PLANTED])
def test_scanner_finds_a_planted_secret(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    hits = scan_file(name, path.read_bytes())
    assert hits, f"the scanner missed {content!r} in {name}"


@pytest.mark.parametrize(
    ("name", "content"), NOT_SECRETS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(NOT_SECRETS)]
)
def test_scanner_accepts_placeholders(name: str, content: str) -> None:
    assert scan_file(name, content.encode()) == []


# ------------------------------------------------------------------------------------------ the repo


def test_no_secret_in_the_tree() -> None:
    files = tree_files()
    assert "pyproject.toml" in files and ".env.example" in files
    hits = [
        hit
        for path in files
        if (REPO / path).is_file()
        for hit in scan_file(path, (REPO / path).read_bytes())
    ]
    assert not hits, "secret-looking content in the tree:\n" + "\n".join(map(str, hits))


def test_no_secret_in_the_history() -> None:
    paths, blobs = history()
    assert "pyproject.toml" in paths and len(blobs) > len(tree_files()) / 2
    hits = [Hit(path, 0, "credential file", path) for path in sorted(paths) if SECRET_FILE.search(path)]
    hits += [hit for sha, content in blobs.items() for hit in scan_file(f"blob {sha[:12]}", content)]
    assert not hits, "secret-looking content in a commit (git log --all --find-object=SHA):\n" + "\n".join(
        map(str, hits)
    )


@pytest.mark.parametrize("path", [".env", "docker/.env", "router_model/.env"])
def test_env_files_are_gitignored_anywhere(path: str) -> None:
    ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=REPO, check=False)
    assert ignored.returncode == 0, f"{path} is not gitignored"


# ---------------------------------------------------------------------------------- the Dockerfiles


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        current += " " + line[:-1] if line.endswith("\\") else " " + line
        if not line.endswith("\\"):
            logical.append(current.strip())
            current = ""
    return [
        (item.split(None, 1)[0].upper(), item.split(None, 1)[1] if " " in item else "") for item in logical
    ]


def env_names(kind: str, arguments: str) -> list[str]:
    """Variable names an ``ENV``/``ARG`` sets (``A=1 B=2``, ``A 1`` or a bare ``ARG A``)."""
    if kind == "ENV" and "=" not in arguments.split(None, 1)[0]:
        return [arguments.split(None, 1)[0]]  # legacy ENV NAME value
    return [
        re.split(r"[=\s]", token, maxsplit=1)[0]
        for token in re.findall(r"(?:[^\s\"']+|\"[^\"]*\"|'[^']*')+", arguments)
    ]


def dockerignore_excludes(path: str) -> bool:
    """Whether ``.dockerignore`` keeps ``path`` out of the build context (Docker's rules).

    Patterns are anchored at the context root, ``**`` spans folders, a match on a folder excludes
    everything in it, ``!`` re-includes, and the last matching line wins.
    """
    excluded = False
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        for part in re.split(r"(\*\*/|\*\*|\*|\?)", pattern):
            regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part))
        if re.fullmatch(rf"{regex}(?:/.*)?", path):
            excluded = not negate
    return excluded


def dockerfile_problems(dockerfile: Path) -> list[str]:
    """What in a Dockerfile could put a credential into an image, one line per problem.

    A secret-named ``ENV`` or ``ARG`` (image metadata and ``docker history`` keep the value, default
    or build argument alike), and a ``COPY``/``ADD`` of a credential file or of anything that
    ``.dockerignore`` drops.
    """
    problems = []
    for kind, arguments in instructions(dockerfile):
        if kind in ("ENV", "ARG"):
            secret = [
                n for n in env_names(kind, arguments) if re.fullmatch(SECRET_NAME, n) or n in CREDENTIAL_ENV
            ]
            if secret:
                problems.append(f"{kind} {arguments}: sets {secret}; pass credentials at run time")
        if kind in ("COPY", "ADD"):
            for source in [s for s in arguments.split() if not s.startswith("--")][:-1]:
                if SECRET_FILE.search(source) or "kaggle" in source.lower():
                    problems.append(f"{kind} {arguments}: copies a credential file")
                elif dockerignore_excludes(source):
                    problems.append(f"{kind} {arguments}: {source} is dockerignored")
    return problems


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_bakes_in_no_secret(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    assert [k for k, _ in steps if k == "FROM"] and [k for k, _ in steps if k == "COPY"], steps
    assert dockerfile_problems(dockerfile) == []


@pytest.mark.parametrize(
    "line",
    [
        "ENV KAGGLE" + "_KEY=0123abcd",
        "ENV PYTHONUNBUFFERED=1 \\\n    MLFLOW_TRACKING_PASS" + "WORD=hunter2",
        "ENV AWS_SECRET_ACCESS" + "_KEY hunter2",
        "ARG KAGGLE_API_TOK" + "EN",
        "COPY .env /app/.env",
        "COPY --chown=1:1 kaggle.json /root/.kaggle/kaggle.json",
        "COPY mlflow.db /srv/",
    ],
)
def test_dockerfile_check_finds_a_planted_problem(tmp_path: Path, line: str) -> None:
    dockerfile = tmp_path / "planted.Dockerfile"
    dockerfile.write_text(f"FROM python:3.11-slim\nCOPY router_model ./router_model\n{line}\n")
    assert dockerfile_problems(dockerfile), line


@pytest.mark.parametrize(
    "path",
    [
        ".env",
        ".env.local",
        "router_model/.env",
        "kaggle.json",
        "router_model/kaggle.json",
        ".kaggle/access_token",
        "server.pem",
        "mlflow.db",
        "router_model/local.db",
        "mlruns/0/meta.yaml",
        "router_model/mlruns/1/x",
        "mlartifacts/1/model.skops",
        "data/mushroom_cleaned.csv",
        ".git/config",
        ".venv/bin/python",
    ],
)
def test_dockerignore_keeps_credentials_and_local_state_out(path: str) -> None:
    assert dockerignore_excludes(path), f".dockerignore lets {path} into the build context"


@pytest.mark.parametrize(
    "path", ["pyproject.toml", "README.md", "constraints.txt", "router_model/registry.py"]
)
def test_dockerignore_keeps_what_the_images_copy(path: str) -> None:
    assert not dockerignore_excludes(path)


# ---------------------------------------------------------------------------------- a training run


@dataclass
class Store:
    uri: str
    secrets: dict[str, str]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh tracking store; on PostgreSQL its URI carries a (fake) password."""
    if request.param == "sqlite":
        yield Store(f"sqlite:///{tmp_path / 'mlflow.db'}", {})
        return
    postgres_or_skip()
    database = create_database("mr_secrets")
    password = f"pg-password-{secrets.token_hex(12)}"
    try:
        # The test server trusts local connections, so any password is accepted and none is checked.
        yield Store(
            f"postgresql+psycopg2://{PG_USER}:{password}@{PG_HOST}:{PG_PORT}/{database}",
            {"password in MLFLOW_TRACKING_URI": password},
        )
    finally:
        drop_database(database)


def store_dump(uri: str) -> str:
    """Every row of every table of the tracking database, as text."""
    import sqlalchemy as sa

    engine = sa.create_engine(uri)
    try:
        with engine.connect() as conn:
            meta = sa.MetaData()
            meta.reflect(bind=conn)
            return "\n".join(
                f"{table.name}: {tuple(row)}"
                for table in meta.sorted_tables
                for row in conn.execute(sa.select(table))
            )
    finally:
        engine.dispose()


def file_texts(root: Path) -> dict[str, str]:
    """``{relative path: content}`` of every file below ``root`` (binary files decoded loosely)."""
    return {
        str(p.relative_to(root)): p.read_bytes().decode("utf-8", errors="replace")
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def what_mlflow_recorded(uri: str, dst: Path) -> dict[str, str]:
    """``{channel: text}``: what the registry, the runs and their artifacts hold, read back."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    channels: dict[str, list[str]] = {}

    def add(channel: str, *items: Any) -> None:
        channels.setdefault(channel, []).extend(str(i) for i in items)

    experiments = client.search_experiments()
    for exp in experiments:
        add("experiments", exp.name, exp.artifact_location, exp.tags)
    for run in client.search_runs([e.experiment_id for e in experiments]):
        add("run params", run.data.params)
        add("run tags", run.data.tags, run.info.run_name)
        add("run metric keys", list(run.data.metrics))
        run_dir = dst / "runs" / run.info.run_id
        mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(run_dir), tracking_uri=uri)
        add("run artifacts", *file_texts(run_dir).items())
    for logged in client.search_logged_models([e.experiment_id for e in experiments]):
        add("logged model params and tags", logged.name, logged.params, logged.tags)
    model = client.get_registered_model(MODEL_NAME)
    add("registered model", model.description, model.tags, model.aliases)
    for version in client.search_model_versions(f"name='{MODEL_NAME}'"):
        add("version tags and description", version.tags, version.description, version.source)
        model_dir = dst / "models" / str(version.version)
        location = client.get_model_version_download_uri(MODEL_NAME, version.version)
        mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(model_dir), tracking_uri=uri)
        add("model artifacts", *file_texts(model_dir).items())
    return {channel: "\n".join(items) for channel, items in channels.items()}


def leaks(channels: dict[str, str], values: dict[str, str]) -> list[str]:
    return [
        f"{name} in {channel}"
        for channel, text in channels.items()
        for name, value in values.items()
        if value in text
    ]


def test_training_run_records_and_logs_no_credential(
    run_cli: Any, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    canary = f"canary-{secrets.token_hex(8)}"
    given = {name: f"{name.lower().replace('_', '-')}-{secrets.token_hex(12)}" for name in CREDENTIAL_ENV}
    env = {
        **given,
        "MUSHROOM_HOME": str(home),
        "MUSHROOM_DATA_DIR": str(tmp_path / canary),
        "MLFLOW_TRACKING_URI": store.uri,
    }

    done = run_cli("train", "--synthetic", env=env)

    assert done.returncode == 0, done.stderr[-3000:]
    values = {**given, **store.secrets}
    recorded = what_mlflow_recorded(store.uri, tmp_path / "read-back")
    channels = {
        "train output (stdout)": done.stdout,
        "train output (stderr)": done.stderr,
        **recorded,
        "tracking database rows": store_dump(store.uri),
        "files under the project home": "\n".join(f"{k}: {v}" for k, v in file_texts(home).items()),
    }
    # Each reader saw what the run wrote: the data folder's name reaches the output, the tags and
    # the database; the artifacts hold the run id (MLmodel) and the model's own files.
    run_id = re.search(r"\(run ([0-9a-f]{32})\)", done.stdout).group(1)
    for channel in (
        "train output (stdout)",
        "run tags",
        "version tags and description",
        "tracking database rows",
    ):
        assert canary in channels[channel], f"the canary is not in {channel}: the reader is blind"
    assert run_id in channels["model artifacts"] and "MLmodel" in channels["model artifacts"]
    assert "plots/roc.png" in channels["run artifacts"]
    assert "naive_bayes_roc_auc" in channels["run metric keys"]
    assert "MLmodel" in channels["files under the project home"]  # the local artifact store

    assert not leaks(channels, values), f"credential values leaked: {leaks(channels, values)}"


@pytest.mark.services
@pytest.mark.parametrize("store", ["postgresql"], indirect=True)
def test_status_does_not_print_the_store_password(run_cli: Any, store: Store, tmp_path: Path) -> None:
    [password] = store.secrets.values()
    done = run_cli("status", env={"MUSHROOM_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": store.uri})
    # Exit status 1: nothing is registered in the fresh store, which is all this needs.
    assert "No mushroom-router registered in postgresql+psycopg2://" in done.stdout, done.stderr[-3000:]
    assert "postgresql+psycopg2://postgres:***@" in done.stdout
    assert password not in done.stdout + done.stderr
