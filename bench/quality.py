"""Quality on the real data: each route next to the original project's raw baselines.

Usage: ``python bench/quality.py [--data PATH] [--cv 5] [--check]``. Prints Markdown tables: the
held-out metrics on the original 80/20 stratified split (seed 42) for the router's two sub-models
and for raw ``GaussianNB()`` / ``LogisticRegression()`` on the same features, then a stratified
k-fold cross-validation mean and spread of ROC-AUC. ``--check`` exits 1 when a target is missed
(LR route ROC-AUC >= 0.89, NB route >= 0.78).
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
from router_model.train import TrainConfig, binary_metrics, fit_submodels

TARGETS = {F.LOGISTIC_REGRESSION: 0.89, F.NAIVE_BAYES: 0.78}
BASELINES = {F.NAIVE_BAYES: GaussianNB, F.LOGISTIC_REGRESSION: LogisticRegression}


def evaluate_split(train, test, config):
    """Metrics of both sub-models and both raw baselines on one split."""
    y_test = test[F.TARGET].to_numpy()
    models = fit_submodels(train, config)
    rows = []
    for route in F.ROUTES:
        cols = list(F.ROUTE_FEATURES[route])
        ours = models[route].predict_proba(test[cols].to_numpy(float))[:, 1]
        raw = BASELINES[route]().fit(train[cols], train[F.TARGET]).predict_proba(test[cols])[:, 1]
        rows.append((route, "router sub-model", binary_metrics(y_test, ours)))
        rows.append((route, f"raw {BASELINES[route].__name__}()", binary_metrics(y_test, raw)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default=settings.data_path(), help="mushroom_cleaned.csv (default MUSHROOM_DATA)"
    )
    parser.add_argument("--cv", type=int, default=5, help="folds for cross-validation (0 skips it)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a quality target is missed")
    args = parser.parse_args(argv)
    if not args.data:
        print("no data: pass --data or set MUSHROOM_DATA to mushroom_cleaned.csv", file=sys.stderr)
        return 2
    frame = data.load_training_frame(args.data)
    config = TrainConfig()
    train, test = data.split(frame)
    started = time.perf_counter()
    rows = evaluate_split(train, test, config)
    print(
        f"Held-out split: {len(train)} train / {len(test)} test rows (stratified 80/20, seed 42); "
        f"{time.perf_counter() - started:.1f}s\n"
    )
    print("| route | model | ROC-AUC | accuracy | log-loss | Brier |")
    print("|---|---|---|---|---|---|")
    for route, model, m in rows:
        print(
            f"| {route} | {model} | {m['roc_auc']:.4f} | {m['accuracy']:.4f} | {m['log_loss']:.4f} | {m['brier']:.4f} |"
        )
    ok = True
    for route, model, m in rows:
        if model == "router sub-model":
            met = m["roc_auc"] >= TARGETS[route]
            ok &= met
            print(
                f"\ntarget {route} ROC-AUC >= {TARGETS[route]}: {m['roc_auc']:.4f} {'met' if met else 'MISSED'}",
                end="",
            )
    print("\n")
    if args.cv:
        folds = StratifiedKFold(args.cv, shuffle=True, random_state=settings.SPLIT_SEED)
        scores: dict[tuple[str, str], list[float]] = {}
        for train_idx, test_idx in folds.split(frame, frame[F.TARGET]):
            for route, model, m in evaluate_split(frame.iloc[train_idx], frame.iloc[test_idx], config):
                scores.setdefault((route, model), []).append(m["roc_auc"])
        print(f"{args.cv}-fold stratified cross-validation, ROC-AUC:\n")
        print("| route | model | mean | std | min | max |")
        print("|---|---|---|---|---|---|")
        for (route, model), values in scores.items():
            v = np.asarray(values)
            print(f"| {route} | {model} | {v.mean():.4f} | {v.std():.4f} | {v.min():.4f} | {v.max():.4f} |")
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
