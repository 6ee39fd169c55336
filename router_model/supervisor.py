"""Keep ``mlflow models serve`` serving whatever version holds the ``champion`` alias.

The model server in the compose stack runs ``mushroom-router supervise``: it polls the registry,
and when ``champion`` moves it downloads the new version first, then stops the old server and
starts ``mlflow models serve`` on the new one (same host and port). Before any champion exists it
waits and says so, instead of crash-looping; if the tracking server is unreachable it keeps serving
what it has; if the server process dies it starts it again.

A switch costs one server start: requests fail (connection refused) from the moment the old
server stops until the new one answers ``/ping``. Downloading before stopping keeps that gap to
the server's own start-up (measured in ``docs/``).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from router_model import metrics, registry, serving, settings

_logger = logging.getLogger(__name__)

DEFAULT_POLL_SECONDS = 10.0
START_TIMEOUT_SECONDS = 120.0


@dataclass
class Served:
    """The version being served and its process."""

    version: int
    process: subprocess.Popen


class ChampionSupervisor:
    """Poll the alias and (re)start the model server when it moves.

    Args:
        host: Interface for ``mlflow models serve``.
        port: Port for ``mlflow models serve``.
        workers: Uvicorn workers.
        poll_seconds: Seconds between registry polls.
        alias: The alias to follow.
        cache_dir: Where model versions are downloaded before serving.
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
        self.cache_dir = Path(cache_dir) if cache_dir else settings.data_dir() / "serving"
        self.served: Served | None = None
        self.stopping = threading.Event()
        self._waiting_logged = False
        #: Completed switches from one version to another (a first start or a restart is none);
        #: each server is told the count, and exposes it on /metrics.
        self.switches = 0
        self._last_served: int | None = None

    def champion_version(self) -> int | None:
        """The version holding the alias; ``None`` when there is none.

        Raises:
            Exception: Whatever MLflow raises when the tracking server cannot be reached.
        """
        found = registry.alias_version(self.alias)
        return int(found.version) if found is not None else None

    def download(self, version: int) -> Path:
        """Fetch a version's model files into the cache (once) and return the local folder."""
        import mlflow

        target = self.cache_dir / f"v{version}"
        done = target / ".complete"
        if not done.exists():
            target.mkdir(parents=True, exist_ok=True)
            mlflow.artifacts.download_artifacts(registry.version_uri(version), dst_path=str(target))
            done.touch()
        return target

    def _local_model(self, version: int) -> Path:
        folder = self.download(version)
        candidates = [p.parent for p in folder.rglob("MLmodel")]
        if not candidates:
            raise RuntimeError(f"version {version} downloaded to {folder} has no MLmodel file")
        return candidates[0]

    def _ping(self) -> bool:
        try:
            return (
                requests.get(f"http://{self._client_host()}:{self.port}/ping", timeout=2).status_code == 200
            )
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

    def switch_to(self, version: int) -> float:
        """Serve ``version``: download, stop the old server, start the new, wait for ``/ping``.

        Returns:
            Seconds from stopping the old server until the new one answered (the request gap).
        """
        local = self._local_model(version)
        previous = self.served.version if self.served else None
        started = time.monotonic()
        self._stop_served()
        if self._ping():
            raise RuntimeError(
                f"{self._client_host()}:{self.port} still answers /ping with no model server of ours "
                "running: another process holds the port"
            )
        switches = self.switches + (self._last_served not in (None, version))
        proc = serving.start_server(
            str(local), self.host, self.port, self.workers, extra_env=metrics.served_env(version, switches)
        )
        self.served = Served(version, proc)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self._ping():
            if proc.poll() is not None:
                self._stop_served()
                raise RuntimeError(f"mlflow models serve exited with {proc.returncode} for version {version}")
            if time.monotonic() > deadline or self.stopping.is_set():
                self._stop_served()  # the next poll starts it again
                raise TimeoutError(
                    f"version {version} did not answer /ping within {START_TIMEOUT_SECONDS:.0f}s"
                )
            time.sleep(0.2)
        gap = time.monotonic() - started
        self.switches, self._last_served = switches, version
        _logger.info(
            "Serving %s version %s on %s:%s (was %s); switch took %.1fs",
            settings.MODEL_NAME,
            version,
            self.host,
            self.port,
            previous,
            gap,
        )
        return gap

    def step(self) -> None:
        """One poll: react to a moved alias, a missing champion or a dead server."""
        try:
            version = self.champion_version()
        except Exception as err:
            _logger.warning(
                "Cannot read %s@%s (%s); keeping the current server", settings.MODEL_NAME, self.alias, err
            )
            return
        if version is None:
            if not self._waiting_logged:
                _logger.warning(
                    "Waiting: %s@%s does not exist yet in %s; train one (mushroom-router train or the "
                    "Airflow DAG) and it will be served within %.0fs",
                    settings.MODEL_NAME,
                    self.alias,
                    settings.redacted(settings.tracking_uri()),
                    self.poll_seconds,
                )
                self._waiting_logged = True
            return
        self._waiting_logged = False
        if self.served is not None and self.served.process.poll() is not None:
            _logger.error(
                "Model server for version %s exited with %s; restarting",
                self.served.version,
                self.served.process.returncode,
            )
            self._stop_served()  # its uvicorn child may still hold the port
        if self.served is None or self.served.version != version:
            self.switch_to(version)

    def run(self) -> None:
        """Poll until :meth:`stop` (or SIGTERM/SIGINT when run from the CLI)."""
        _logger.info("Following %s@%s every %.0fs", settings.MODEL_NAME, self.alias, self.poll_seconds)
        try:
            while not self.stopping.is_set():
                try:
                    self.step()
                except Exception as err:
                    _logger.error("Switch failed: %s; retrying in %.0fs", err, self.poll_seconds)
                self.stopping.wait(self.poll_seconds)
        finally:
            self._stop_served()

    def stop(self, *_: Any) -> None:
        """Ask :meth:`run` to return (signal-handler compatible)."""
        self.stopping.set()


def supervise(host: str, port: int, workers: int = 1, poll_seconds: float = DEFAULT_POLL_SECONDS) -> None:
    """Run a :class:`ChampionSupervisor` in the foreground until SIGTERM or SIGINT."""
    supervisor = ChampionSupervisor(host, port, workers, poll_seconds)
    signal.signal(signal.SIGTERM, supervisor.stop)
    signal.signal(signal.SIGINT, supervisor.stop)
    supervisor.run()
