"""mushroom-router: two scikit-learn classifiers behind one MLflow pyfunc router.

The modules, bottom to top, are listed with one line each in the README's Layout section
(``tests/code/test_layout.py`` keeps that list complete); the CLI (:mod:`cli`) and the Airflow
DAGs in ``dags/`` are on top and call the same pipeline functions.
"""

__version__ = "0.1.0"
