"""Scoring on Spark: the registered router through ``mlflow.pyfunc.spark_udf`` on a local session.

A Parquet file of 1,000,000 synthetic rows (some carrying only the cap-and-gill features, some only
the stem-and-season ones) is scored by Spark, written back to Parquet, counted, and a sample of
the written rows is checked against ``mlflow.pyfunc.load_model(...).predict`` on the same
features. Needs pyspark and Java; skips without them unless ``MUSHROOM_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support import skip_or_fail

from router_model import features as F

pytestmark = [
    pytest.mark.spark,
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
    pytest.mark.filterwarnings("ignore:.*env_manager.*:UserWarning"),
]

N_ROWS = 1_000_000
SAMPLE_ROWS = 2_000
#: Every 10th row carries only the NB features, the next one only the LR features.
NB_ONLY, LR_ONLY = 0, 1


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A local two-core Spark session whose Python workers run this interpreter."""
    if importlib.util.find_spec("pyspark") is None:
        skip_or_fail("pyspark is not installed (pip install 'mushroom-router[spark]')")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        skip_or_fail("Java is not installed (Spark needs Java 17+)")
    from pyspark.sql import SparkSession

    with pytest.MonkeyPatch.context() as mp:
        # Without it the workers run ``python3`` from PATH, which may lack this package.
        mp.setenv("PYSPARK_PYTHON", sys.executable)
        mp.setenv("SPARK_LOCAL_IP", "127.0.0.1")
        session = (
            SparkSession.builder.master("local[2]")
            .appName("mushroom-router-test")
            .config("spark.driver.memory", "1g")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.shuffle.partitions", "2")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.local.dir", str(tmp_path_factory.mktemp("spark-local")))
            .getOrCreate()
        )
        session.sparkContext.setLogLevel("ERROR")
        try:
            yield session
        finally:
            session.stop()
            # py4j logs from __del__ at interpreter exit, after pytest has closed its streams.
            logging.getLogger("py4j").setLevel(logging.CRITICAL)


@pytest.fixture(scope="module")
def parquet_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,000,000 rows of features only; NB-only and LR-only rows are null in the other set."""
    from router_model.synthetic import make_synthetic

    frame = make_synthetic(N_ROWS, seed=7).drop(columns=F.TARGET)
    kind = np.arange(N_ROWS) % 10
    for name in F.ALL_FEATURES:
        if pd.api.types.is_integer_dtype(frame[name]):
            frame[name] = frame[name].astype("Int64")
    frame.loc[kind == NB_ONLY, list(F.LR_FEATURES)] = pd.NA
    frame.loc[kind == LR_ONLY, list(F.NB_FEATURES)] = pd.NA
    path = tmp_path_factory.mktemp("spark-data") / "features.parquet"
    # Row groups of 100k rows so that both cores get a share of the single file.
    frame.to_parquet(path, index=False, row_group_size=100_000)
    return path


def _check_against_pyfunc(scored: pd.DataFrame, model_uri: str, params: dict | None = None) -> None:
    """Spark's predictions on ``scored`` equal the pyfunc's on the same feature columns."""
    import mlflow.pyfunc

    features = scored[[c for c in scored.columns if c not in F.OUTPUT_COLUMNS]]
    expected = mlflow.pyfunc.load_model(model_uri).predict(features, params=params)
    for column in ("prediction", "model"):
        assert scored[column].astype(str).tolist() == expected[column].astype(str).tolist(), column
    for column in ("probability", "poisonous_probability"):
        np.testing.assert_allclose(
            scored[column].to_numpy(float), expected[column].to_numpy(float), rtol=1e-12
        )


def _sample(path: Path) -> pd.DataFrame:
    frame = pd.read_parquet(path)
    assert len(frame) == N_ROWS
    return frame.sample(SAMPLE_ROWS, random_state=3).reset_index(drop=True)


def test_helper_scores_a_million_rows_like_the_pyfunc(spark, registered, parquet_input, tmp_path):
    from pyspark.sql import functions as sf

    from router_model.spark import quote, score

    out = tmp_path / "scored.parquet"
    score(spark.read.parquet(str(parquet_input)), registered["model_uri"]).write.parquet(str(out))

    scored = spark.read.parquet(str(out))
    assert scored.columns == [*F.ALL_FEATURES, *F.OUTPUT_COLUMNS]
    assert scored.count() == N_ROWS
    assert scored.filter(sf.col("prediction").isNull() | sf.col("model").isNull()).count() == 0
    # Rows without the LR features went to naive Bayes, rows without the NB ones to the LR.
    nb_only = scored.filter(sf.col(quote("stem-height")).isNull())
    lr_only = scored.filter(sf.col(quote("cap-diameter")).isNull())
    assert nb_only.count() == lr_only.count() == N_ROWS // 10
    assert nb_only.filter(sf.col("model") != F.NAIVE_BAYES).count() == 0
    assert lr_only.filter(sf.col("model") != F.LOGISTIC_REGRESSION).count() == 0

    sample = _sample(out)
    assert (sample["model"] == F.NAIVE_BAYES).any()
    assert (sample["model"] == F.LOGISTIC_REGRESSION).any()
    assert sample["stem-height"].isna().any()
    assert sample["cap-diameter"].isna().any()
    _check_against_pyfunc(sample, registered["model_uri"])


def test_raw_spark_udf_call_from_the_readme(spark, registered, parquet_input, tmp_path):
    import mlflow.pyfunc
    from pyspark.sql.functions import col, struct

    predict = mlflow.pyfunc.spark_udf(
        spark,
        "models:/mushroom-router@champion",
        result_type="prediction string, probability double, poisonous_probability double, model string",
        env_manager="local",
        params={"threshold": 0.3},
    )
    df = spark.read.parquet(str(parquet_input))
    features = struct(*[col(f"`{c}`") for c in F.ALL_FEATURES if c in df.columns])
    out = tmp_path / "scored.parquet"
    df.withColumn("scored", predict(features)).select("*", "scored.*").drop("scored").write.parquet(str(out))

    assert spark.read.parquet(str(out)).count() == N_ROWS
    _check_against_pyfunc(_sample(out), "models:/mushroom-router@champion", {"threshold": 0.3})


def test_a_file_with_only_the_lr_features_in_underscore_spelling(spark, registered, tmp_path):
    from router_model.spark import score
    from router_model.synthetic import make_synthetic

    frame = make_synthetic(5_000, seed=11)[[*F.LR_FEATURES, F.TARGET]]
    frame.columns = [c.replace("-", "_") for c in frame.columns]
    path = tmp_path / "lr.parquet"
    frame.to_parquet(path, index=False)

    params = {"threshold": 0.2}
    scored = score(spark.read.parquet(str(path)), params=params).toPandas()

    assert list(scored.columns) == [*frame.columns, *F.OUTPUT_COLUMNS]
    assert len(scored) == len(frame)
    assert set(scored["model"]) == {F.LOGISTIC_REGRESSION}
    _check_against_pyfunc(scored.drop(columns=F.TARGET), registered["model_uri"], params)


def test_helper_refuses_before_any_spark_job(spark, registered):
    from router_model.spark import score

    lr = {"stem-height": 3.81, "stem-width": 1545.0, "stem-color": 11.0, "season": 1.8042727086281731}
    df = spark.createDataFrame(pd.DataFrame([lr]))
    with pytest.raises(ValueError, match="'threshold' is 2"):
        score(df, params={"threshold": 2})
    with pytest.raises(ValueError, match="'model' is 'forest'"):
        score(df, params={"model": "forest"})
    with pytest.raises(ValueError, match=r"complete neither feature set.*missing \['stem-height'\]"):
        score(df.drop("stem-height"))
    with pytest.raises(
        ValueError, match=r"feature set of param model='naive_bayes'.*missing \['cap-diameter'"
    ):
        score(df, params={"model": "naive_bayes"})
    with pytest.raises(ValueError, match=r"already has output column\(s\) \['prediction'\]"):
        score(df.withColumnRenamed("season", "prediction"))


def test_a_bad_row_fails_the_job_with_the_routers_message(spark, registered):
    from pyspark.errors import PythonException

    from router_model.spark import score

    nb = {"cap-diameter": 1372.0, "cap-shape": 9.0, "gill-attachment": 2.0, "gill-color": 10.0}
    with pytest.raises(PythonException, match="row 0, column 'cap-shape': got 9"):
        score(spark.createDataFrame(pd.DataFrame([nb]))).collect()


def test_workers_get_the_pickle_flag_and_a_wrong_python_is_named(caplog):
    from types import SimpleNamespace

    from router_model import spark as router_spark

    assert router_spark._worker_env() == {"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}
    session = SimpleNamespace(sparkContext=SimpleNamespace(master="local[2]", pythonExec="/bin/sh"))
    with caplog.at_level("WARNING", logger="router_model.spark"):
        router_spark._check_worker_python(session)
    assert "Set PYSPARK_PYTHON=" in caplog.text
    caplog.clear()
    session.sparkContext.pythonExec = sys.executable
    router_spark._check_worker_python(session)
    assert not caplog.text


@pytest.mark.parametrize("explain", [True, 2])
def test_helper_explains_the_golden_rows_as_in_process(spark, registered, golden_rows, explain):
    """``score(..., explain=...)``: a struct column with the pyfunc's numbers (the "other" term without its count)."""
    import mlflow.pyfunc

    from router_model.spark import score

    params = {"threshold": "safe"}
    scored = score(spark.createDataFrame(golden_rows), registered["model_uri"], params, explain=explain)
    assert scored.columns == [*F.ALL_FEATURES, *F.OUTPUT_COLUMNS, F.EXPLANATION]
    rows = scored.collect()
    typed = {"safe_threshold": True, "explain": True, "explain_top": 0 if explain is True else explain}
    expected = mlflow.pyfunc.load_model(registered["model_uri"]).predict(golden_rows, params=typed)
    got = [row[F.EXPLANATION].asDict(recursive=True) for row in rows]
    for explanation in expected[F.EXPLANATION]:
        for term in explanation["contributions"]:
            term.pop("count", None)
    assert got == expected[F.EXPLANATION].tolist()
    assert [row["prediction"] for row in rows] == expected["prediction"].astype(str).tolist()
    assert {row["model"] for row in rows} == set(F.ROUTES)
