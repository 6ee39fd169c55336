# MLflow tracking server: PostgreSQL backend store, proxied artifact store (mlflow-artifacts:/).
# Build context: the repository root (docker-compose.yaml). Installs this package with the pinned
# constraints so the server runs exactly the MLflow version the training code was tested with.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# A system user without a login shell; /mlartifacts is created here (owned by it) so that the
# named volume mounted there starts with the right owner.
RUN groupadd --system --gid 10001 mlflow \
    && useradd --system --uid 10001 --gid mlflow --create-home --home-dir /home/mlflow \
        --shell /usr/sbin/nologin mlflow \
    && install -d -o mlflow -g mlflow /mlartifacts \
    && python -m venv /opt/venv

WORKDIR /build
COPY pyproject.toml README.md constraints.txt ./
COPY router_model ./router_model
# auth: Flask-WTF for `mlflow server --app-name basic-auth` (logins and permissions).
RUN pip install --no-cache-dir -c constraints.txt ".[postgres,auth]"

USER 10001:10001
WORKDIR /home/mlflow
EXPOSE 5000
# docker-compose.yaml replaces this with the PostgreSQL backend store, the auth app and the
# allowed host names.
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000", "--artifacts-destination", "/mlartifacts"]
