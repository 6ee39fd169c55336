# Airflow 3.3 with this package installed, so DAG tasks can import router_model. The image ships the
# celery provider: the same image runs the LocalExecutor scheduler and the CeleryExecutor workers.
# Build context: the repository root (docker-compose.yaml).
#
# The -python3.11 variant: constraints.txt is resolved for Python 3.11 (`make lock`), within the
# bounds this image's providers set (docker/airflow-image-bounds.txt), so that installing it here
# moves none of the image's packages out of their range (tests/code/test_airflow_image.py).
FROM apache/airflow:3.3.2-python3.11

# The source folder must be writable by the airflow user: pip builds the package in place.
# 0 is root, 50000 the image's airflow user (its group is 0).
USER 0
RUN install -d -o 50000 -g 0 /opt/mushroom-router
USER 50000

COPY --chown=50000:0 pyproject.toml README.md constraints.txt /opt/mushroom-router/
COPY --chown=50000:0 router_model /opt/mushroom-router/router_model

# Only the package and its runtime dependencies (not the `airflow` extra: the image has Airflow).
# Naming apache-airflow==$AIRFLOW_VERSION keeps pip from moving Airflow itself, as the Airflow
# image documentation recommends. data/ and auth/ are created here, owned by airflow, so that the
# named volumes mounted there start with the right owner.
RUN pip install --no-cache-dir -c /opt/mushroom-router/constraints.txt \
        "apache-airflow==${AIRFLOW_VERSION}" /opt/mushroom-router \
    && mkdir -p /opt/airflow/data /opt/airflow/auth
