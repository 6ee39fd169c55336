"""Switch the served version inside the running scoring server, so that no request is refused.

Why in place: ``mlflow models serve`` holds one port in one process tree. Stopping it and starting
a new one refused requests for as long as a server takes to start (seconds; the figures are in
docs/benchmarks.md). A second server behind a proxy, or a listening socket handed from one server
to the next, would need a proxy process or MLflow's CLI to take a socket, and still pay a whole
server start (CPU on the same cores while the old one answers) at every switch. Inside the
running server the only new work is what a switch really needs: load the new version's files
and check its answers. MLflow's handler passes its model to ``invocations`` on every request,
and :mod:`router_model.server_guard` wraps that function, so the guard answers with whichever
model its :class:`~router_model.server_guard.ModelSlot` holds: one reference, replaced after a
drain, so no request is half one version and half the other.

The protocol, in files the supervisor and each uvicorn worker share (the supervisor's cache):

* the **control file** (:data:`SWITCH_FILE_ENV` names it; written whole by
  :func:`write_control`): ``{"seq", "version", "model_dir", "run_id", "switches"}``;
* one **acknowledgement** per worker process (:func:`ack_path`): ``{"pid", "seq", "version",
  "ok", "reason"}``, written once the worker serves ``seq``'s version, or has refused it.

In each worker a :class:`Watcher` thread (started by the router's ``load_context``, once per
process) looks at the control file's modification time a few times a second (a ``stat``), and for
a new version: loads it (:func:`load_checked`: ``mlflow.pyfunc.load_model``, whose router checks
its golden rows; then its input example and the golden rows on MLflow's path and on the fast
path), swaps it in, counts it in the metrics, and acknowledges. A version that does not load or
answers wrongly is not swapped in: the old one keeps answering, the worker logs why, and its
acknowledgement carries the reason (the supervisor then tags the version ``serving=rejected``).

What may differ between two versions besides their sub-models and ``model_config`` is checked
by the supervisor before it asks for an in-place switch (:func:`incompatibility`): the code is
the installed code for both (router_model/trust.py), and the MLflow version, Python version,
loader, signature and the pinned requirements must be those of the version the server process
was started with; otherwise the supervisor starts a new server instead (a restart).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router_model import features as F
from router_model import settings, trust

_logger = logging.getLogger(__name__)

#: The environment variable naming the control file (set by the supervisor for its servers).
SWITCH_FILE_ENV = "MUSHROOM_SWITCH_FILE"
#: How often a worker looks at the control file (one ``stat``).
WATCH_SECONDS = 0.1
#: Longest wait for requests that took the old model before the new one answers.
DRAIN_SECONDS = 30.0
#: The ``MLmodel`` fields (``python_function`` flavour and top level) and the environment files
#: that must match for a version to be switched in inside a server started on another one.
_SAME_FLAVOR_FIELDS = ("loader_module", "python_version", "code", "env")
_SAME_MODEL_FIELDS = ("mlflow_version", "signature")
_ENV_FILES = ("requirements.txt", "python_env.yaml", "conda.yaml")


# --- the protocol (both sides) ---------------------------------------------------------------------


def ack_dir(control: Path) -> Path:
    """Where the workers acknowledge the control file's requests."""
    return control.with_name(control.name + ".acks")


def ack_path(control: Path, pid: int) -> Path:
    """The acknowledgement file of worker ``pid``."""
    return ack_dir(control) / f"{pid}.json"


def _write_json(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` to ``path`` whole (a reader never sees half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)


def write_control(control: Path, seq: int, version: int, model_dir: Path, switches: int) -> None:
    """Ask every worker following ``control`` to serve ``version`` from ``model_dir``.

    Args:
        control: The control file.
        seq: A number larger than any written before (acknowledgements name it).
        version: The registry version.
        model_dir: Its verified local copy (``MLmodel`` at its root).
        switches: The supervisor's switch count once this version serves.
    """
    record = {"seq": seq, "version": str(version), "model_dir": str(model_dir), "switches": switches}
    _write_json(control, record)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or ``None`` when it is missing or not (yet) whole."""
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def read_acks(control: Path, seq: int) -> dict[int, dict[str, Any]]:
    """The workers' acknowledgements of request ``seq``, by worker pid."""
    found = {}
    with contextlib.suppress(OSError):
        for path in ack_dir(control).glob("*.json"):
            record = read_json(path)
            if record is not None and record.get("seq") == seq:
                found[int(record["pid"])] = record
    return found


def _mlmodel(model_dir: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((model_dir / "MLmodel").read_text()) or {}


def incompatibility(running: Path, new: Path) -> str | None:
    """Why ``new`` cannot be switched in inside a server started on ``running`` (``None``: it can).

    Both were checked against the installed code (router_model/trust.py); this compares what
    else a server process takes from the version it starts on: the code digest again, MLflow's
    and Python's versions, the pyfunc loader and code folder, the signature, and the pinned
    environment (``requirements.txt``, ``python_env.yaml``, ``conda.yaml``).
    """
    try:
        if trust.model_digest(running) != trust.model_digest(new):
            return "its code differs from the running server's"
        old, fresh = _mlmodel(running), _mlmodel(new)
        old_flavor = old.get("flavors", {}).get("python_function", {})
        new_flavor = fresh.get("flavors", {}).get("python_function", {})
        for field in _SAME_FLAVOR_FIELDS:
            if old_flavor.get(field) != new_flavor.get(field):
                return (
                    f"python_function {field} {new_flavor.get(field)!r} != running {old_flavor.get(field)!r}"
                )
        for field in _SAME_MODEL_FIELDS:
            if old.get(field) != fresh.get(field):
                return f"{field} {fresh.get(field)!r} != running {old.get(field)!r}"
        for name in _ENV_FILES:
            before, after = running / name, new / name
            if (before.read_bytes() if before.is_file() else None) != (
                after.read_bytes() if after.is_file() else None
            ):
                return f"its {name} differs from the running server's"
    except (OSError, ValueError, trust.UntrustedCodeError) as err:
        return f"cannot compare it with the running server's ({err})"
    return None


# --- the server side -------------------------------------------------------------------------------


def load_checked(model_dir: Path) -> Any:
    """Load a version and prove it answers, before it takes any request.

    ``mlflow.pyfunc.load_model`` runs the router's ``load_context``, which checks the golden rows
    against the answers recorded at training time. Then, as requests will reach it: its logged
    input example through MLflow's ``predict`` (params schema included), the golden rows through
    MLflow's ``predict`` against the recorded answers, and the golden rows through the guard's
    fast path, which must give the same doubles.

    Returns:
        The loaded ``PyFuncModel``.

    Raises:
        Exception: Whatever loading raises, or
            :class:`router_model.router.GoldenAnswerError` naming a wrong answer.
    """
    import mlflow.pyfunc
    import orjson
    import pandas as pd

    from router_model import server_guard
    from router_model.router import (
        CONFIG_GOLDEN,
        GoldenAnswerError,
        MushroomRouterModel,
        check_answers,
        check_golden,
    )

    model = mlflow.pyfunc.load_model(str(model_dir))
    if not isinstance(model.unwrap_python_model(), MushroomRouterModel):
        raise GoldenAnswerError(f"{model_dir} is not a mushroom router")
    example = model.input_example
    if example is not None:
        example = pd.DataFrame(example)
        check_answers(model.predict(example, params={"threshold": F.DEFAULT_THRESHOLD}), len(example))
    golden = F.golden_rows()
    out = model.predict(pd.DataFrame(golden))
    check_golden(out, (model.model_config or {}).get(CONFIG_GOLDEN))
    body = orjson.dumps({"dataframe_records": golden})
    fast = server_guard.fast_answer(body, server_guard.JSON_TYPE, model, model.metadata.get_input_schema())
    if fast is None:
        raise GoldenAnswerError("the scoring server's fast path declines the golden rows")
    fast_p = [row["poisonous_probability"] for row in orjson.loads(fast)["predictions"]]
    if fast_p != out["poisonous_probability"].tolist():
        raise GoldenAnswerError("the fast path's answer to the golden rows differs from predict's")
    return model


@dataclass
class _Seen:
    mtime_ns: int = -1
    seq: int = -1


class Watcher:
    """Follows the control file in one worker process and switches the served model in place.

    Args:
        control: The control file.
        version: The version this process was started on (``served_env``), if known.
        metrics: The process's metrics (:class:`router_model.metrics.ServerMetrics`), if on.
    """

    def __init__(self, control: Path, version: str | None, metrics: Any = None) -> None:
        self.control = control
        self.version = version
        self.metrics = metrics
        self._seen = _Seen()
        self._thread: threading.Thread | None = None
        self.started = False

    def start(self) -> None:
        """Serve what the control file names now (before the first request), then follow it."""
        self.started = True  # first: a version loaded by check() finds the watcher started
        self.check()
        self._thread = threading.Thread(target=self._loop, name="mushroom-router-switch", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            time.sleep(WATCH_SECONDS)
            try:
                self.check()
            except Exception:  # the watcher must outlive any one bad request
                _logger.exception("Following %s failed; still watching", self.control)

    def check(self) -> None:
        """Act on the control file if it changed since the last look."""
        try:
            mtime = self.control.stat().st_mtime_ns
        except OSError:
            return
        if mtime == self._seen.mtime_ns:
            return
        record = read_json(self.control)
        if record is None:
            return  # not whole yet: the next look reads it
        self._seen.mtime_ns = mtime
        seq = int(record.get("seq", -1))
        if seq == self._seen.seq:
            return
        self._seen.seq = seq
        self.act(record)

    def act(self, record: dict[str, Any]) -> None:
        """Serve the version ``record`` names (unless it already does) and acknowledge."""
        from router_model import server_guard

        version = str(record["version"])
        if version == self.version:
            self._ack(record, True, "already serving it")
            return
        started = time.monotonic()
        try:
            model = load_checked(Path(record["model_dir"]))
        except Exception as err:
            reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:500]
            _logger.error(
                "Keeping version %s: version %s cannot be served (%s)", self.version, version, reason
            )
            self._ack(record, False, reason)
            return
        loaded = time.monotonic()
        drained = server_guard.SLOT.swap(server_guard.Answering(model, version), DRAIN_SECONDS)
        if not drained:
            _logger.warning(
                "Requests on version %s ran over %.0fs; switched anyway", self.version, DRAIN_SECONDS
            )
        if self.metrics is not None:
            self.metrics.now_serving(model.metadata.run_id or "", version, record.get("switches"))
        _logger.info(
            "Switched from version %s to %s in place (pid %d): loaded and checked in %.2fs, swapped in %.3fs",
            self.version,
            version,
            os.getpid(),
            loaded - started,
            time.monotonic() - loaded,
        )
        self.version = version
        self._ack(record, True, "switched")

    def _ack(self, record: dict[str, Any], ok: bool, reason: str) -> None:
        ack = {"pid": os.getpid(), "seq": record.get("seq"), "version": str(record["version"]), "ok": ok}
        ack["reason"] = reason
        try:
            _write_json(ack_path(self.control, os.getpid()), ack)
        except OSError as err:
            _logger.error("Cannot acknowledge switch %s in %s: %s", record.get("seq"), self.control, err)


_WATCHER: list[Watcher] = []
_WATCHER_LOCK = threading.Lock()


def follow(metrics: Any = None) -> Watcher | None:
    """Start this process's :class:`Watcher`, once, when the supervisor gave a control file.

    Called from the router's ``load_context`` inside the scoring server; a version loaded by the
    watcher itself runs ``load_context`` too, and finds the watcher there.

    Returns:
        The watcher, or ``None`` when no control file is set (``mushroom-router serve``,
        ``mlflow models serve`` by hand: nothing switches in place there).
    """
    control = settings.env("MUSHROOM_SWITCH_FILE")
    if not control:
        return None
    with _WATCHER_LOCK:
        if _WATCHER:
            return _WATCHER[0]
        watcher = Watcher(Path(control), settings.env("MUSHROOM_SERVED_VERSION"), metrics)
        _WATCHER.append(watcher)
    return watcher
