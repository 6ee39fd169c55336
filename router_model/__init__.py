"""mushroom-router: two scikit-learn classifiers behind one MLflow pyfunc router.

Modules, bottom to top: :mod:`features`, :mod:`settings` and :mod:`tables` (file formats);
:mod:`validation`, :mod:`data`, :mod:`transformers`, :mod:`scorers`, :mod:`router` (with
:mod:`server_guard`, which it installs into MLflow's scoring server), :mod:`train`,
:mod:`scoring`, :mod:`spark` and :mod:`plots`; :mod:`registry`; :mod:`pipeline`, :mod:`serving`
and :mod:`supervisor`; :mod:`cli` (and the Airflow DAG in ``dags/``) on top.
"""

__version__ = "0.1.0"
