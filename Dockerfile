# syntax=docker/dockerfile:1
#
# Two images from one file:
#   docker build --target api    -t actlab-api .      # the service: onnxruntime, no torch
#   docker build --target export -t actlab-export .   # builds models: torch==2.13.0 (CPU)
# docker-compose.yml builds both.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# ---------------------------------------------------------------------------------------------
# The service's runtime dependencies only (`pip install .`, no extras): wheels, no compilers.
# Only the service package is copied, so the export code (and torch) never enters this venv.
FROM base AS api-build
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip install .

# ---------------------------------------------------------------------------------------------
FROM base AS api
RUN groupadd --system --gid 10001 actlab \
 && useradd --system --uid 10001 --gid actlab --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin actlab
COPY --from=api-build /opt/venv /opt/venv
# The default models, owned by root: the service user can read them, never change them.
# docker-compose.yml also mounts ./models here read-only, so re-exported models are served.
COPY --chown=root:root models /app/models
# XDG_CACHE_HOME: onnxruntime persists a telemetry id under ~/.cache and warns at every start
# when it cannot (HOME is /nonexistent, the root filesystem read-only); /tmp is a tmpfs.
ENV PATH=/opt/venv/bin:$PATH \
    ACTLAB_MODELS_DIR=/app/models \
    ACTLAB_DEFAULT_MODEL=resnet20-relu-digits \
    XDG_CACHE_HOME=/tmp
USER 10001:10001
EXPOSE 8000
# Readiness without curl: 200 only once every startup model is loaded and warm.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=2).status == 200 else 1)"]
# SIGTERM: uvicorn stops accepting, finishes in-flight requests for up to 20 s, then exits;
# compose's stop_grace_period (30 s) and the k8s terminationGracePeriodSeconds leave room for it.
# Keep-alive (65 s) outlasts nginx's upstream keepalive_timeout (30 s): nginx closes idle
# connections first, so it never reuses one a replica is closing.
STOPSIGNAL SIGTERM
CMD ["uvicorn", "service.app:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000", "--timeout-graceful-shutdown", "20", "--timeout-keep-alive", "65", "--no-server-header"]

# ---------------------------------------------------------------------------------------------
# Building models: torch 2.13.0 from the CPU wheel index (the default index's Linux wheel pulls
# gigabytes of CUDA libraries), then the project with its export extras.
FROM base AS export
RUN groupadd --system --gid 10001 actlab \
 && useradd --system --uid 10001 --gid actlab --create-home --home-dir /home/actlab \
      --shell /usr/sbin/nologin actlab
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md ./
COPY service ./service
COPY export ./export
RUN pip install '.[export]'
ENV HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    ACTLAB_MODELS_DIR=/app/models
USER 10001:10001
CMD ["python", "-m", "export", "--help"]
