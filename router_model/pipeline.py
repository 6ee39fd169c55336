"""The retrain pipeline: data -> validate -> train and register -> evaluate -> gate -> alias.

The CLI runs these steps in one process; the Airflow DAG runs each as its own task, possibly each on
another machine. Every step takes and returns small JSON-friendly values (paths or shared URIs,
versions, metrics) and is safe to re-run. The DAG hands the training file over by URI: the first
task shares it through MLflow's artifact store, content-addressed by its sha256
(:func:`share_data`), and every later step takes that URI, downloads the file into the local data
cache once and checks the sha256 (:func:`local_copy`). Re-running is safe too:
training with a ``retrain_key`` that is already registered returns that version instead of
registering a duplicate, and alias moves are idempotent.

The gate (:func:`decide`): a new version takes ``champion`` only when, on *every* yardstick, its
ROC-AUC on *each* route is at least the current champion's plus ``min_improvement``. The
yardsticks are the new file's held-out rows and the champion's own held-out rows, stored with it,
so a retrain cannot choose the rows it is judged on; each needs enough rows of both classes, and a
synthetic-data version never replaces a real-data champion unless explicitly allowed (the other
way round, a real-data version is not judged on a synthetic champion's rows). The first
version is champion if its held-out rows suffice. Otherwise the new version gets ``challenger``
and the reason is recorded on it. Nothing before the final alias move touches ``champion``, so a
failed retrain never moves it, and that move is a compare-and-set: if another retrain promoted a
version after this one was evaluated, the new version gets ``challenger`` instead (see
:func:`apply_decision`), serialised across machines by a lock kept in the registry itself
(:func:`promotion_lock`). Before the ROC-AUC
comparisons, a version whose probabilities are not honest (expected calibration error on the new
held-out rows above :data:`GATE_MAX_ECE` plus twice its chance level, on some route) is refused,
however good its ROC-AUC (:func:`calibration_refusal`).

Nothing new, nothing registered (:func:`training_needed`): each version records what it was made
from (:class:`Fingerprint`: the data's sha256, the code's sha256, the effective training params).
Training is deterministic given those, so a retrain whose fingerprint equals the champion's would
only register a copy of the champion and, since the gate passes ties, switch the model servers to
it for nothing. Such a retrain stops before training, says why, and registers and moves nothing,
unless forced (:data:`router_model.settings.FORCE_RETRAIN`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

from router_model import data as data_mod
from router_model import features as F
from router_model import registry, settings, trust
from router_model.errors import ConfigError, RouterError
from router_model.locks import FileLock
from router_model.router import Router
from router_model.train import TrainConfig, evaluate, train

_logger = logging.getLogger(__name__)

GATE_METRIC = "roc_auc"
#: The calibration limit of the gate: a version is refused when, on any route, its held-out expected
#: calibration error (10 bins) exceeds this plus twice the ECE a perfectly calibrated model would
#: show by chance on those rows (``ece_chance``, :func:`router_model.calibration.chance_ece`). On the
#: real data's 10,807 held-out rows that is about 0.02 + 2 x 0.007; small held-out sets (600
#: synthetic rows) get the room their sampling noise needs. The uncalibrated naive Bayes route
#: scored 0.065 against a limit of 0.031.
GATE_MAX_ECE = 0.02


class PipelineError(RouterError):
    """A retrain step cannot go on; the message says why."""


class SharedDataError(PipelineError):
    """A shared training file's bytes do not match its sha256.

    Transient: the likeliest cause is a copy still being written by a concurrent upload of the same
    file; a retry downloads it again.
    """

    transient = True


@dataclass(frozen=True)
class GateDecision:
    """The outcome of comparing a candidate with the champion.

    Attributes:
        promote: Whether the candidate becomes ``champion``.
        reason: One line a person can read.
        version: The candidate version.
        champion_version: The champion it was compared with (``None`` for the first version).
    """

    promote: bool
    reason: str
    version: int
    champion_version: int | None = None

    @property
    def alias(self) -> str:
        """The alias the version holds once the decision is applied."""
        return settings.CHAMPION if self.promote else settings.CHALLENGER

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return asdict(self)


@dataclass(frozen=True)
class Fingerprint:
    """What a version was made from: equal fingerprints train the same model.

    Attributes:
        data_sha256: sha256 of the training file's bytes.
        code_sha256: sha256 of the ``router_model`` code (:func:`router_model.trust.installed_digest`).
        params_sha256: sha256 of the effective training params' canonical JSON.
        params: That JSON (recorded for people; the digest is what is compared).
    """

    data_sha256: str
    code_sha256: str
    params_sha256: str
    params: str = ""

    @classmethod
    def of(cls, data_sha256: str, train_params: Mapping[str, Any] | None = None) -> Fingerprint:
        """The fingerprint of training this installation's code on ``data_sha256`` with ``train_params``.

        Raises:
            ConfigError: If a training param is unknown or out of range.
        """
        effective = TrainConfig.from_mapping(train_params).effective()
        params = json.dumps(effective, sort_keys=True, separators=(",", ":"))
        return cls(data_sha256, trust.installed_digest(), hashlib.sha256(params.encode()).hexdigest(), params)

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> Fingerprint | None:
        """A registered version's fingerprint, or ``None`` if it records no full one (older versions)."""
        parts = (
            tags.get("data_sha256"),
            tags.get(trust.TAG_CODE_SHA256),
            tags.get(registry.TAG_TRAIN_PARAMS_SHA256),
        )
        if not all(parts):
            return None
        return cls(*parts, tags.get(registry.TAG_TRAIN_PARAMS, ""))

    def as_tags(self) -> dict[str, str]:
        """The version tags that record it (``data_sha256`` and ``code_sha256`` are set elsewhere too)."""
        return {
            "data_sha256": self.data_sha256,
            trust.TAG_CODE_SHA256: self.code_sha256,
            registry.TAG_TRAIN_PARAMS_SHA256: self.params_sha256,
            registry.TAG_TRAIN_PARAMS: self.params,
        }

    def differences(self, other: Fingerprint) -> list[str]:
        """What differs from ``other``: ``data``, ``code`` and/or ``training params``, with both digests."""
        pairs = (
            ("data", self.data_sha256, other.data_sha256),
            ("code", self.code_sha256, other.code_sha256),
            ("training params", self.params_sha256, other.params_sha256),
        )
        return [
            f"{name} (sha256 {ours[:12]} vs {theirs[:12]})" for name, ours, theirs in pairs if ours != theirs
        ]


def training_needed(
    data_sha256: str, train_params: Mapping[str, Any] | None = None, force: bool = False
) -> dict[str, Any]:
    """Whether a retrain on this data, code and params can make anything the champion is not.

    Compared with the champion's :class:`Fingerprint` before anything trains. Equal: training
    would reproduce the champion, so nothing is trained, registered or moved. A champion without a
    full fingerprint (registered by an older release), no champion at all, or ``force`` train.

    Args:
        data_sha256: The training file's sha256 (what :func:`fetch_data` and :func:`share_data` return).
        train_params: Overrides of :class:`router_model.train.TrainConfig` (defaults filled in).
        force: Train even when nothing changed (:data:`router_model.settings.FORCE_RETRAIN`).

    Returns:
        ``{"train", "reason", "champion_version"}``: ``reason`` is one line saying why.

    Raises:
        ConfigError: If a training param is unknown or out of range.
        MlflowException: If the registry cannot answer (never read as "no champion").
    """
    ours = Fingerprint.of(data_sha256, train_params)
    found = registry.alias_version(settings.CHAMPION)
    version = int(found.version) if found is not None else None
    theirs = Fingerprint.from_tags(found.tags) if found is not None else None
    if found is None:
        train, reason = True, "no champion yet"
    elif theirs is None:
        train, reason = (
            True,
            f"champion version {version} records no fingerprint of its data, code and params",
        )
    elif differ := ours.differences(theirs):
        train, reason = True, f"{' and '.join(differ)} differ from champion version {version}'s"
    else:
        same = (
            f"data (sha256 {ours.data_sha256[:12]}), code (sha256 {ours.code_sha256[:12]}) and training "
            f"params (sha256 {ours.params_sha256[:12]}) equal champion version {version}'s"
        )
        train = bool(force)
        reason = (
            f"{same}, but {settings.FORCE_RETRAIN} is set: training anyway"
            if force
            else f"nothing to train: {same}; nothing registered, champion unchanged "
            f"(to retrain anyway: --{settings.FORCE_RETRAIN}, DAG param {settings.FORCE_RETRAIN})"
        )
    _logger.info("%s: %s", "Training" if train else "Not training", reason)
    return {"train": train, "reason": reason, "champion_version": version}


def fetch_data(source: str | None = None, path: str | None = None, api_factory: Any = None) -> dict[str, str]:
    """Resolve the training data (see :func:`router_model.data.resolve_data`).

    Returns:
        ``{"path", "source", "sha256"}``.
    """
    resolved = data_mod.resolve_data(path=path, source=source, api_factory=api_factory)
    _logger.info("Training data: %s (%s, sha256 %s)", resolved.path, resolved.source, resolved.sha256[:12])
    return {"path": resolved.path, "source": resolved.source, "sha256": resolved.sha256}


def share_data(source: str | None = None, path: str | None = None, api_factory: Any = None) -> dict[str, str]:
    """Resolve the training data here and share it with every machine (what the DAG's first task does).

    The file goes to MLflow's artifact store under its sha256 (:func:`router_model.registry.share_file`):
    through the tracking server's proxied store no worker needs credentials of its own, and any
    worker that reaches the tracking server can read it, whatever its disk holds.

    Returns:
        ``{"uri", "source", "sha256"}``: the shared URI, not a local path.
    """
    fetched = fetch_data(source=source, path=path, api_factory=api_factory)
    uri = registry.share_file(fetched["path"], fetched["sha256"])
    return {"uri": uri, "source": fetched["source"], "sha256": fetched["sha256"]}


def is_local(ref: str) -> bool:
    """Whether ``ref`` is a local path rather than an artifact URI (``mlflow-artifacts:/``, ``s3://``)."""
    scheme = urlsplit(str(ref)).scheme
    return len(scheme) <= 1  # no scheme, or a Windows drive letter


def local_copy(ref: str, sha256: str | None = None) -> str:
    """A local path to the training file ``ref`` (a path, or a URI from :func:`share_data`).

    A URI is downloaded once into ``<data dir>/shared/<sha256>/`` and reused while its bytes
    still match; ``sha256`` is then required and checked, so a task never trains on other bytes
    than the ones the run started with.

    Raises:
        PipelineError: If a URI comes without a sha256.
        SharedDataError: If the downloaded bytes do not match it (retried: see the class).
    """
    if is_local(ref):
        return str(ref)
    if not sha256:
        raise PipelineError(
            f"shared data {ref} comes without its sha256; expected the sha256 share_data returned"
        )
    folder = settings.data_dir() / "shared" / sha256
    target = folder / Path(urlsplit(ref).path).name
    if target.is_file() and data_mod.file_sha256(target) == sha256:
        return str(target)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:  # same folder: the rename below is atomic
        downloaded = registry.download_file(ref, tmp)
        actual = data_mod.file_sha256(downloaded)
        if actual != sha256:
            raise SharedDataError(f"{ref} has sha256 {actual[:12]}, expected {sha256[:12]}")
        downloaded.replace(target)
    _logger.info("Downloaded %s to %s", ref, target)
    return str(target)


def validate_data(path: str, sha256: str | None = None) -> dict[str, Any]:
    """Validate a training file; raises :class:`router_model.data.DataError` naming the column.

    Args:
        path: A local path or a shared URI (:func:`local_copy`).
        sha256: The file's sha256; required for a URI.

    Returns:
        Row count and class balance.
    """
    summary = data_mod.describe(data_mod.load_training_frame(local_copy(path, sha256)))
    _logger.info("Validated %s: %s", path, summary)
    return summary


def train_and_register(
    path: str,
    source: str = settings.SOURCE_PATH,
    train_params: dict[str, Any] | None = None,
    retrain_key: str | None = None,
    sha256: str | None = None,
) -> dict[str, Any]:
    """Train on a validated file, log the run and register the router (no alias yet).

    The run records the file as its dataset input (MLflow dataset tracking: source, digest and
    the full sha256), and the version's ``data_path`` tag is the shared URI when there is one. The
    version records its :class:`Fingerprint` as tags, which :func:`training_needed` compares.

    Args:
        path: Training file: a local path or a shared URI (:func:`local_copy`).
        source: Where it came from (recorded as the ``data_source`` tag).
        train_params: Overrides of :class:`router_model.train.TrainConfig`.
        retrain_key: Idempotency key (for example the Airflow run id); a version already
            registered under it is returned instead of training again.
        sha256: The file's sha256; required for a URI.

    Returns:
        ``{"run_id", "model_uri", "version"}``.
    """
    config = TrainConfig.from_mapping(train_params)
    if retrain_key:
        existing = registry.find_version(retrain_key)
        if existing is not None:
            _logger.info(
                "Version %s is already registered for %s; not training again", existing.version, retrain_key
            )
            return registry.RegisteredRouter(
                existing.run_id, registry.version_uri(existing.version), int(existing.version)
            ).as_dict()
    local = local_copy(path, sha256)
    frame = data_mod.load_training_frame(local)
    result = train(frame, config)
    sha = data_mod.file_sha256(local)
    tags = data_mod.DataSource(str(path), source, sha).as_tags()
    extra = Fingerprint.of(sha, train_params).as_tags()
    if retrain_key:
        extra[registry.TAG_RETRAIN_KEY] = retrain_key
    return registry.log_router(result, tags, extra, frame=frame).as_dict()


def check_min_improvement(value: float) -> float:
    """Refuse a gate margin outside :data:`router_model.settings.MIN_IMPROVEMENT_RANGE`.

    Returns:
        ``value`` as a float.

    Raises:
        ConfigError: For NaN, a negative margin (it would promote a worse model) or one above
            the range (it can never be met by a working model).
    """
    low, high = settings.MIN_IMPROVEMENT_RANGE
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not low <= number <= high:  # NaN fails both comparisons
        raise ConfigError(
            f"min_improvement is {value!r}; expected a ROC-AUC margin from {low} to {high} "
            "(0 lets a version that matches the champion take over)"
        )
    return number


def _yardstick(name: str, rows: pd.DataFrame, candidate: Router, champion: Router | None) -> dict[str, Any]:
    """Score the candidate (and the champion) on one set of held-out rows."""
    counts = rows[F.TARGET].value_counts()
    found: dict[str, Any] = {
        "name": name,
        "rows": len(rows),
        "edible": int(counts.get(F.LABEL_EDIBLE, 0)),
        "poisonous": int(counts.get(F.LABEL_POISONOUS, 0)),
        "candidate": None,
        "champion": None,
    }
    if min(found["edible"], found["poisonous"]) > 0:  # ROC-AUC needs both classes
        found["candidate"] = evaluate(candidate, rows)
        found["champion"] = evaluate(champion, rows) if champion is not None else None
    return found


def _champion_holdout(version: int, tags: Mapping[str, str]) -> pd.DataFrame | None:
    """The champion's own held-out rows: stored with it, else re-split from its file if unchanged.

    Versions registered before the rows were stored with each version carry only the path and
    sha256 of their training file; the split is deterministic, so the same file gives the same
    rows.
    """
    stored = registry.holdout_frame(version)
    if stored is not None:
        return stored
    path, sha = tags.get("data_path"), tags.get("data_sha256")
    if path and sha and Path(path).is_file() and data_mod.file_sha256(path) == sha:
        return data_mod.split(data_mod.load_training_frame(path))[1]
    return None


def evaluate_against_champion(version: int, path: str) -> dict[str, Any]:
    """Score the candidate and the champion on yardsticks the candidate did not choose.

    Two sets of held-out rows: the new training file's (as split for the candidate) and the
    champion's own, stored with the champion when it was trained. A retrain therefore cannot
    win by bringing rows that suit it: on the champion's rows the champion is judged where it
    was trained to be good. When both versions were trained on the same file the two sets are the
    same rows and are scored once. A candidate trained on real data is not judged on a champion's
    synthetic rows (the built-in sample): that yardstick is listed as ``skipped``.

    Args:
        version: Candidate version.
        path: The training file the candidate was trained on (its held-out split is used): a
            local path or a shared URI (checked against the version's ``data_sha256``).

    Returns:
        ``{"version", "data_source", "champion_version", "champion_data_source", "candidate",
        "champion", "yardsticks"}``: ``candidate``/``champion`` are the metrics on the new
        held-out rows, ``yardsticks`` a list of ``{"name", "rows", "edible", "poisonous",
        "candidate", "champion"}`` (metrics ``None`` when a set lacks a class), or
        ``{"name", "missing"}`` when the champion's rows cannot be had, or ``{"name", "skipped"}``.

    Raises:
        PipelineError: If the file is not the one the candidate was trained on.
    """
    tags = registry.version_tags(version)
    expected = tags.get("data_sha256")
    path = local_copy(path, expected)
    actual = data_mod.file_sha256(path)
    if expected and expected != actual:
        raise PipelineError(
            f"{path} changed since version {version} was trained on it (sha256 {actual[:12]} != {expected[:12]})"
        )
    _, test = data_mod.split(data_mod.load_training_frame(path))
    candidate = registry.load_router(registry.version_uri(version))
    found = registry.alias_version(settings.CHAMPION)
    champion_version = int(found.version) if found is not None else None
    if champion_version == int(version):
        found = None  # a re-run after the promotion: nothing to compare with
    champion = registry.load_router(registry.version_uri(champion_version)) if found is not None else None
    source = tags.get("data_source")
    champion_source = found.tags.get("data_source") if found is not None else None
    yardsticks = [_yardstick(f"version {version}'s held-out rows", test, candidate, champion)]
    if found is not None:
        name = f"champion version {champion_version}'s held-out rows"
        if champion_source == settings.SOURCE_SYNTHETIC and source != settings.SOURCE_SYNTHETIC:
            yardsticks.append({"name": name, "skipped": _SYNTHETIC_ROWS})
        elif (theirs := _champion_holdout(champion_version, found.tags)) is None:
            yardsticks.append({"name": name, "missing": "not stored with it, and its training file is gone"})
        elif not _same_rows(theirs, test):
            yardsticks.append(_yardstick(name, theirs, candidate, champion))
    return {
        "version": int(version),
        "data_source": source,
        "champion_version": champion_version,
        "champion_data_source": champion_source,
        "candidate": yardsticks[0]["candidate"],
        "champion": yardsticks[0]["champion"],
        "yardsticks": yardsticks,
    }


#: Why a real-data candidate is not judged on a synthetic champion's held-out rows: the built-in
#: sample is for offline demos, and a model of real mushrooms owes nothing to its made-up species
#: (so `make run`'s demo champion gives way to the first model trained on the real data that beats
#: it on that data's held-out rows).
_SYNTHETIC_ROWS = "synthetic (the built-in sample), which says nothing of a model trained on real data"


def _same_rows(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    columns = [*F.ALL_FEATURES, F.TARGET]
    return len(a) == len(b) and bool(
        (
            pd.util.hash_pandas_object(a[columns], index=False).to_numpy()
            == pd.util.hash_pandas_object(b[columns], index=False).to_numpy()
        ).all()
    )


def _too_few(yardstick: Mapping[str, Any]) -> str | None:
    """Why a yardstick cannot judge, or ``None`` when it can (or is not used)."""
    if "skipped" in yardstick:
        return None
    if "missing" in yardstick:
        return f"{yardstick['name']} are {yardstick['missing']}"
    need = settings.MIN_HOLDOUT_ROWS_PER_CLASS
    if min(yardstick["edible"], yardstick["poisonous"]) < need:
        return (
            f"{yardstick['name']} are too few to judge: {yardstick['edible']} edible and "
            f"{yardstick['poisonous']} poisonous, the gate needs at least {need} of each"
        )
    return None


def calibration_refusal(evaluation: dict[str, Any], max_ece: float = GATE_MAX_ECE) -> GateDecision | None:
    """Refuse a candidate whose held-out ECE exceeds ``max_ece`` plus twice its chance level on any route.

    Args:
        evaluation: The output of :func:`evaluate_against_champion`.
        max_ece: The limit before the allowance for chance (see :data:`GATE_MAX_ECE`).

    Returns:
        A rejection naming the routes and their ECE, or ``None`` when every route is within it.
    """
    candidate = evaluation["candidate"]
    version = int(evaluation["version"])
    champion_version = evaluation.get("champion_version")
    limits = {route: max_ece + 2 * candidate.get(f"{route}_ece_chance", 0.0) for route in F.ROUTES}
    over = [
        f"{route} ECE {candidate[f'{route}_ece']:.4f} > {limits[route]:.4f}"
        for route in F.ROUTES
        if candidate[f"{route}_ece"] > limits[route]
    ]
    if not over:
        return None
    reason = f"version {version} is miscalibrated on held-out rows: " + "; ".join(over)
    return GateDecision(False, reason, version, None if champion_version is None else int(champion_version))


def decide(
    evaluation: dict[str, Any], min_improvement: float = 0.0, allow_synthetic: bool = False
) -> GateDecision:
    """Apply the gate to the output of :func:`evaluate_against_champion`.

    The rule, in order: every yardstick needs at least
    :data:`~router_model.settings.MIN_HOLDOUT_ROWS_PER_CLASS` rows of each class (the first
    version too); the candidate's calibration must pass :func:`calibration_refusal`; a version
    trained on synthetic data never replaces a champion trained on real
    data unless ``allow_synthetic``; and on *every* yardstick, *each* route's ROC-AUC must be at
    least the champion's plus ``min_improvement``.

    Args:
        evaluation: Candidate and champion metrics per yardstick.
        min_improvement: How much higher each route's ROC-AUC must be than the champion's.
        allow_synthetic: Let a synthetic-data version replace a real-data champion (it must still
            pass every yardstick).

    Returns:
        The :class:`GateDecision`.

    Raises:
        ConfigError: If ``min_improvement`` is outside its range.
    """
    min_improvement = check_min_improvement(min_improvement)
    version = int(evaluation["version"])
    champion_version = evaluation.get("champion_version")
    if champion_version is not None and int(champion_version) == version:
        return GateDecision(True, f"version {version} is already the champion", version, version)
    yardsticks = evaluation["yardsticks"]
    for yardstick in yardsticks:
        why = _too_few(yardstick)
        if why:
            return GateDecision(
                False, f"version {version} cannot be judged: {why}", version, champion_version
            )
    if (refused := calibration_refusal(evaluation)) is not None:
        return refused
    if champion_version is None:
        return GateDecision(True, "first version: no champion yet", version, None)
    champion_version = int(champion_version)
    synthetic = settings.SOURCE_SYNTHETIC
    if (
        evaluation.get("data_source") == synthetic
        and evaluation.get("champion_data_source") not in (None, synthetic)
        and not allow_synthetic
    ):
        return GateDecision(
            False,
            f"version {version} was trained on synthetic data and champion version {champion_version} on "
            f"{evaluation['champion_data_source']} data: a synthetic model never replaces a real one "
            "unless allowed (--allow-synthetic, DAG param allow_synthetic)",
            version,
            champion_version,
        )
    parts, ok = [], True
    for yardstick in yardsticks:
        if "skipped" in yardstick:
            parts.append(f"{yardstick['name']} not used: they are {yardstick['skipped']}")
            continue
        candidate, champion = yardstick["candidate"], yardstick["champion"]
        checks = []
        for route in F.ROUTES:
            key = f"{route}_{GATE_METRIC}"
            need = champion[key] + min_improvement
            passed = candidate[key] >= need
            ok &= passed
            checks.append(f"{route} ROC-AUC {candidate[key]:.4f} {'>=' if passed else '<'} {need:.4f}")
        parts.append(f"on {yardstick['name']} ({yardstick['rows']}) " + ", ".join(checks))
    verdict = "beats or matches" if ok else "is worse than"
    reason = f"version {version} {verdict} champion version {champion_version}: " + "; ".join(parts)
    return GateDecision(ok, reason, version, champion_version)


@contextlib.contextmanager
def _local_lock() -> Iterator[None]:
    """An exclusive ``flock`` on ``<data dir>/.promotion.lock``: processes of this machine queue here.

    It keeps them from polling the registry lock against each other (cheap, and kind to an
    embedded SQLite store). If the file cannot be opened, the registry lock alone serialises.
    """
    path = settings.data_dir() / ".promotion.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(path)
    except OSError as err:
        _logger.warning("No local promotion lock (%s: %s); relying on the registry lock", path, err)
        yield
        return
    with lock:
        yield


@contextlib.contextmanager
def promotion_lock() -> Iterator[None]:
    """Serialise the read-compare-move of ``champion`` across every process and machine.

    MLflow's registry has no conditional alias update, so this is what makes the compare-and-set
    in :func:`apply_decision` atomic: a lock kept in the registry itself
    (:func:`router_model.registry.registry_lock`, which explains the choice), so it holds between
    Airflow workers that share no disk, the CLI and the DAG, with a tracking server or the
    embedded SQLite store. Processes on one machine first queue on a local file lock.

    Raises:
        router_model.registry.LockTimeoutError: If another process holds the lock for too long
            (transient: the DAG task retries).
    """
    with _local_lock(), registry.registry_lock():
        yield


def stale_reason(decision: GateDecision, current: int | None) -> str:
    """Why a promotion was not applied: the champion it was evaluated against is gone.

    Args:
        decision: The promotion as the gate decided it.
        current: The version holding ``champion`` now (``None`` if none does).

    Returns:
        One line naming both champions and the gate's original reason.
    """

    def name(version: int | None) -> str:
        return f"version {version}" if version is not None else "no version"

    return (
        f"champion moved from {name(decision.champion_version)} to {name(current)} during this retrain; "
        f"re-run to compare against {name(current)} (the gate had said: {decision.reason})"
    )


def apply_decision(decision: GateDecision | Mapping[str, Any]) -> GateDecision:
    """Move the aliases as decided and record the reason on the version.

    A promotion is a compare-and-set: right before moving ``champion`` the current champion is read
    again, and if it is no longer the version the candidate was evaluated against (another retrain
    or a manual promote moved it in the meantime), ``champion`` stays where it is and the candidate
    gets ``challenger`` with the tag ``gate=superseded`` and a ``gate_reason`` saying which version
    to compare against on a re-run. The read and the move happen under :func:`promotion_lock`, so
    no two processes, on one machine or on several, can interleave there. A registry that cannot
    be reached raises; it is never read as "no champion".

    Applying the same decision again is idempotent: a promoted version finds itself champion and
    stays, a superseded or rejected one stays challenger, and the tags are rewritten unchanged.
    The version is tagged with ``gate`` (``promoted``, ``rejected`` or ``superseded``),
    ``gate_reason`` and ``gate_champion_version`` (the champion it was compared with, or
    ``none``) after the alias move.

    Args:
        decision: A :class:`GateDecision` or its ``as_dict()`` form (what a DAG task passes on).

    Returns:
        The decision that took effect: the given one or, when the champion moved since the
        evaluation, a rejection whose reason says so. Its :attr:`GateDecision.alias` is the alias
        the version now holds.
    """
    if not isinstance(decision, GateDecision):
        decision = GateDecision(**decision)
    gate = "promoted" if decision.promote else "rejected"
    if decision.promote:
        # Re-read right before the move: a retrain that finished in the meantime (the CLI racing the
        # DAG, or a manual promote) must not be overwritten by a comparison with its predecessor.
        with promotion_lock():
            found = registry.alias_version(settings.CHAMPION)
            current = int(found.version) if found is not None else None
            moved = current not in (decision.champion_version, decision.version)
            if not moved:
                registry.set_alias(settings.CHAMPION, decision.version)
        if moved:
            reason = stale_reason(decision, current)
            _logger.warning("Version %s does not take %s: %s", decision.version, settings.CHAMPION, reason)
            decision = GateDecision(False, reason, decision.version, decision.champion_version)
            gate = "superseded"
    if not decision.promote:
        registry.set_alias(settings.CHALLENGER, decision.version)
    else:
        challenger = registry.alias_version(settings.CHALLENGER)
        if challenger is not None and int(challenger.version) == decision.version:
            registry.delete_alias(settings.CHALLENGER)
    champion_version = decision.champion_version
    registry.tag_version(
        decision.version,
        {
            "gate": gate,
            "gate_reason": decision.reason,
            "gate_champion_version": "none" if champion_version is None else champion_version,
        },
    )
    return decision


def retrain(
    path: str | None = None,
    source: str | None = None,
    train_params: dict[str, Any] | None = None,
    min_improvement: float = 0.0,
    retrain_key: str | None = None,
    allow_synthetic: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Run every step in one process (what ``mushroom-router train`` does).

    Args:
        path: Training file (default: resolved as :func:`router_model.data.resolve_data` says).
        source: Force one data source.
        train_params: Overrides of :class:`router_model.train.TrainConfig`.
        min_improvement: The gate's margin (see :func:`decide`).
        retrain_key: Idempotency key (see :func:`train_and_register`).
        allow_synthetic: Let a synthetic-data version replace a real-data champion.
        force: Train even when data, code and params equal the champion's (:func:`training_needed`).

    Returns:
        Data, the check (``"check"``: :func:`training_needed`'s answer) and, when it trained,
        registration, evaluation, the decision that took effect (see :func:`apply_decision`) and
        the alias, as one dict. When it did not train, ``"alias"`` is ``None``.

    Raises:
        ConfigError: If ``min_improvement`` or a training param is out of range (checked before
            anything runs).
    """
    check_min_improvement(min_improvement)
    TrainConfig.from_mapping(train_params)
    fetched = fetch_data(source=source, path=path)
    summary = validate_data(fetched["path"])
    check = training_needed(fetched["sha256"], train_params, force)
    if not check["train"]:
        return {"data": fetched, "summary": summary, "check": check, "alias": None}
    registered = train_and_register(fetched["path"], fetched["source"], train_params, retrain_key)
    evaluation = evaluate_against_champion(registered["version"], fetched["path"])
    decision = apply_decision(decide(evaluation, min_improvement, allow_synthetic))
    return {
        "data": fetched,
        "summary": summary,
        "check": check,
        **registered,
        "evaluation": evaluation,
        "decision": decision.as_dict(),
        "alias": decision.alias,
    }
