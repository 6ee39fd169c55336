"""Models-from-code entry point: MLflow executes this file to build the router pyfunc.

Logged with ``python_model=<this file>`` (see :mod:`router_model.registry`); the fitted
sub-models travel as artifacts, so no pickled Python object is ever stored or loaded.
"""

from mlflow.models import set_model

from router_model.router import MushroomRouterModel

set_model(MushroomRouterModel())
