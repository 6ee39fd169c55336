"""No secret in the repository or the image build inputs (a training run: tests/e2e/test_run_secrets.py).

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
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import CREDENTIAL_ENV, REPO, SECRET_NAME

DOCKERFILES = sorted((REPO / "docker").glob("*.Dockerfile"))
DOCKERIGNORE = REPO / ".dockerignore"


# --------------------------------------------------------------------------------------- the scanner

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
        ".airflow/airflow.cfg",
    ],
)
def test_dockerignore_keeps_credentials_and_local_state_out(path: str) -> None:
    assert dockerignore_excludes(path), f".dockerignore lets {path} into the build context"


@pytest.mark.parametrize(
    "path", ["pyproject.toml", "README.md", "constraints.txt", "router_model/registry.py"]
)
def test_dockerignore_keeps_what_the_images_copy(path: str) -> None:
    assert not dockerignore_excludes(path)
