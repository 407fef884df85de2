# syntax=docker/dockerfile:1
#
# kube-l2tp: one image, two entrypoints of the console script `kube-l2tp`:
#   kube-l2tp agent --node NODE ...       the per-node agent (the chart's DaemonSet runs it as
#                                         root with NET_ADMIN only, in the host's network)
#   kube-l2tp operator ...                the operator (the chart's Deployment, non-root)
#
#   docker build -t REGISTRY/kube-l2tp:0.1.0 --build-arg REVISION=$(git rev-parse HEAD) .
#   make image        the same without a container engine (buildah, scripts/build-image.sh):
#                     build/kube-l2tp-image.tar, an OCI archive, on a base made from Debian's
#                     packages (BASE_IMAGE) where no container registry is reachable
#
# Stages: `deps` makes a wheel for every dependency (binary wheels only: nothing is compiled),
# `build` the project's wheel from this tree; the image installs only those wheels into a venv
# (no compiler, no source tree, no pip cache, no network). Dependencies and the project are
# separate layers, so a change to the code rebuilds only the last one.

# Any image with python3 >= 3.11 and its venv module; pin it by digest where you build.
ARG BASE_IMAGE=python:3.11.14-slim-trixie

FROM ${BASE_IMAGE} AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
# The CA bundle pip verifies the package index with, when the build's network needs its own
# (make image passes the host's); unset otherwise.
ARG PIP_CERT
RUN python3 -m venv /opt/build && /opt/build/bin/pip install --no-cache-dir pip==25.3
WORKDIR /src
COPY pyproject.toml ./
# The dependencies as pinned in pyproject.toml, read with the standard library.
RUN /opt/build/bin/python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" > requirements.txt \
    && /opt/build/bin/pip wheel --no-cache-dir --only-binary=:all: --wheel-dir /wheels -r requirements.txt \
    && cp requirements.txt /wheels/

FROM deps AS build
ARG PIP_CERT
COPY README.md ./
COPY operator/ operator/
RUN /opt/build/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

# Only the wheels of the stages above, never the network; bytecode is compiled at install, so the
# read-only root filesystem the chart sets up needs no writes at run time. Dependencies first, so
# that a change to the code reinstalls only the project.
FROM ${BASE_IMAGE} AS install
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY --from=deps /wheels /wheels
RUN python3 -m venv /opt/kube-l2tp \
    && /opt/kube-l2tp/bin/pip install --no-cache-dir --no-index --find-links /wheels -r /wheels/requirements.txt
COPY --from=build /dist /dist
RUN /opt/kube-l2tp/bin/pip install --no-cache-dir --no-index --no-deps /dist/kube_l2tp-*.whl \
    && /opt/kube-l2tp/bin/pip uninstall --yes pip

FROM ${BASE_IMAGE}
# What `kube-l2tp --version` and the kube_l2tp_build_info metric report.
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/kube-l2tp/kube-l2tp
LABEL org.opencontainers.image.title="kube-l2tp" \
      org.opencontainers.image.description="Declarative, self-healing static L2TPv3 Ethernet pseudowires for Kubernetes nodes and Linux hosts" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
ENV PATH=/opt/kube-l2tp/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    KUBE_L2TP_REVISION=${REVISION}
# The image's one layer of its own: the venv made in `install` (the same base, so the same python).
COPY --from=install /opt/kube-l2tp /opt/kube-l2tp
# The agent's state directory exists in the image, so that a runtime can mount over it on a
# read-only root (the chart mounts the node's there).
RUN kube-l2tp --version && mkdir -p /var/lib/kube-l2tp
# Non-root by default (the operator); the agent's DaemonSet sets runAsUser 0 and adds NET_ADMIN,
# because it programs the host's network namespace.
USER 65532:65532
# The agent's metrics and health (hostNetwork), the operator's health and metrics, its webhook.
EXPOSE 9717 8080 9443
ENTRYPOINT ["kube-l2tp"]
CMD ["--help"]
