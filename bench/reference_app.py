"""The yardstick: a hand-written FastAPI app like the one `mlflow models serve` is meant to replace.

Not part of the product. It is what the original project served: FastAPI, an ``async def``
handler on ``POST /predict`` taking one record of the Logistic Regression route's four features
(a pydantic model with the hyphenated names as aliases), ``pd.DataFrame([body])``, then
scikit-learn's ``predict`` and ``predict_proba`` of a fitted ``LogisticRegression`` on that frame,
answering ``{"prediction", "probability"}``; uvicorn, one worker. The model is fitted at start-up
on the real data's LR features (how well it scores does not matter here, only what a request costs).

Usage: ``python bench/reference_app.py --data mushroom_cleaned.csv --port 8000``
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from sklearn.linear_model import LogisticRegression

from router_model import features as F

#: The one record a request carries (the LR route's features, as the data set spells them).
EXAMPLE = {"stem-height": 3.81, "stem-width": 1545.0, "stem-color": 11, "season": F.SEASON_VALUES[3]}


class Mushroom(BaseModel):
    """One mushroom: the four features of the Logistic Regression route."""

    model_config = ConfigDict(populate_by_name=True)

    stem_height: float = Field(alias="stem-height")
    stem_width: float = Field(alias="stem-width")
    stem_color: int = Field(alias="stem-color")
    season: float


def build_app(model: LogisticRegression) -> FastAPI:
    """The app: one route, one record per request."""
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict:  # for the benchmark's readiness poll (benchlib.wait_ping)
        return {}

    @app.post("/predict")
    async def predict(body: Mushroom) -> dict:
        frame = pd.DataFrame([body.model_dump(by_alias=True)])
        label = int(model.predict(frame)[0])
        probability = float(model.predict_proba(frame)[0, label])
        return {"prediction": F.LABELS[label], "probability": probability}

    return app


def fit(data: str) -> LogisticRegression:
    """A LogisticRegression on the LR route's columns of the real data (named, as a frame)."""
    frame = pd.read_csv(data)
    return LogisticRegression(max_iter=1000).fit(frame[list(F.LR_FEATURES)], frame[F.TARGET])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="mushroom_cleaned.csv")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvicorn.run(build_app(fit(args.data)), host=args.host, port=args.port, workers=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
