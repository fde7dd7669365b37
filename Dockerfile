# syntax=docker/dockerfile:1
# Adapter Registry image (API, worker, migrations share it).
#
#   docker build -t adapter-registry:cpu .                       # CPU torch (default)
#   docker build -t adapter-registry:gpu \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .   # CUDA torch
#
# torch is installed first, from the chosen wheel index, pinned: `pip install .[ml]` then finds
# it satisfied and never pulls the multi-GB default CUDA build from PyPI.
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    REGISTRY_HOME=/var/lib/registry \
    HF_HOME=/var/lib/registry/hf

RUN groupadd --system --gid 10001 registry \
 && useradd --system --uid 10001 --gid registry --home-dir /var/lib/registry --shell /usr/sbin/nologin registry \
 && install -d -o registry -g registry /var/lib/registry

RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

WORKDIR /app
COPY pyproject.toml README* alembic.ini ./
COPY registry ./registry
COPY workers ./workers
COPY migrations ./migrations
RUN pip install ".[ml]" \
 && python -c "import torch, registry, workers; print('torch', torch.__version__)"

USER registry
EXPOSE 8000
# One API process per core, each with its own SO_REUSEPORT socket (registry/api/server.py).
CMD ["adapter-registry", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
