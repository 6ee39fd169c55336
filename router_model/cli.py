"""``mushroom-router`` command line: train, serve, supervise, predict, monitor, promote, status.

This is the only module that prints; everything it does is a call into the pipeline, serving and
scoring modules, the same calls the Airflow DAG makes.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from router_model import features as F
from router_model import settings
from router_model.errors import RouterError


def _threshold(text: str) -> float | str:
    """``--threshold``: a number, or ``safe`` (each route's recorded safe threshold)."""
    if text.strip().lower() == F.SAFE:
        return F.SAFE
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1] or 'safe', got {text!r}") from None


def _top_terms(text: str) -> int:
    """``--explain K``: how many of the largest terms to list (the rest are summed as "other")."""
    try:
        top = int(text)
    except ValueError:
        top = 0
    if top < 1:
        raise argparse.ArgumentTypeError(f"expected an integer K >= 1 (the K largest terms), got {text!r}")
    return top


def _key_value(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def _timestamp(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO time like 2026-12-01T00:00:00+00:00, got {text!r}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="mushroom-router",
        description="Train, register, serve and use the mushroom router model.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train, register, and gate the champion alias")
    source = train.add_mutually_exclusive_group()
    source.add_argument(
        "--data", metavar="PATH", help="training CSV (default: MUSHROOM_DATA, Kaggle, synthetic)"
    )
    source.add_argument(
        f"--{settings.SOURCE_SYNTHETIC}", action="store_true", help="train on the built-in synthetic sample"
    )
    source.add_argument(
        f"--{settings.SOURCE_KAGGLE}",
        action="store_true",
        help="download the Kaggle data set (needs credentials)",
    )
    train.add_argument(
        "--param",
        action="append",
        type=_key_value,
        default=[],
        metavar="NAME=VALUE",
        help="training hyperparameter override, e.g. --param lr_c=0.5 (repeatable)",
    )
    low, high = settings.MIN_IMPROVEMENT_RANGE
    train.add_argument(
        "--min-improvement",
        type=float,
        default=low,
        help=f"ROC-AUC margin per route the new version needs over the champion ({low} to {high}, default {low})",
    )
    train.add_argument(
        "--allow-synthetic",
        action="store_true",
        help="let a version trained on synthetic data replace a champion trained on real data "
        "(it must still pass the gate)",
    )
    train.add_argument(f"--{settings.FORCE_RETRAIN}", action="store_true", help=settings.FORCE_RETRAIN_HELP)

    serve = sub.add_parser(
        "serve", help="serve models:/mushroom-router@champion with MLflow's scoring server"
    )
    serve.add_argument("--host", default=settings.DEFAULT_SERVE_HOST)
    serve.add_argument("--port", type=int, default=settings.DEFAULT_SERVE_PORT)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--model-uri", help="default: models:/mushroom-router@champion")

    supervise = sub.add_parser(
        "supervise", help="serve whatever version holds @champion, following the alias as it moves"
    )
    supervise.add_argument("--host", default=settings.DEFAULT_SERVE_HOST)
    supervise.add_argument("--port", type=int, default=settings.DEFAULT_SERVE_PORT)
    supervise.add_argument("--workers", type=int, default=1)
    supervise.add_argument(
        "--poll-seconds", type=float, default=settings.DEFAULT_POLL_SECONDS, help="registry poll interval"
    )

    predict = sub.add_parser("predict", help="score a CSV, Parquet or JSON file of any size, in chunks")
    predict.add_argument("input", help="CSV, Parquet or JSON (records or dataframe_split)")
    predict.add_argument("output", nargs="?", help=".csv, .parquet or .json output (default: CSV on stdout)")
    predict.add_argument(
        "--on-error",
        choices=F.ON_ERROR_MODES,
        default=F.ON_ERROR_FAIL,
        help=f"{F.ON_ERROR_FAIL} (default): stop at the first bad row, write nothing; {F.ON_ERROR_MARK}: score "
        "the rest and explain each bad row in an 'error' column",
    )
    predict.add_argument(
        "--chunk-rows", type=int, default=settings.DEFAULT_CHUNK_ROWS, help="rows in memory at a time"
    )
    predict.add_argument("--quiet", action="store_true", help="no progress bar (it shows only on a terminal)")
    predict.add_argument("--model-uri", help="default: models:/mushroom-router@champion")
    predict.add_argument("--model", choices=(F.AUTO, *F.ROUTES), default=F.AUTO)
    predict.add_argument(
        "--threshold",
        type=_threshold,
        default=F.DEFAULT_THRESHOLD,
        help="poisonous when P(poisonous) >= this; 'safe': each route's recorded safe threshold",
    )
    predict.add_argument(
        "--explain",
        nargs="?",
        const=True,
        type=_top_terms,
        metavar="K",
        help="add an 'explanation' column (JSON text in CSV and Parquet): every term of each row's "
        "log-odds, or with K the K largest and one 'other' term",
    )

    monitor = sub.add_parser(
        "monitor", help="compare the rows the model server logged with the champion's reference (drift)"
    )
    monitor.add_argument(
        "--since",
        type=_timestamp,
        metavar="ISO",
        help="window start, e.g. 2026-12-01T00:00:00+00:00 (default: where the previous run ended)",
    )

    promote = sub.add_parser("promote", help="move the champion alias to a version by hand")
    promote.add_argument("version", type=int)

    sub.add_parser("status", help="show the registered versions and aliases")
    return parser


def _train(args: argparse.Namespace) -> int:
    from router_model import pipeline

    source = settings.SOURCE_SYNTHETIC if args.synthetic else settings.SOURCE_KAGGLE if args.kaggle else None
    outcome = pipeline.retrain(
        path=args.data,
        source=source,
        train_params=dict(args.param),
        min_improvement=args.min_improvement,
        allow_synthetic=args.allow_synthetic,
        force=getattr(args, settings.FORCE_RETRAIN),
    )
    if outcome["alias"] is None:
        reason = outcome["check"]["reason"]
        print(reason[:1].upper() + reason[1:])
        return 0
    metrics = outcome["evaluation"]["candidate"]
    print(f"Trained on {outcome['data']['source']} data: {outcome['data']['path']}")
    if outcome["data"]["source"] == settings.SOURCE_SYNTHETIC:
        print("WARNING: synthetic data; this model says nothing about real mushrooms.")
    if metrics is None:
        print("  no held-out metrics: the held-out rows lack one of the classes")
    for route in F.ROUTES if metrics else ():
        print(
            f"  {route:<20} ROC-AUC {metrics[f'{route}_roc_auc']:.4f}  accuracy {metrics[f'{route}_accuracy']:.4f}"
            f"  log-loss {metrics[f'{route}_log_loss']:.4f}  Brier {metrics[f'{route}_brier']:.4f}"
            f"  ECE {metrics[f'{route}_ece']:.4f}"
        )
    print(f"Registered {outcome['model_uri']} (run {outcome['run_id']})")
    print(f"Alias: {outcome['alias']} - {outcome['decision']['reason']}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from router_model import metrics, serving
    from router_model.supervisor import trusted_copy

    uri = args.model_uri or settings.model_uri()
    serving.check_port_free(args.host, args.port)
    settings.bound_mlflow_http()
    # Only code this installation trusts is loaded: the version is downloaded and checked first,
    # and the server loads exactly the checked bytes (router_model/trust.py).
    local = trusted_copy(uri)
    serving.prepare_process(local.path)
    print(
        f"Serving {uri} (version {local.version}, {local.path}) on http://{args.host}:{args.port}"
        " (Ctrl-C stops). When /ready answers, try:"
    )
    print(serving.curl_example(args.host, args.port), flush=True)
    # MLflow's scoring server runs in this process (no `mlflow models serve` in between): what
    # this process imported for the check is not imported again. Told its version, the server
    # names it in X-Model-Version and /metrics, as a supervised one does.
    return serving.run(
        local.path, args.host, args.port, args.workers, extra_env=metrics.served_env(local.version)
    )


def _supervise(args: argparse.Namespace) -> int:
    from router_model import serving

    serving.check_port_free(args.host, args.port)
    # The first server imports MLflow's scoring server and the model's libraries while this
    # process imports the registry client and finds the champion.
    serving.prewarm(args.host, args.port, args.workers)
    from router_model.supervisor import supervise

    supervise(args.host, args.port, args.workers, args.poll_seconds)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from router_model import scoring

    params = {F.PARAM_MODEL: args.model, F.PARAM_THRESHOLD: args.threshold}
    if args.explain is not None:
        params[F.PARAM_EXPLAIN] = args.explain
    options = {
        "chunk_rows": args.chunk_rows,
        "on_error": args.on_error,
        "quiet": True if args.quiet else None,
    }
    if args.output is None:
        scored = scoring.score_table(args.input, args.model_uri, params, **options)
        scoring.explanations_as_json(scored).to_csv(sys.stdout, index=False)
        return 0
    rows = scoring.score_file(args.input, args.output, args.model_uri, params, **options)
    print(f"Wrote {rows} rows to {args.output}", file=sys.stderr)
    return 0


def _monitor(args: argparse.Namespace) -> int:
    from router_model import monitoring

    outcome = monitoring.run_monitor(since=args.since)
    window = f"{outcome['window_start'] or 'the start'} to {outcome['window_end']}"
    if outcome["status"] == monitoring.STATUS_TOO_FEW:
        print(f"Too few logged rows to judge ({outcome['rows']} from {window}); nothing logged.")
        return 0
    verdict = f"DRIFT in {', '.join(outcome['drifted'])}" if outcome["drift_detected"] else "no drift"
    print(f"{verdict}: {outcome['rows']} rows from {window}, champion version {outcome['champion_version']}")
    for name, value in sorted(outcome["psi"].items(), key=lambda item: -item[1]):
        print(f"  PSI {value:.4f}  {name}")
    print(f"Logged run {outcome['run_id']} in {settings.MONITORING_EXPERIMENT}")
    return 0


def _promote(args: argparse.Namespace) -> int:
    from router_model import registry

    registry.promote(args.version)
    print(f"{settings.MODEL_NAME}@{settings.CHAMPION} -> version {args.version}")
    return 0


def _safe_thresholds(tags: dict[str, str]) -> str:
    """``naive_bayes 0.0713 (false alarms 50.7%), ...`` from a version's tags ('' if it has none)."""
    from router_model.registry import route_tag
    from router_model.router import CONFIG_SAFE_FALSE_ALARM, CONFIG_SAFE_THRESHOLD

    parts = []
    for route in F.ROUTES:
        threshold = tags.get(route_tag(CONFIG_SAFE_THRESHOLD, route))
        alarms = tags.get(route_tag(CONFIG_SAFE_FALSE_ALARM, route))
        if threshold is not None:
            cost = f" (false alarms {float(alarms):.1%})" if alarms is not None else ""
            parts.append(f"{route} {float(threshold):.4g}{cost}")
    return ", ".join(parts)


def _status(args: argparse.Namespace) -> int:
    from router_model import registry, supervisor

    settings.bound_mlflow_http()  # a dead tracking server fails in seconds, not minutes
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # its retry warning; the error says it
    where = settings.redacted(settings.tracking_uri())
    model, versions = registry.read_registry()
    state = supervisor.read_state()
    if state is not None:
        print(
            f"Model server ({supervisor.default_cache_dir()}): {state.get('state')}, serving version "
            f"{state.get('served_version')} - {state.get('reason')} (at {state.get('updated')})"
        )
    if model is None:
        print(f"No {settings.MODEL_NAME} registered in {where}")
        return 1
    print(f"{settings.MODEL_NAME} in {where}")
    for alias, version in sorted(model.aliases.items()):
        print(f"  @{alias} -> version {version}")
    for v in sorted(versions, key=lambda v: int(v.version)):
        reason = v.tags.get("gate_reason", "-")
        print(
            f"  version {v.version}: data={v.tags.get('data_source')} gate={v.tags.get('gate', '-')} ({reason})"
        )
        safe = _safe_thresholds(v.tags)
        if safe:
            print(f"    safe threshold (at most 1% poisonous among 'edible'): {safe}")
    return 0


_COMMANDS = {
    "train": _train,
    "serve": _serve,
    "supervise": _supervise,
    "predict": _predict,
    "monitor": _monitor,
    "promote": _promote,
    "status": _status,
}


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with the package's error policy (:mod:`router_model.errors`).

    A named error prints one line to stderr and exits 2, never a traceback; anything else is a
    bug, and keeps its traceback after a one-line hint.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("alembic", "mlflow.store.db.utils", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    handler: Any = _COMMANDS[args.command]
    try:
        return handler(args)
    except Exception as err:
        if not isinstance(err, RouterError):
            print(
                f"mushroom-router {args.command}: unexpected {type(err).__name__}, probably a bug; "
                "the traceback follows (please report it with the command you ran)",
                file=sys.stderr,
            )
            raise
        print(f"mushroom-router {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
