"""Keep MLflow's scoring server serving whatever version holds the ``champion`` alias.

The model server in the compose stack runs ``mushroom-router supervise``: it polls the registry,
and when ``champion`` moves it downloads the new version into a verified cache and has the
running server switch to it **in place** (:mod:`router_model.hot_swap`): it writes the version
into a control file; each uvicorn worker loads it beside the old one, proves it answers (its
input example, and golden rows against the answers recorded at training time), swaps it in
after the requests on the old one are done, and acknowledges. No request is refused or fails,
and every answer's ``X-Model-Version`` header names the version that produced it.

Why in place rather than a new server: the old way stopped the server and started a new one on
the same port, which refused requests for a whole server start at every switch; a second
server on another port needs a proxy in front of it or a listening socket handed over, and still
starts a whole server beside the running one on the same cores. A switch in place costs one
model load in a background thread of each worker. It is used when the new version can run in
the running process: the same code (the trust check already requires the installed code), and
the same MLflow and Python versions, loader, signature and pinned requirements as the version
the server started on (:func:`router_model.hot_swap.incompatibility`). Otherwise the supervisor
falls back to a restart (tried first on a spare loopback port), which refuses requests for one
server start, as before.

The poll is one registry call (``get_model_version_by_alias``), so it runs every
:data:`DEFAULT_POLL_SECONDS` seconds: a moved alias is served within a poll, a download and a
load.

The rule behind every fault: **never give up a good server for a version that has not shown it
works, and keep serving the last good version when the registry cannot say what to serve.**

- The champion cannot be downloaded, does not load or answers its golden rows wrongly: the old
  version keeps serving, the version is tagged ``serving=rejected`` with the reason (where the
  server's account may tag), the bad download is thrown away, and the version is tried again with
  back-off (from one poll interval up to :data:`MAX_RETRY_SECONDS`), so a repaired store is
  picked up.
- The ``champion`` alias, or the version it named, is deleted: the last good version keeps being
  served, and the log and :data:`STATE_FILE` say so; a restarted supervisor serves it again from
  its cache.
- The tracking server is unreachable: registry calls are bounded
  (:data:`router_model.settings.MLFLOW_HTTP_LIMITS`), a
  crashed server is restarted from the cache without the registry, and SIGTERM is acted on
  within seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import requests

from router_model import hot_swap, metrics, registry, serving, settings, trust
from router_model.errors import RouterError
from router_model.locks import FileLock

_logger = logging.getLogger(__name__)

DEFAULT_POLL_SECONDS = settings.DEFAULT_POLL_SECONDS
START_TIMEOUT_SECONDS = 120.0
#: Longest wait before a version that failed to download or load is tried again.
MAX_RETRY_SECONDS = 300.0
#: The supervisor's status, written on every change into its cache folder (read by ``status``).
STATE_FILE = "state.json"
#: The control file the servers' workers follow (:mod:`router_model.hot_swap`), in the same folder.
SWITCH_FILE = "switch.json"
#: Longest wait for every worker to acknowledge an in-place switch.
SWITCH_TIMEOUT_SECONDS = 90.0
MANIFEST_FILE = "manifest.json"
MODEL_DIR = "model"
#: The cache's lock file (:meth:`ModelCache.fetch`), in its folder.
LOCK_FILE = ".fetch.lock"


#: Values of ``state`` in :data:`STATE_FILE`.
SERVING, HOLDING, WAITING, DOWN = "serving", "holding", "waiting", "down"


def default_cache_dir() -> Path:
    """Where the supervisor keeps downloaded versions and its state (``MUSHROOM_DATA_DIR/serving``)."""
    return settings.data_dir() / "serving"


def read_state(cache_dir: str | Path | None = None) -> dict[str, Any] | None:
    """The supervisor's last written status, or ``None`` when it never ran with this cache."""
    path = Path(cache_dir or default_cache_dir()) / STATE_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def cache_key(version: Any) -> str:
    """A cache folder name unique in the registry: version number and model id (or run id).

    A version number alone is not: a registry rebuilt from scratch numbers its versions from 1
    again, and a cached ``v1`` would then be served for a different model.
    """
    source = str(getattr(version, "source", "") or "")
    ident = getattr(version, "model_id", None) or (
        source.removeprefix("models:/") if source.startswith("models:/m-") else None
    )
    ident = ident or version.run_id or hashlib.sha256(source.encode()).hexdigest()[:16]
    return f"v{version.version}-{ident}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ModelCache:
    """Downloaded model versions, each with a sha256 manifest written after a complete download.

    An entry is ``<root>/<cache_key>/`` holding ``model/`` (the MLflow model, ``MLmodel`` at its
    root) and ``manifest.json``. A download goes to a temporary folder, is checked, and is renamed
    into place only when complete, so an empty or partial download is never taken for a version.
    Processes of one machine sharing the folder take turns to fetch (a lock file), so servers
    started at the same moment download a version once and all serve that copy.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def model_dir(self, key: str) -> Path:
        """The folder to serve for ``key``."""
        return self.root / key / MODEL_DIR

    def verified(self, key: str) -> Path | None:
        """The model folder of ``key`` if every file in its manifest is there unchanged, else ``None``."""
        entry = self.root / key
        try:
            manifest = json.loads((entry / MANIFEST_FILE).read_text())
        except (OSError, ValueError):
            return None
        model = entry / MODEL_DIR
        if "MLmodel" not in manifest:
            return None
        for name, digest in manifest.items():
            try:
                if _sha256(model / name) != digest:
                    return None
            except OSError:
                return None
        return model

    def fetch(self, version: Any) -> Path:
        """The verified local copy of a registry ``ModelVersion``, downloading it if needed.

        Raises:
            RuntimeError: If the download holds no ``MLmodel`` (artifacts missing from the store).
            Exception: Whatever MLflow raises when the registry or artifact store cannot answer.
        """
        key = cache_key(version)
        found = self.verified(key)
        if found is not None:
            return found
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(self.root / LOCK_FILE):  # this machine's fetches take turns
            # Another process (a second server started at the same moment) may have fetched it
            # while this one waited: then it is used, not dropped and fetched again.
            found = self.verified(key)
            if found is not None:
                return found
            self.drop(key)
            return self._download(version, key)

    def _download(self, version: Any, key: str) -> Path:
        """Download ``version`` into a partial folder, check it, write its manifest, move it to ``key``."""
        import mlflow

        partial = self.root / f".{key}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        try:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    registry.version_uri(version.version), dst_path=str(partial / MODEL_DIR)
                )
            )
            if not (local / "MLmodel").is_file():
                files = sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file())
                raise RuntimeError(
                    f"version {version.version} has no MLmodel file in the artifact store "
                    f"(downloaded {len(files)} files: {files[:5]}); were its artifacts deleted?"
                )
            if local != partial / MODEL_DIR:
                raise RuntimeError(f"MLflow downloaded version {version.version} to {local}, not {partial}")
            manifest = {
                str(p.relative_to(local)): _sha256(p) for p in sorted(local.rglob("*")) if p.is_file()
            }
            (partial / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
            partial.rename(self.root / key)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return self.model_dir(key)

    def drop(self, key: str) -> None:
        """Forget ``key`` (its next use downloads it again)."""
        shutil.rmtree(self.root / key, ignore_errors=True)

    def prune(self, keep: set[str]) -> None:
        """Delete every entry, and any left-over partial download, whose key is not in ``keep``."""
        if not self.root.is_dir():
            return
        for entry in self.root.iterdir():
            if entry.is_dir() and entry.name not in keep:
                _logger.info("Removing cached model %s", entry.name)
                shutil.rmtree(entry, ignore_errors=True)


@dataclass
class Served:
    """The version being served, its process, and the cached version that process started on."""

    version: int
    key: str
    process: subprocess.Popen
    boot_key: str


class SwitchRefusedError(RouterError, RuntimeError):
    """The running server loaded the new version and refused it (it did not load or answered wrongly)."""


@dataclass
class _Failure:
    """A version that could not be served, and when to try it again."""

    count: int
    retry_at: float
    reason: str


class ChampionSupervisor:
    """Poll the alias and (re)start the model server when it moves.

    Args:
        host: Interface for the model server.
        port: Port for the model server.
        workers: Uvicorn workers.
        poll_seconds: Seconds between registry polls.
        alias: The alias to follow.
        cache_dir: Where model versions are downloaded before serving, and the state is written.
    """

    def __init__(
        self,
        host: str = settings.DEFAULT_SERVE_HOST,
        port: int = settings.DEFAULT_SERVE_PORT,
        workers: int = 1,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        alias: str = settings.CHAMPION,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.host, self.port, self.workers = host, port, workers
        self.poll_seconds = poll_seconds
        self.alias = alias
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.cache = ModelCache(self.cache_dir)
        self.served: Served | None = None
        self.stopping = threading.Event()
        self.failures: dict[str, _Failure] = {}
        self._said: str | None = None
        saved = read_state(self.cache_dir) or {}
        self.last_good: dict[str, Any] | None = saved.get("last_good")
        #: Completed switches from one version to another (a first start, a restart or a try-out is
        #: none); each server is told the count, and exposes it on /metrics.
        self.switches = 0
        self._last_served: int | None = None
        self.control = self.cache_dir / SWITCH_FILE
        #: Request numbers of the control file; from the clock, so a restarted supervisor's are new.
        self._seq = time.time_ns()

    # --- state and log ---------------------------------------------------------------------------

    def _report(
        self, state: str, reason: str, level: int = logging.INFO, champion: int | None = None
    ) -> None:
        """Write the state file, and log ``reason`` when it differs from the last one logged."""
        record = {
            "state": state,
            "reason": reason,
            "served_version": self.served.version if self.served else None,
            "champion_version": champion,
            "last_good": self.last_good,
            "updated": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        with contextlib.suppress(OSError):
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_dir / f".{STATE_FILE}.tmp"
            tmp.write_text(json.dumps(record, indent=1) + "\n")
            tmp.replace(self.cache_dir / STATE_FILE)
        if reason != self._said:
            _logger.log(level, "%s: %s", state.capitalize(), reason)
            self._said = reason

    def _name(self) -> str:
        return f"{settings.MODEL_NAME}@{self.alias}"

    # --- the server ------------------------------------------------------------------------------

    def _ping(self, port: int | None = None) -> bool:
        try:
            url = f"http://{self._client_host()}:{port or self.port}/ping"
            return requests.get(url, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def _client_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host

    def _stop_served(self) -> None:
        if self.served is None:
            return
        # The whole process group, and wait for it: mlflow's uvicorn child outlives the mlflow
        # process for a moment and would answer the new server's first /ping with the old model.
        serving.stop_server(self.served.process)
        self.served = None

    def _start(
        self, model: Path, version: int, host: str, port: int, follow: bool = True
    ) -> subprocess.Popen:
        """Start a model server (:func:`~router_model.serving.start_server`) on ``model``; wait for ``/ping``.

        Args:
            model: The verified local copy to serve.
            version: Its registry version.
            host: Interface.
            port: Port.
            follow: Whether the server follows the control file (not a try-out server).

        Raises:
            RuntimeError: If the server exits (the version does not load) or :meth:`stop` is called.
            TimeoutError: If it does not answer within :data:`START_TIMEOUT_SECONDS`.
        """
        switches = self._switches_after(version)
        env = metrics.served_env(version, switches)
        if follow:
            # Named before the start, so a worker uvicorn restarts later serves what is current.
            hot_swap.write_control(self.control, self._next_seq(), version, model, switches)
            env[hot_swap.SWITCH_FILE_ENV] = str(self.control)
        proc = serving.start_server(str(model), host, port, self.workers, extra_env=env)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        try:
            while not self._ping(port):
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"the model server exited with {proc.returncode} for version {version} "
                        "(it does not load; see the server's output above)"
                    )
                if self.stopping.is_set():
                    raise RuntimeError(f"stopped while version {version} was starting")
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"version {version} did not answer /ping within {START_TIMEOUT_SECONDS:.0f}s"
                    )
                time.sleep(0.2)
        except BaseException:
            serving.stop_server(proc)
            raise
        return proc

    def _try_out(self, model: Path, version: int) -> None:
        """Start ``version`` on a spare loopback port, wait for ``/ping``, stop it again."""
        proc = self._start(model, version, "127.0.0.1", _free_port(), follow=False)
        serving.stop_server(proc)

    def _now_serving(self, served: Served, good: bool) -> None:
        """Record what serves now; ``good``: it just proved itself (it becomes the last good one).

        A switch is counted when the version differs from the last one served (a restart of the
        same version, or a first start, is none).
        """
        self.served = served
        if good:
            self.last_good = {"version": served.version, "key": served.key}
        self.switches = self._switches_after(served.version)
        self._last_served = served.version

    def _switches_after(self, version: int) -> int:
        """The switch count once ``version`` serves (told to each server, for ``/metrics``)."""
        return self.switches + (self._last_served not in (None, version))

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _serve(self, model: Path, version: int, key: str) -> float:
        """Replace the current server (if any) with a new one on ``version``; the old one stops only now.

        Returns:
            Seconds from stopping the old server until the new one answered (the request gap).
        """
        previous = self.served
        started = time.monotonic()
        self._stop_served()
        if self._ping():
            raise RuntimeError(
                f"{self._client_host()}:{self.port} still answers /ping with no model server of ours "
                "running: another process holds the port"
            )
        try:
            proc = self._start(model, version, self.host, self.port)
        except Exception:
            if previous is not None and not self.stopping.is_set():
                try:
                    self._restart(previous.version, previous.key, "the new version failed on the real port")
                except Exception as err:
                    _logger.error("Could not bring back version %s: %s", previous.version, err)
            raise
        self._now_serving(Served(version, key, proc, key), good=True)
        gap = time.monotonic() - started
        _logger.info(
            "Serving %s version %s on %s:%s (pid %s, was %s); switch took %.1fs",
            settings.MODEL_NAME,
            version,
            self.host,
            self.port,
            proc.pid,
            previous.version if previous else None,
            gap,
        )
        return gap

    def _restart(self, version: int, key: str, why: str) -> bool:
        """Start a version from the cache alone (no registry); ``False`` if its copy is gone or bad."""
        model = self.cache.verified(key)
        if model is None:
            _logger.error(
                "Cannot restart version %s (%s): its cached copy is missing or damaged", version, why
            )
            self.cache.drop(key)
            return False
        self._stop_served()
        proc = self._start(model, version, self.host, self.port)
        self._now_serving(Served(version, key, proc, key), good=False)
        _logger.info(
            "Serving %s version %s again from %s (pid %s, %s)",
            settings.MODEL_NAME,
            version,
            model,
            proc.pid,
            why,
        )
        return True

    def _in_place(self, model: Path, version: int, key: str) -> float:
        """Have the running server's workers switch to ``version`` (:mod:`router_model.hot_swap`).

        Returns:
            Seconds from writing the control file until every worker answered with the new version.

        Raises:
            SwitchRefusedError: If the workers loaded it and refused it (it is tagged rejected).
            RuntimeError, TimeoutError: If the server exits, :meth:`stop` is called, or not every
                worker acknowledges within :data:`SWITCH_TIMEOUT_SECONDS` (then every worker is
                told to serve the old version again).
        """
        assert self.served is not None
        previous = self.served
        switches = self._switches_after(version)
        started = time.monotonic()
        seq = self._next_seq()
        hot_swap.write_control(self.control, seq, version, model, switches)
        try:
            acks = self._acknowledged(seq, version)
        except Exception:
            self._switch_back(previous)
            raise
        refused = sorted({ack["reason"] for ack in acks.values() if not ack.get("ok")})
        if refused:
            if len(refused) < len(acks):  # some workers switched: all back to the old version
                self._switch_back(previous)
            reason = "; ".join(refused)
            reject(version, f"the model server refused it: {reason}")
            raise SwitchRefusedError(f"the model server refused it: {reason}")
        self._now_serving(Served(version, key, previous.process, previous.boot_key), good=True)
        took = time.monotonic() - started
        _logger.info(
            "Serving %s version %s on %s:%s (pid %s, was %s), switched in place in %d worker(s); "
            "switch took %.1fs, no request refused",
            settings.MODEL_NAME,
            version,
            self.host,
            self.port,
            previous.process.pid,
            previous.version,
            len(acks),
            took,
        )
        return took

    def _acknowledged(self, seq: int, version: int) -> dict[int, dict[str, Any]]:
        """Wait until every worker of the served process acknowledged control request ``seq``."""
        assert self.served is not None
        deadline = time.monotonic() + SWITCH_TIMEOUT_SECONDS
        while True:
            live = set(serving.group_pids(self.served.process.pid))
            acks = {pid: ack for pid, ack in hot_swap.read_acks(self.control, seq).items() if pid in live}
            if len(acks) >= self.workers:
                return acks
            if self.served.process.poll() is not None:
                raise RuntimeError(f"the model server exited while switching to version {version}")
            if self.stopping.is_set():
                raise RuntimeError(f"stopped while switching to version {version}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(acks)} of {self.workers} worker(s) switched to version {version} within "
                    f"{SWITCH_TIMEOUT_SECONDS:.0f}s"
                )
            time.sleep(0.05)

    def _switch_back(self, previous: Served) -> None:
        """Tell every worker to serve ``previous`` again (after a partial or abandoned switch)."""
        model = self.cache.verified(previous.key)
        if model is None or previous.process.poll() is not None:
            return
        seq = self._next_seq()
        hot_swap.write_control(self.control, seq, previous.version, model, self.switches)
        try:
            self._acknowledged(seq, previous.version)
        except Exception as err:
            _logger.error("Workers did not all return to version %s: %s", previous.version, err)

    def switch_to(self, version: Any) -> float:
        """Serve a registry ``ModelVersion``: download and verify it, then switch to it.

        With a server running, the switch happens inside it when the version can run there
        (:func:`router_model.hot_swap.incompatibility`): no request is refused. Otherwise the new
        version is first started on a spare loopback port (a version that does not load never
        replaces a working one), then the server is restarted on it.

        Returns:
            Seconds the switch took (until the new version answers).
        """
        number, key = int(version.version), cache_key(version)
        model = checked(self.cache.fetch(version), version)
        if self.served is None:
            took = self._serve(model, number, key)
        else:
            why = hot_swap.incompatibility(self.cache.model_dir(self.served.boot_key), model)
            if why is None:
                took = self._in_place(model, number, key)
            else:
                _logger.warning(
                    "Version %s cannot be switched in place (%s); restarting the server on it", number, why
                )
                self._try_out(model, number)
                took = self._serve(model, number, key)
        if version.tags.get("serving") == "rejected":
            with contextlib.suppress(Exception):  # a reader account may not tag
                registry.tag_version(number, {"serving": "served", "serving_reason": ""})
        self.failures.pop(key, None)
        assert self.served is not None
        self.cache.prune({key, self.served.boot_key, hot_swap.ack_dir(self.control).name})
        return took

    # --- one poll --------------------------------------------------------------------------------

    def _check_child(self) -> None:
        """Restart a server that died, from the cache: this needs no registry."""
        if self.served is None or self.served.process.poll() is None:
            return
        dead = self.served
        _logger.error(
            "Model server for version %s exited with %s; restarting", dead.version, dead.process.returncode
        )
        self._stop_served()  # its uvicorn child may still hold the port
        self._restart(dead.version, dead.key, "after a crash")

    def _hold(self, reason: str, champion: int | None = None) -> None:
        """Keep (or bring back) the last good version because the champion cannot be served."""
        if self.served is None and self.last_good is not None:
            with contextlib.suppress(Exception):
                self._restart(self.last_good["version"], self.last_good["key"], "the last good version")
        if self.served is not None:
            self._report(
                HOLDING,
                f"{reason}; keeping version {self.served.version}, the last good one",
                logging.WARNING,
                champion,
            )
        else:
            self._report(DOWN, f"{reason}; no good version to serve", logging.ERROR, champion)

    def step(self) -> None:
        """One poll: restart a dead server, then follow the alias if it can be served."""
        self._check_child()
        try:
            champion = registry.alias_version(self.alias)
        except Exception as err:
            self._hold(
                f"cannot read {self._name()} from {settings.redacted(settings.tracking_uri())} ({err})"
            )
            return
        if champion is None:
            if self.served is None and self.last_good is None:
                self._report(
                    WAITING,
                    f"{self._name()} does not exist yet in {settings.redacted(settings.tracking_uri())}; "
                    "train one (mushroom-router train or the Airflow DAG) and it will be served within "
                    f"{self.poll_seconds:g}s",
                    logging.WARNING,
                )
                return
            self._hold(f"{self._name()} does not exist (the alias or its version was deleted)")
            return
        number, key = int(champion.version), cache_key(champion)
        if self.served is not None and self.served.key == key:
            self._report(SERVING, f"version {number} is {self._name()}", champion=number)
            return
        failed = self.failures.get(key)
        if failed is not None and time.monotonic() < failed.retry_at:
            self._hold(failed.reason, number)
            return
        try:
            self.switch_to(champion)
        except Exception as err:
            if self.stopping.is_set():
                _logger.info("Switch to version %s abandoned: %s", number, err)
                return
            self.cache.drop(key)  # a repaired store is downloaded again on the next try
            count = failed.count + 1 if failed else 1
            delay = min(self.poll_seconds * 2**count, MAX_RETRY_SECONDS)
            reason = f"version {number} cannot be served ({err}); next try in {delay:g}s"
            self.failures[key] = _Failure(count, time.monotonic() + delay, reason)
            self._hold(reason, number)
            return
        self._report(SERVING, f"version {number} is {self._name()}", champion=number)

    def run(self) -> None:
        """Poll until :meth:`stop` (or SIGTERM/SIGINT when run from the CLI)."""
        _logger.info("Following %s every %.0fs", self._name(), self.poll_seconds)
        try:
            while not self.stopping.is_set():
                try:
                    self.step()
                except Exception as err:
                    _logger.error("Poll failed: %s; retrying in %.0fs", err, self.poll_seconds)
                self.stopping.wait(self.poll_seconds)
        finally:
            self._stop_served()

    def stop(self, *_: Any) -> None:
        """Ask :meth:`run` to return (signal-handler compatible)."""
        self.stopping.set()


def reject(version: int, reason: str) -> None:
    """Log a refused version and tag it ``serving=rejected`` with the reason, where allowed.

    A model server's account may only read the registry; then the log line is all there is.
    """
    _logger.error("Refusing version %s: %s", version, reason)
    try:
        registry.tag_version(version, {"serving": "rejected", "serving_reason": reason[:500]})
    except Exception as err:
        _logger.warning("Could not tag version %s as rejected (%s)", version, str(err).splitlines()[0][:200])


def checked(model: Path, version: Any) -> Path:
    """``model`` (a downloaded registry ``ModelVersion``) if its code is trusted, else refused and tagged.

    Raises:
        UntrustedCodeError: See :func:`router_model.trust.check_model`.
    """
    try:
        trust.check_model(model, version.tags, version.version)
    except trust.UntrustedCodeError as err:
        reject(int(version.version), str(err))
        raise
    return model


class TrustedCopy(NamedTuple):
    """A verified local copy of a registered version (:func:`trusted_copy`)."""

    path: Path
    #: Its registry version, which the server is told (:func:`router_model.metrics.served_env`).
    version: str


def trusted_copy(model_uri: str, cache_dir: str | Path | None = None) -> TrustedCopy:
    """A verified local copy of a registered version whose code this process trusts, and the version.

    What ``mushroom-router serve`` hands to MLflow's scoring server, so that it loads exactly the
    bytes checked here (a ``models:/`` URI served directly would be downloaded again, unchecked).
    The version comes with it: the alias is resolved here, once, so the server can name the version
    it answers with (``X-Model-Version``, ``/metrics``) without asking the registry again.

    Args:
        model_uri: ``models:/<name>@<alias>`` or ``models:/<name>/<version>``.
        cache_dir: The download cache (default: the supervisor's).

    Raises:
        UntrustedCodeError: If the version's code is not this installation's (it is tagged
            ``serving=rejected``).
        RegistryError: If the URI names no registered version.
    """
    version = registry.resolve(model_uri)
    cache = ModelCache(Path(cache_dir) if cache_dir else default_cache_dir())
    return TrustedCopy(checked(cache.fetch(version), version), str(version.version))


def _free_port() -> int:
    """A TCP port on loopback that is free now (for the trial server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def supervise(host: str, port: int, workers: int = 1, poll_seconds: float = DEFAULT_POLL_SECONDS) -> None:
    """Run a :class:`ChampionSupervisor` in the foreground until SIGTERM or SIGINT."""
    settings.bound_mlflow_http()  # MLflow's defaults: ~4 minutes per call to a dead tracking server
    supervisor = ChampionSupervisor(host, port, workers, poll_seconds)
    signal.signal(signal.SIGTERM, supervisor.stop)
    signal.signal(signal.SIGINT, supervisor.stop)
    supervisor.run()
