"""Drift alarm on the real data: false alarms on unchanged rows, sensitivity to changed ones.

Usage: ``python bench/drift.py --data mushroom_cleaned.csv [--draws 500] [--figure docs/drift-report.png]``.
Trains the router on the original 80/20 split, takes the reference profile the way training logs
it, and measures :func:`router_model.drift.compare` on windows drawn from the held-out rows:
unchanged (false alarms over many draws), and with one feature scaled or one category's share
moved. Prints Markdown tables and writes the drift plot of one changed window.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from router_model import drift, settings
from router_model import features as F
from router_model.data import load_training_frame
from router_model.plots import drift_figure
from router_model.train import train


def window(rows, n, rng, router):
    w = rows.sample(n, random_state=int(rng.integers(2**31))).reset_index(drop=True)
    scored = router.predict(w[list(F.ALL_FEATURES)])
    w["route"] = scored["model"].astype(str)
    w["poisonous_probability"] = scored["poisonous_probability"]
    return w


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument(
        "--figure", default=str(Path(__file__).resolve().parents[1] / "docs" / "drift-report.png")
    )
    args = parser.parse_args()

    result = train(load_training_frame(args.data))
    test, router = result.test, result.router
    scores = {
        r: router.predict(test[list(F.ALL_FEATURES)], {"model": r})["poisonous_probability"] for r in F.ROUTES
    }
    reference = drift.reference_profile(test, scores)
    threshold = settings.drift_psi_threshold()
    rng = np.random.default_rng(42)

    print(f"PSI alarm level {threshold}; reference from {len(test)} held-out rows of {args.data}\n")
    print("| window rows | draws | false alarms | largest feature PSI (median, max) |")
    print("|---|---|---|---|")
    for n in (500, 1000, 5000):
        alarms, largest = 0, []
        for _ in range(args.draws):
            report = drift.compare(reference, window(test, n, rng, router), threshold, min_rows=n)
            alarms += report.drift_detected
            largest.append(max(c.psi for c in report.features))
        spread = f"{np.median(largest):.4f}, {max(largest):.4f}"
        print(f"| {n} | {args.draws} | {alarms} ({alarms / args.draws:.1%}) | {spread} |")

    print("\n| change (1,000-row window) | PSI of that feature | alarm |")
    print("|---|---|---|")
    changes = [(f"stem-width x {f}", "stem-width", f, None) for f in (1.1, 1.2, 1.3, 1.4, 1.5, 2.0)]
    changes += [
        (f"{int(s * 100)}% of rows moved to cap-shape 6", "cap-shape", None, s)
        for s in (0.1, 0.2, 0.3, 0.4, 0.5)
    ]
    shown = None
    for label, column, factor, share in changes:
        w = window(test, 1000, rng, router)
        if factor is not None:
            w[column] *= factor
        else:
            w.loc[w.sample(frac=share, random_state=0).index, column] = 6.0
        report = drift.compare(reference, w, threshold)
        value = next(c.psi for c in report.features if c.name == column)
        print(f"| {label} | {value:.3f} | {'yes' if column in report.drifted else 'no'} |")
        if factor == 1.5:
            shown = report
    figure = drift_figure(shown.features + shown.probability, threshold)
    figure.savefig(args.figure, dpi=90)
    print(f"wrote {args.figure} (stem-width x 1.5)", file=sys.stderr)


if __name__ == "__main__":
    main()
