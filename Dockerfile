# syntax=docker/dockerfile:1
#
# kube-l2tp: one image, two entrypoints of the console script `kube-l2tp`:
#   kube-l2tp agent --node NODE ...       the per-node agent (the chart's DaemonSet runs it as
#                                         root with NET_ADMIN only, in the host's network)
#   kube-l2tp operator ...                the operator (the chart's Deployment, non-root)
#
#   docker build -t REGISTRY/kube-l2tp:0.1.0 .
#
# This file is NOT built in CI: the project's CI machines have no container engine. What CI
# checks instead (tests/unit/test_chart.py): hadolint passes on this file, and `pip wheel
# --no-deps .` builds the wheel that this file installs, with the embedded manifests and the
# console script in it.
#
# Stage 1 builds wheels for the package and its dependencies; stage 2 installs only those wheels
# (no compiler, no source tree, no pip cache) into a slim Python 3.11. Base images are pinned to
# exact tags; pin them by digest as well (python:3.11.14-slim-trixie@sha256:...) where you build.

FROM python:3.11.14-slim-trixie AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN pip install --no-cache-dir pip==25.3
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
# The project's wheel and a wheel for every dependency (pinned in pyproject.toml).
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11.14-slim-trixie
LABEL org.opencontainers.image.title="kube-l2tp" \
      org.opencontainers.image.description="Declarative, self-healing static L2TPv3 Ethernet pseudowires for Kubernetes nodes and Linux hosts" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Only the wheels, from the build stage, never the network; bytecode is compiled here so that the
# read-only root filesystem the chart sets up needs no writes at run time.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir pip==25.3 \
    && pip install --no-cache-dir --no-index --find-links /wheels /wheels/kube_l2tp-*.whl \
    && kube-l2tp --help > /dev/null
# Non-root by default (the operator); the agent's DaemonSet sets runAsUser 0 and adds NET_ADMIN,
# because it programs the host's network namespace.
USER 65532:65532
# The agent's metrics and health (hostNetwork), the operator's health and its admission webhook.
EXPOSE 9717 8080 9443
ENTRYPOINT ["kube-l2tp"]
CMD ["--help"]
