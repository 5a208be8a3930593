# syntax=docker/dockerfile:1
# Container images of a lers_ray Ray cluster (see clusters/README.md), one build target each:
#
#   gpu  head node and training workers: CUDA runtime base, torch built for CUDA
#   pi   edge node (a Raspberry Pi 4 under k3s, or an arm64 cloud stand-in): CPU torch
#
#   docker buildx build --target gpu --platform linux/amd64 -t REGISTRY/lers-ray:gpu --push .
#   docker buildx build --target pi --platform linux/arm64 -t REGISTRY/lers-ray:pi --push .
#
# Ray rejects a node whose Python (major.minor.micro) or Ray version differs from the head's,
# so both targets take PYTHON_VERSION and RAY_VERSION from the same build arguments below.
# Change them together, and rebuild both images whenever one changes.

ARG PYTHON_VERSION=3.11.14
ARG RAY_VERSION=2.60.0
# The torch version that .ci/run installs; the project accepts a range, so it is installed first.
ARG TORCH_VERSION=2.13.0
ARG UV_VERSION=0.13.8
# NOTE: the CUDA tag of CUDA_IMAGE and TORCH_INDEX_URL must be one for which PyTorch publishes
# TORCH_VERSION; check the install matrix on pytorch.org when changing either.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG TORCH_CPU_INDEX_URL=https://download.pytorch.org/whl/cpu

# uv only provides the exact Python patch release for the gpu stage.
FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

FROM ${CUDA_IMAGE} AS gpu
ARG PYTHON_VERSION
ARG RAY_VERSION
ARG TORCH_VERSION
ARG TORCH_INDEX_URL

# openssh-client: the autoscaler on the head reaches workers over ssh. rsync: the Ray cluster
# launcher copies files into the container with it. wget: KubeRay's health probes call it.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates openssh-client rsync wget \
    && rm -rf /var/lib/apt/lists/*

# The CUDA base has no Python 3.11, and Ubuntu's package would not match the pi stage's patch
# release: install PYTHON_VERSION itself (a python-build-standalone build) with uv.
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON_INSTALL_DIR=/opt/python
# KubeRay and the cluster launcher start Ray in a login shell, whose /etc/profile may reset PATH
# before it sources /etc/profile.d: put the environment back on PATH there.
RUN uv python install "${PYTHON_VERSION}" \
    && uv venv --seed --python-preference only-managed --python "${PYTHON_VERSION}" /opt/venv \
    && echo 'export PATH=/opt/venv/bin:$PATH' >/etc/profile.d/lers-venv.sh
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:${PATH} \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

# Editable, because the default search spaces are read from the checkout's search_spaces/
# folder, which a wheel does not contain. boto3: the autoscaler's AWS node provider imports it.
COPY . /opt/lers_ray
RUN python -m pip install -e "/opt/lers_ray" "ray[default,tune]==${RAY_VERSION}" boto3 \
    && python -c "import torch, ray; assert torch.__version__.split('+')[0] == '${TORCH_VERSION}', torch.__version__; assert ray.__version__ == '${RAY_VERSION}', ray.__version__"

# The CUDA base image on Ubuntu 24.04 already has a user with UID 1000 (ubuntu): replace it, so
# the Ray user owns UID 1000 like the user that owns the shared storage on the hosts.
RUN if id ubuntu >/dev/null 2>&1; then userdel ubuntu && rm -rf /home/ubuntu; fi \
    && useradd --create-home --uid 1000 --shell /bin/bash ray
# The cluster launcher reads HOME from the image to place its bootstrap files.
ENV HOME=/home/ray
USER ray
WORKDIR /home/ray
CMD ["bash"]


FROM --platform=linux/arm64 python:${PYTHON_VERSION}-slim-bookworm AS pi
ARG RAY_VERSION
ARG TORCH_VERSION
ARG TORCH_CPU_INDEX_URL

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        openssh-client rsync wget \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv \
    && echo 'export PATH=/opt/venv/bin:$PATH' >/etc/profile.d/lers-venv.sh
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:${PATH} \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m pip install --index-url "${TORCH_CPU_INDEX_URL}" "torch==${TORCH_VERSION}"

COPY . /opt/lers_ray
RUN python -m pip install -e "/opt/lers_ray" "ray[default,tune]==${RAY_VERSION}" \
    && python -c "import torch, ray; assert torch.__version__.split('+')[0] == '${TORCH_VERSION}', torch.__version__; assert ray.__version__ == '${RAY_VERSION}', ray.__version__"

RUN useradd --create-home --uid 1000 --shell /bin/bash ray
ENV HOME=/home/ray
USER ray
WORKDIR /home/ray
CMD ["bash"]
