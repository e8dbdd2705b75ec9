# migrate-bot: the Slack chat-ops bot for production database migrations.
FROM python:3.11-slim-bookworm

# pg_dump / pg_restore / psql must match the server's major version (PostgreSQL 15 on bookworm). The server
# package gives initdb/pg_ctl for rehearsal.target `local` (a throwaway cluster per rehearsal, never the
# production server); no default cluster is created.
RUN mkdir -p /etc/postgresql-common/createcluster.d \
    && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/no-main-cluster.conf \
    && apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client-15 postgresql-15 \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin migrate-bot
WORKDIR /app

COPY pyproject.toml README.md ./
# .dockerignore leaves bot/devtools (the Slack stand-in, demo app and stubs) out of the context.
COPY bot ./bot
COPY handlers ./handlers
COPY jobs ./jobs
RUN pip install --no-cache-dir .

USER 10001
ENV PORT=3000 \
    PYTHONUNBUFFERED=1
EXPOSE 3000

HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '3000') + '/healthz', timeout=4)"]

CMD ["migrate-bot", "serve"]
