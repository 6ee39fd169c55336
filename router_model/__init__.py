"""mushroom-router: two scikit-learn classifiers behind one MLflow pyfunc router.

Modules, bottom to top: :mod:`features` and :mod:`settings`; :mod:`validation`, :mod:`data`,
:mod:`transformers`, :mod:`router` (with :mod:`server_guard`, which it installs into MLflow's
scoring server), :mod:`train` and :mod:`scoring`; :mod:`registry`;
:mod:`pipeline` and :mod:`serving`; :mod:`cli` (and the Airflow DAG in ``dags/``) on top.
"""

__version__ = "0.1.0"
