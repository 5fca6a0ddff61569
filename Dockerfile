# datamill image: one image for the server, the workers and `datamill migrate`.
#
#   docker build -t datamill:dev .
#   docker run --rm -p 50051:50051 -e DATAMILL_DATABASE_URL=... -e DATAMILL_REDIS_URL=... datamill:dev
#   docker run --rm ... datamill:dev datamill-worker --workers 2
#   docker run --rm ... datamill:dev datamill migrate
#
# Nothing is fetched at build time except PyPI packages: every runtime dependency
# ships manylinux wheels, so neither stage needs a compiler, and the health check
# uses grpcio-health-checking (already a dependency) instead of grpc_health_probe.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------
# builder: build the wheel and install it with its dependencies into /opt/venv.
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1

# The venv lives at the same path in both stages: its scripts have absolute shebangs.
RUN python -m venv /opt/venv

WORKDIR /src
# Only what the wheel is built from (see .dockerignore): the generated stubs are
# committed under datamill/v1, so no protoc is needed here.
COPY pyproject.toml README.md ./
COPY datamill ./datamill
COPY server ./server
COPY worker ./worker
COPY client ./client

# pip's cache is a BuildKit cache mount, so it speeds up rebuilds without ending up in a layer.
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install /wheels/datamill-*.whl \
 && /opt/venv/bin/pip check

# ---------------------------------------------------------------------------
# runtime: the venv only, as an unprivileged user, no build tools.
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="datamill" \
      org.opencontainers.image.description="gRPC service that makes, takes in and hands out datasets as background jobs" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it and
# runAsUser/fsGroup in deploy/kubernetes match.
RUN groupadd --system --gid 10001 datamill \
 && useradd --system --uid 10001 --gid datamill --home-dir /var/lib/datamill --create-home \
        --shell /usr/sbin/nologin datamill

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DATAMILL_LISTEN=0.0.0.0:50051 \
    DATAMILL_LOCAL_OBJECT_DIR=/var/lib/datamill/objects

USER 10001:10001
WORKDIR /var/lib/datamill
EXPOSE 50051

# The server's own gRPC health service (grpc.health.v1), checked for the
# datamill.v1.JobService entry, which is SERVING only while PostgreSQL and Redis
# answer. Any error (refused, timeout, NOT_SERVING) exits non-zero.
# Containers that run the worker or `datamill migrate` must turn this off
# (docker-compose.yml does: `healthcheck: {disable: true}`).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; port = os.environ.get('DATAMILL_LISTEN', '0.0.0.0:50051').rpartition(':')[2]; r = g.HealthStub(grpc.insecure_channel('127.0.0.1:' + port)).Check(h.HealthCheckRequest(service='datamill.v1.JobService'), timeout=3); sys.exit(r.status != h.HealthCheckResponse.SERVING)"]

# No ENTRYPOINT, so `docker run IMAGE datamill-worker ...` or `... datamill migrate` just works.
# The processes handle SIGTERM themselves (graceful drain); compose adds `init: true`.
CMD ["datamill-server"]
