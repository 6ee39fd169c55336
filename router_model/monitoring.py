"""The drift monitor: compare what the model server logged with the champion's reference.

:func:`run_monitor` (``mushroom-router monitor``, and the hourly Airflow DAG
``mushroom_router_monitor``) reads the rows logged since its previous run
(:mod:`router_model.inference_log`), compares them with the champion's reference profile
(:mod:`router_model.drift`) and logs one run in the experiment ``mushroom-router-monitoring``:
``psi_<feature>`` and ``pvalue_<feature>`` metrics, the route mix, the tag ``drift_detected``
(``true``/``false``), an HTML report and a PNG of every distribution. When the window has too few
rows to judge anything, nothing is logged and the next run reads the same window again, grown.

Windows: a run covers the rows with ``since < time <= until``, where ``until`` lags the clock by
:data:`LOG_LAG_SECONDS` so rows still on their way to the log are not skipped, and ``since`` is the
previous run's ``until`` (tag ``window_end``), unless given.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from router_model import drift, inference_log, registry, settings
from router_model.errors import RouterError

_logger = logging.getLogger(__name__)

#: How far the window's end stays behind the clock: a logged batch may wait for its flush.
LOG_LAG_SECONDS = 2 * inference_log.FLUSH_SECONDS
TAG_WINDOW_START = "window_start"
TAG_WINDOW_END = "window_end"
TAG_DRIFT = "drift_detected"
TAG_CHAMPION = "champion_version"
STATUS_DRIFT, STATUS_STABLE, STATUS_TOO_FEW = "drift", "stable", "too_few_rows"


class MonitorError(RouterError):
    """The monitor cannot compare: no champion, or a champion without a drift reference."""


def _experiment_id() -> str:
    c = registry.client()
    found = c.get_experiment_by_name(settings.MONITORING_EXPERIMENT)
    if found is not None:
        return found.experiment_id
    try:
        return c.create_experiment(
            settings.MONITORING_EXPERIMENT, artifact_location=settings.artifact_location()
        )
    except Exception:  # created concurrently by another process
        return c.get_experiment_by_name(settings.MONITORING_EXPERIMENT).experiment_id


def previous_window_end() -> datetime | None:
    """Where the last logged monitoring run's window ended, if there was one."""
    c = registry.client()
    found = c.get_experiment_by_name(settings.MONITORING_EXPERIMENT)
    if found is None:
        return None
    runs = c.search_runs([found.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    if not runs or TAG_WINDOW_END not in runs[0].data.tags:
        return None
    return datetime.fromisoformat(runs[0].data.tags[TAG_WINDOW_END])


def _report_html(report: drift.DriftReport, meta: dict[str, Any], png: bytes) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(c.name)}</td><td>{c.rows}</td>"
        f"<td>{f'{c.psi:.4f}' if c.judged else 'not judged'}</td>"
        f"<td>{f'{c.p_value:.3g}' if c.judged else ''}</td>"
        f"<td>{'DRIFT' if c.name in report.drifted else ''}</td></tr>"
        for c in report.features + report.probability
    )
    mix = ", ".join(f"{route} {share:.1%}" for route, share in report.route_share.items())
    verdict = f"drift in {', '.join(report.drifted)}" if report.drift_detected else "no drift"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>mushroom-router drift</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.2em .8em;text-align:right}}
td:first-child{{text-align:left}}</style></head><body>
<h1>mushroom-router drift report: {html.escape(verdict)}</h1>
<p>Champion version {meta["champion_version"]}; window {meta["window_start"]} to {meta["window_end"]};
{report.rows} logged rows; route mix: {mix}. PSI alarm above {report.psi_threshold}; a comparison needs
{report.min_rows} values to be judged.</p>
<table><tr><th>feature</th><th>values</th><th>PSI</th><th>chi-square p</th><th></th></tr>{rows}</table>
<img alt="reference against served distributions" src="data:image/png;base64,{base64.b64encode(png).decode()}">
</body></html>"""


def run_monitor(since: datetime | None = None, until: datetime | None = None) -> dict[str, Any]:
    """Compare the logged rows of one window with the champion's reference; log a run if judged.

    Args:
        since: Window start (exclusive); default the previous run's end, else everything.
        until: Window end (inclusive); default now minus :data:`LOG_LAG_SECONDS`.

    Returns:
        ``{"status", "rows", "window_start", "window_end", "champion_version", "drift_detected",
        "drifted", "psi", "run_id"}`` (``run_id`` ``None`` and nothing logged when too few rows).

    Raises:
        MonitorError: If there is no champion or it has no drift reference.
    """
    import matplotlib.pyplot as plt
    import mlflow

    from router_model.plots import drift_figure

    champion = registry.alias_version(settings.CHAMPION)
    if champion is None:
        raise MonitorError(f"no {settings.MODEL_NAME}@{settings.CHAMPION} to compare with; train one first")
    reference = registry.drift_reference(champion.version)
    if reference is None:
        raise MonitorError(
            f"champion version {champion.version} has no drift reference ({registry.DRIFT_REFERENCE_ARTIFACT}); "
            "it was trained before references were logged: retrain to monitor it"
        )
    since = since if since is not None else previous_window_end()
    until = until or datetime.now(UTC) - timedelta(seconds=LOG_LAG_SECONDS)
    rows = inference_log.read_rows(since)
    rows = rows[rows["time"] <= until] if len(rows) else rows
    report = drift.compare(reference, rows, settings.drift_psi_threshold(), settings.drift_min_rows())
    outcome: dict[str, Any] = {
        "rows": report.rows,
        "window_start": since.isoformat() if since else None,
        "window_end": until.isoformat(),
        "champion_version": int(champion.version),
        "drift_detected": report.drift_detected,
        "drifted": report.drifted,
        "psi": {c.name: c.psi for c in report.features + report.probability if c.judged},
        "run_id": None,
    }
    if not report.judged:
        outcome["status"] = STATUS_TOO_FEW
        _logger.info(
            "Monitor: %d logged rows since %s; every feature needs %d values: nothing judged, nothing logged",
            report.rows,
            outcome["window_start"] or "the start",
            report.min_rows,
        )
        return outcome
    figure = drift_figure(report.features + report.probability, report.psi_threshold)
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=110)
    tags = {
        TAG_DRIFT: str(report.drift_detected).lower(),
        TAG_WINDOW_START: outcome["window_start"] or "",
        TAG_WINDOW_END: outcome["window_end"],
        TAG_CHAMPION: str(champion.version),
    }
    with mlflow.start_run(experiment_id=_experiment_id(), tags=tags) as run:
        mlflow.log_params({"psi_threshold": report.psi_threshold, "min_rows": report.min_rows})
        mlflow.log_metric("rows", report.rows)
        for comparison in report.features + report.probability:
            if comparison.judged:
                mlflow.log_metric(f"psi_{comparison.name}", comparison.psi)
                mlflow.log_metric(f"pvalue_{comparison.name}", comparison.p_value)
        for route, share in report.route_share.items():
            mlflow.log_metric(f"route_share_{route}", share)
        mlflow.log_figure(figure, "drift/distributions.png")
        mlflow.log_text(_report_html(report, outcome, png.getvalue()), "drift/report.html")
        mlflow.log_dict(outcome, "drift/summary.json")
    plt.close(figure)
    outcome["run_id"] = run.info.run_id
    outcome["status"] = STATUS_DRIFT if report.drift_detected else STATUS_STABLE
    _logger.info(
        "Monitor: %s over %d rows (%s)", outcome["status"], report.rows, ", ".join(report.drifted) or "-"
    )
    return outcome
