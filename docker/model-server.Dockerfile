# Model server: `mushroom-router supervise` follows models:/mushroom-router@champion and runs
# `mlflow models serve` on it. Build context: the repository root (docker-compose.yaml).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false \
    MUSHROOM_DATA_DIR=/var/lib/mushroom-router

# A system user without a login shell; the model cache folder is created here (owned by it) so
# that the named volume mounted there starts with the right owner.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app \
        --shell /usr/sbin/nologin app \
    && install -d -o app -g app /var/lib/mushroom-router \
    && python -m venv /opt/venv

WORKDIR /build
COPY pyproject.toml README.md constraints.txt ./
COPY router_model ./router_model
RUN pip install --no-cache-dir -c constraints.txt .

USER 10001:10001
WORKDIR /home/app
EXPOSE 8000
CMD ["mushroom-router", "supervise", "--host", "0.0.0.0", "--port", "8000"]
