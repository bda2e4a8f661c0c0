# syntax=docker/dockerfile:1
# One image for both processes: `raftorch serve` (an orchestrator replica, the default) and
# `raftorch-adapter run` (an adapter pod). The Helm chart sets the command of each.
# Pin the base by digest in your registry mirror for reproducible builds.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# Build: the project and its dependencies as wheels (all of them ship binary wheels).
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY raftorch ./raftorch
COPY adapter ./adapter
COPY persistence ./persistence
COPY protocol ./protocol
COPY devtools ./devtools
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Run: the wheels installed from the build stage, no compiler, no pip cache, no root.
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 raftorch \
    && useradd --system --uid 10001 --gid raftorch --no-create-home \
        --home-dir /var/lib/raftorch --shell /usr/sbin/nologin raftorch \
    && install -d -o raftorch -g raftorch /var/lib/raftorch
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels raftorch==0.1.0 \
    && pip uninstall --yes setuptools wheel
USER 10001:10001
WORKDIR /var/lib/raftorch
# API, Portal, probes and /metrics of a replica; Raft; /metrics and probes of a pod.
EXPOSE 8080 4321 9100
CMD ["raftorch", "serve"]
