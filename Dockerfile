# syntax=docker/dockerfile:1
#
# fluxserve container images, two targets:
#
#   docker build --target api    -t fluxserve-api .     # API replicas, migrations, CLI: no torch (a few hundred MB)
#   docker build --target worker -t fluxserve-worker .  # GPU worker: CUDA torch + diffusers (many GB)
#
# Both run as the unprivileged user 10001 (numeric, so Kubernetes' runAsNonRoot can check it), keep their state
# under /data (FLUXSERVE_DATA_DIR; output files in /data/outputs unless S3 is configured), and start through
# tini, which forwards SIGTERM to fluxserve (a worker then lets its running predictions finish, up to
# FLUXSERVE_SHUTDOWN_GRACE_SECONDS) and reaps the compiler processes torch.compile starts.
# Base images are pinned to exact versions; pin them by digest too where your registry policy asks for it.

# --- api ------------------------------------------------------------------------------------------------------
FROM python:3.11.14-slim-bookworm AS api-build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/fluxserve
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# The base package is the API, store, CLI and client; [s3] adds boto3 for S3-compatible output storage.
RUN /opt/fluxserve/bin/pip install --no-cache-dir '.[s3]'

FROM python:3.11.14-slim-bookworm AS api
# Distribution packages are not pinned (DL3008): the pinned base image fixes the release, and exact package
# versions disappear from the archive with each security update, which would break the build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 fluxserve \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/fluxserve --create-home fluxserve \
    && mkdir -p /data/outputs \
    && chown -R 10001:10001 /data
COPY --from=api-build /opt/fluxserve /opt/fluxserve
ENV PATH=/opt/fluxserve/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    FLUXSERVE_DATA_DIR=/data \
    FLUXSERVE_HOST=0.0.0.0 \
    FLUXSERVE_PORT=5000 \
    FLUXSERVE_WORKER=false
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 5000
# /health answers without touching the database (liveness); /ready also checks the database.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.build_opener(r.ProxyHandler({})).open('http://127.0.0.1:%s/health' % os.environ.get('FLUXSERVE_PORT', '5000'), timeout=4)"]
ENTRYPOINT ["tini", "--", "fluxserve"]
CMD ["serve", "--no-worker"]

# --- worker ---------------------------------------------------------------------------------------------------
# The CUDA runtime image gives the driver-facing libraries and the NVIDIA container runtime's settings; torch's
# wheels bring their own CUDA libraries. Ubuntu 24.04's Python is 3.12 (fluxserve needs 3.11+).
FROM nvidia/cuda:12.8.1-runtime-ubuntu24.04 AS worker-build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 python3.12-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3.12 -m venv /opt/fluxserve
# torch first, from PyTorch's CUDA index: '.[models,gpu]' below then finds torch==2.13.0 and torchvision==0.28.0
# satisfied (a local version such as 2.13.0+cu128 matches ==2.13.0) and leaves this build in place.
RUN /opt/fluxserve/bin/pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" torch==2.13.0 torchvision==0.28.0
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/fluxserve/bin/pip install --no-cache-dir '.[models,gpu,s3]'

FROM nvidia/cuda:12.8.1-runtime-ubuntu24.04 AS worker
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 fluxserve \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/fluxserve --create-home fluxserve \
    && mkdir -p /data/outputs /cache/huggingface /cache/compile \
    && chown -R 10001:10001 /data /cache
COPY --from=worker-build /opt/fluxserve /opt/fluxserve
# HF_HOME: the Hugging Face cache the weights load from (`fluxserve pull` fills it); FLUXSERVE_COMPILE_CACHE_DIR:
# go_fast's torch.compile artifacts. Both on volumes, so a restarted worker neither downloads nor compiles again.
# The worker serves /health and /metrics on FLUXSERVE_WORKER_METRICS_PORT (it has no port without that setting).
ENV PATH=/opt/fluxserve/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    FLUXSERVE_DATA_DIR=/data \
    HF_HOME=/cache/huggingface \
    FLUXSERVE_COMPILE_CACHE_DIR=/cache/compile \
    FLUXSERVE_WORKER_METRICS_HOST=0.0.0.0 \
    FLUXSERVE_WORKER_METRICS_PORT=9100
USER 10001:10001
WORKDIR /data
VOLUME ["/data", "/cache/huggingface", "/cache/compile"]
EXPOSE 9100
# The worker's /health is 200 while its claim loop runs (model loads included) and 503 once it has stopped.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.build_opener(r.ProxyHandler({})).open('http://127.0.0.1:%s/health' % os.environ.get('FLUXSERVE_WORKER_METRICS_PORT', '9100'), timeout=4)"]
ENTRYPOINT ["tini", "--", "fluxserve"]
CMD ["worker"]
