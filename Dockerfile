# The Thresher image: the server and, with the same code, the GPU worker.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /srv/thresher

COPY pyproject.toml constraints.txt README.md ./
COPY app ./app
COPY ml ./ml
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
COPY alembic.ini ./

# The server needs no ML stack; the worker image installs it with --build-arg EXTRAS=ml.
ARG EXTRAS=""
RUN pip install --no-cache-dir -c constraints.txt -e ".${EXTRAS:+[$EXTRAS]}"

# Run as an unprivileged user; the data directories (named volumes in docker-compose.yml) are
# created here so that the volumes start out owned by it.
RUN useradd --create-home --uid 10001 thresher \
    && mkdir -p /var/lib/thresher /var/lib/thresher-worker \
    && chown thresher:thresher /var/lib/thresher /var/lib/thresher-worker
USER thresher

EXPOSE 8000
CMD ["thresher", "serve", "--host", "0.0.0.0", "--port", "8000"]
