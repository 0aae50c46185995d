# segwatch daemon image (multi-stage, slim, non-root). Build and run:
#   docker build -t segwatch .
#   docker run -d --name segwatch -p 9464:9464 \
#     -v $PWD/segwatch.toml:/etc/segwatch/segwatch.toml:ro -v segwatch-data:/var/lib/segwatch \
#     -e ETH_RPC_URL=https://… segwatch
# The configuration is the mounted file plus SEGWATCH_<SECTION>__<KEY> variables; secrets
# go in variables named by `url_env`. /healthz and /metrics listen on 0.0.0.0:9464 here.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY daemon ./daemon
COPY chains ./chains
RUN pip install --no-cache-dir --prefix=/install -c constraints.txt .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/segwatch --create-home segwatch
COPY --from=build /install /usr/local
USER segwatch
WORKDIR /var/lib/segwatch
ENV SEGWATCH_CONFIG=/etc/segwatch/segwatch.toml \
    SEGWATCH_DAEMON__LISTEN=0.0.0.0:9464 \
    BCL_DATA_DIR=/var/lib/segwatch/bitcoinlib \
    PYTHONUNBUFFERED=1
VOLUME ["/var/lib/segwatch"]
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["segwatch", "--log-format", "json"]
CMD ["run"]
