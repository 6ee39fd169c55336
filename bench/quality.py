"""Quality on the real data: each route before and after calibration, next to the raw baselines.

Usage: ``python bench/quality.py [--data PATH] [--cv 5] [--plot PNG] [--check]``. Prints Markdown
tables: the held-out metrics on the original 80/20 stratified split (seed 42) for the router's two
sub-models (calibrated, as shipped, and their uncalibrated pipelines) and for raw ``GaussianNB()``
/ ``LogisticRegression()`` on the same features; the calibration of each (ECE and the poisonous
share among rows below P(poisonous) = 0.02, 0.05, 0.1); the safe thresholds training would record
and what they give on the held-out rows; then the stratified k-fold cross-validation mean, spread
and worst fold. ``--plot`` writes the held-out reliability diagram. ``--check`` exits 1 when a
target is missed (LR route ROC-AUC >= 0.89, NB route >= 0.78; per route ECE <= 0.02 and, for each
t, the poisonous share below t at most t).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.naive_bayes import GaussianNB

from router_model import data, settings
from router_model import features as F
from router_model.calibration import TAIL_THRESHOLDS, poisonous_share_below, safe_threshold, tail_metric_name
from router_model.train import TrainConfig, binary_metrics, fit_calibrated

TARGETS = {F.LOGISTIC_REGRESSION: 0.89, F.NAIVE_BAYES: 0.78}
MAX_ECE = 0.02
MAX_AUC_CHANGE = 0.002
BASELINES = {F.NAIVE_BAYES: GaussianNB, F.LOGISTIC_REGRESSION: LogisticRegression}
OURS = "router sub-model (calibrated)"
BEFORE = "uncalibrated pipeline"
TAILS = [tail_metric_name(t) for t in TAIL_THRESHOLDS]
COLUMNS = ["roc_auc", "accuracy", "log_loss", "brier", "ece", *TAILS]
HEADERS = ["ROC-AUC", "accuracy", "log-loss", "Brier", "ECE", *(f"share < {t:g}" for t in TAIL_THRESHOLDS)]


def evaluate_split(train, test, config):
    """Metrics of both sub-models (after and before calibration) and both raw baselines on one split.

    The calibration maps and safe thresholds come from cross-fitted (out-of-fold) scores of
    ``train`` only, as in :func:`router_model.train.train`.

    Returns:
        ``(rows, scores, safe)``: ``(route, model, metrics)`` rows, the held-out P(poisonous) of
        each route before and after, and each route's safe threshold with its held-out outcome.
    """
    y_test = test[F.TARGET].to_numpy()
    models, _, oof_scores = fit_calibrated(train, config)
    y_train = train[F.TARGET].to_numpy()
    rows, scores, safe = [], {}, {}
    for route in F.ROUTES:
        cols = list(F.ROUTE_FEATURES[route])
        X = test[cols].to_numpy(float)
        after = models[route].predict_proba(X)[:, 1]
        before = models[route].estimator.predict_proba(X)[:, 1]
        raw = BASELINES[route]().fit(train[cols], train[F.TARGET]).predict_proba(test[cols])[:, 1]
        rows.append((route, OURS, binary_metrics(y_test, after)))
        rows.append((route, BEFORE, binary_metrics(y_test, before)))
        rows.append((route, f"raw {BASELINES[route].__name__}()", binary_metrics(y_test, raw)))
        scores[f"{route} before"], scores[f"{route} after"] = before, after
        found = safe_threshold(y_train, oof_scores[route])
        edible = y_test == F.LABEL_EDIBLE
        safe[route] = (
            found,
            poisonous_share_below(y_test, after, found.threshold),
            float(np.mean(after[edible] >= found.threshold)),
        )
    return rows, scores, safe


def fmt(value: float) -> str:
    return f"{value:.4f}"


def targets_met(route: str, m: dict[str, float], before: dict[str, float]) -> list[tuple[str, bool]]:
    """Each quality target of a calibrated route (``m``; ``before``: its uncalibrated pipeline)."""
    found = [(f"ROC-AUC >= {TARGETS[route]}: {fmt(m['roc_auc'])}", m["roc_auc"] >= TARGETS[route])]
    auc_change = m["roc_auc"] - before["roc_auc"]
    found.append(
        (
            f"ROC-AUC within {MAX_AUC_CHANGE} of uncalibrated: {auc_change:+.4f}",
            abs(auc_change) <= MAX_AUC_CHANGE,
        )
    )
    loss_change = m["log_loss"] - before["log_loss"]
    found.append((f"log-loss no worse than uncalibrated: {loss_change:+.5f}", loss_change <= 1e-12))
    found.append((f"ECE <= {MAX_ECE}: {fmt(m['ece'])}", m["ece"] <= MAX_ECE))
    for t, name in zip(TAIL_THRESHOLDS, TAILS, strict=True):
        found.append((f"poisonous share below {t:g} <= {t:g}: {fmt(m[name])}", m[name] <= t))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default=settings.data_path(), help="mushroom_cleaned.csv (default MUSHROOM_DATA)"
    )
    parser.add_argument("--cv", type=int, default=5, help="folds for cross-validation (0 skips it)")
    parser.add_argument("--plot", default=None, help="write the held-out reliability diagram here (.png)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a quality target is missed")
    args = parser.parse_args(argv)
    if not args.data:
        print("no data: pass --data or set MUSHROOM_DATA to mushroom_cleaned.csv", file=sys.stderr)
        return 2
    frame = data.load_training_frame(args.data)
    config = TrainConfig()
    train, test = data.split(frame)
    started = time.perf_counter()
    rows, scores, safe = evaluate_split(train, test, config)
    print(
        f"Held-out split: {len(train)} train / {len(test)} test rows (stratified 80/20, seed 42); "
        f"{time.perf_counter() - started:.1f}s. Calibration maps and safe thresholds are fitted on "
        "cross-fitted (out-of-fold) scores of the training rows only. ECE: 10 equal-width bins; share < t: poisonous "
        "share among rows given P(poisonous) < t.\n"
    )
    print("| route | model | " + " | ".join(HEADERS) + " |")
    print("|---|---|" + "---|" * len(HEADERS))
    for route, model, m in rows:
        print(f"| {route} | {model} | " + " | ".join(fmt(m[c]) for c in COLUMNS) + " |")
    ok = True
    print()
    by_model = {(route, model): m for route, model, m in rows}
    for route, model, m in rows:
        if model == OURS:
            for text, met in targets_met(route, m, by_model[route, BEFORE]):
                ok &= met
                print(f"target {route} {text} {'met' if met else 'MISSED'}  ")
    print(
        "\nSafe thresholds (the largest threshold keeping poisonous rows at or below 1% of the "
        "'edible' calls on the out-of-fold training scores, as training records it) and what they give on the "
        "held-out rows:\n"
    )
    print(
        "| route | safe_threshold_1pct | out-of-fold false-alarm rate | held-out poisonous share "
        "among 'edible' | held-out false-alarm rate |"
    )
    print("|---|---|---|---|---|")
    for route, (found, share, alarms) in safe.items():
        print(
            f"| {route} | {found.threshold:.4f} | {found.false_alarm_rate:.3f} | {share:.4f} | {alarms:.3f} |"
        )
    if args.plot:
        import matplotlib.pyplot as plt

        from router_model.plots import reliability_figure

        figure = reliability_figure(test[F.TARGET].to_numpy(), scores, title="Held-out (seed 42)")
        figure.savefig(args.plot, dpi=110)
        plt.close(figure)
        print(f"\n![Held-out reliability before and after calibration]({args.plot.rsplit('/', 1)[-1]})")
    print()
    if args.cv:
        folds = StratifiedKFold(args.cv, shuffle=True, random_state=settings.SPLIT_SEED)
        collected: dict[tuple[str, str], list[dict[str, float]]] = {}
        safe_folds: dict[str, list[tuple[float, float, float]]] = {}
        for train_idx, test_idx in folds.split(frame, frame[F.TARGET]):
            fold_rows, _, fold_safe = evaluate_split(frame.iloc[train_idx], frame.iloc[test_idx], config)
            for route, model, m in fold_rows:
                collected.setdefault((route, model), []).append(m)
            for route, (found, share, alarms) in fold_safe.items():
                safe_folds.setdefault(route, []).append((found.threshold, share, alarms))
        print(
            f"{args.cv}-fold stratified cross-validation: mean ± std (worst fold: lowest ROC-AUC, "
            "highest of the others):\n"
        )
        shown = ["roc_auc", "log_loss", "ece", *TAILS]
        print("| route | model | " + " | ".join(HEADERS[COLUMNS.index(c)] for c in shown) + " |")
        print("|---|---|" + "---|" * len(shown))
        for (route, model), folds_m in collected.items():
            cells = []
            for c in shown:
                v = np.asarray([m[c] for m in folds_m])
                worst = v.min() if c == "roc_auc" else v.max()
                cells.append(f"{v.mean():.4f} ± {v.std():.4f} ({worst:.4f})")
            print(f"| {route} | {model} | " + " | ".join(cells) + " |")
        print()
        print(
            "\nSafe threshold per fold (fitted on each fold's out-of-fold training scores), and on the fold's "
            "held-out rows: mean ± std [min, max]:\n"
        )
        print("| route | safe_threshold_1pct | poisonous share among 'edible' | false-alarm rate |")
        print("|---|---|---|---|")
        for route, values in safe_folds.items():
            cells = []
            for column in np.asarray(values).T:
                cells.append(
                    f"{column.mean():.4f} ± {column.std():.4f} [{column.min():.4f}, {column.max():.4f}]"
                )
            print(f"| {route} | " + " | ".join(cells) + " |")
        print()
        for (route, model), folds_m in collected.items():
            if model == OURS:
                befores = collected[route, BEFORE]
                missed = [
                    f"fold {i + 1}: {text}"
                    for i, (m, b) in enumerate(zip(folds_m, befores, strict=True))
                    for text, met in targets_met(route, m, b)
                    if not met
                ]
                ok &= not missed
                verdict = "met in every fold" if not missed else "MISSED: " + "; ".join(missed)
                print(f"targets {route}: {verdict}  ")
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
