# segwatch daemon image: multi-stage, non-root, and no network needed while building.
#
# The dependencies come in as wheels built on the host into ./wheels (the context), so
# nothing is downloaded inside the build:
#   python3 -m tests.container.build wheels          # pip wheel --require-hashes -r requirements.lock
#   docker build -t segwatch .                       # podman: add --format docker
#   docker run -d --name segwatch -p 9464:9464 \
#     -v $PWD/segwatch.toml:/etc/segwatch/segwatch.toml:ro -v segwatch-data:/var/lib/segwatch \
#     -e ETH_RPC_URL=https://… segwatch
# The configuration is the mounted file plus SEGWATCH_<SECTION>__<KEY> variables; secrets
# go in variables named by `url_env`. /healthz and /metrics listen on
# SEGWATCH_DAEMON__LISTEN (0.0.0.0:9464 here); the HEALTHCHECK reads the same variable.
#
# BASE is any Debian-like image whose `python3` is CPython 3.11 with the venv module:
# by default the official python:3.11-slim pinned by digest (the multi-arch index, Python
# 3.11.16 on Debian trixie; refresh it deliberately with
# `docker buildx imagetools inspect python:3.11-slim`). The tests build on a local
# stand-in made with debootstrap (Debian 12's python3 and python3-venv).
ARG BASE=docker.io/library/python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

# Dependencies first, in a venv at a fixed path: this layer is rebuilt only when the
# wheels change (requirements.lock, the hashed pins), never for a code change.
FROM ${BASE} AS deps
ENV PIP_NO_INDEX=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY wheels/ /wheels/
RUN python3 -m venv /opt/segwatch \
 && /opt/segwatch/bin/pip install --find-links /wheels /wheels/*.whl

# segwatch itself, built from the source into a wheel (setuptools from wheels/build).
FROM deps AS app
WORKDIR /src
COPY pyproject.toml README.md ./
COPY chains ./chains
COPY daemon ./daemon
RUN /opt/segwatch/bin/pip wheel --no-deps --find-links /wheels/build --wheel-dir /dist .

FROM ${BASE}
RUN useradd --uid 10001 --user-group --no-log-init --shell /usr/sbin/nologin \
      --home-dir /var/lib/segwatch --create-home segwatch
COPY --from=deps /opt/segwatch /opt/segwatch
COPY --from=app /dist/ /tmp/dist/
RUN PIP_NO_INDEX=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    /opt/segwatch/bin/pip install --no-deps /tmp/dist/*.whl \
 && rm -rf /tmp/dist
USER segwatch
WORKDIR /var/lib/segwatch
ENV PATH=/opt/segwatch/bin:$PATH \
    LANG=C.UTF-8 \
    SEGWATCH_CONFIG=/etc/segwatch/segwatch.toml \
    SEGWATCH_DAEMON__LISTEN=0.0.0.0:9464 \
    BCL_DATA_DIR=/var/lib/segwatch/bitcoinlib \
    PYTHONUNBUFFERED=1
VOLUME ["/var/lib/segwatch"]
EXPOSE 9464
# GET /healthz on the port of SEGWATCH_DAEMON__LISTEN (a wildcard host is asked on loopback).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["/opt/segwatch/bin/python", "-c", "import os, urllib.request; host, _, port = os.environ.get('SEGWATCH_DAEMON__LISTEN', '127.0.0.1:9464').rpartition(':'); host = {'': '127.0.0.1', '0.0.0.0': '127.0.0.1', '[::]': '[::1]'}.get(host, host); urllib.request.urlopen(f'http://{host}:{port}/healthz', timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["segwatch", "--log-format", "json"]
CMD ["run"]
