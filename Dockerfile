# segwatch daemon image: `docker build -t segwatch .` then
# `docker run -v $PWD/segwatch.toml:/etc/segwatch/segwatch.toml segwatch`
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY daemon ./daemon
COPY chains ./chains
RUN pip install --no-cache-dir --prefix=/install -c constraints.txt .

FROM python:3.11-slim
RUN useradd --system --home-dir /var/lib/segwatch --create-home segwatch
COPY --from=build /install /usr/local
USER segwatch
WORKDIR /var/lib/segwatch
ENV SEGWATCH_CONFIG=/etc/segwatch/segwatch.toml \
    PYTHONUNBUFFERED=1
EXPOSE 9464
ENTRYPOINT ["segwatch", "--log-format", "json"]
CMD ["run"]
