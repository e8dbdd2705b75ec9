# migrate-bot: the Slack chat-ops bot for production database migrations.
#
# PostgreSQL: pg_dump / pg_restore / psql 17 from the PostgreSQL project's apt repository (PGDG), which dump and
# restore servers 13-17 (bookworm's own archive has 15 only, too old for an RDS 16 or 17). The server binaries of
# every supported major (PG_SERVER_MAJORS) let the isolated rehearsal start a throwaway cluster of the same major as
# the dump (bot/integrations/pgcluster.py looks under /usr/lib/postgresql/<major>/bin; with a major missing it
# restores into the newest newer one). Drop majors you do not run to shrink the image (about 60 MB each).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- the PGDG signing key, taken from Debian's own postgresql-common package and checked against its fingerprint -----
FROM ${PYTHON_IMAGE} AS pgdg-key
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Debian keeps one version of each package in bookworm's index, so an exact pin would break the build at the next
# point release; these two come from Debian's signed archive and leave nothing behind (this stage is discarded).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gnupg postgresql-common \
    && rm -rf /var/lib/apt/lists/*
RUN gpg --show-keys --with-colons /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc \
      | grep -x 'fpr:::::::::B97B0AFCAA1A47F044F244A07FCC7D46ACCC4CF8:' >/dev/null \
    && cp /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc /pgdg.asc

# -- the Python environment, installed from the hash-checked runtime lock only ---------------------------------------
FROM ${PYTHON_IMAGE} AS python-env
WORKDIR /src
COPY requirements/runtime.txt requirements/runtime.txt
# --require-hashes: every package, the build backend included, must match a hash in the lock.
RUN python -m venv /opt/migrate-bot \
    && /opt/migrate-bot/bin/pip install --no-cache-dir --require-hashes -r requirements/runtime.txt
COPY pyproject.toml README.md ./
# .dockerignore leaves bot/devtools (the Slack stand-in, demo app and stubs) out of the context.
COPY bot ./bot
COPY handlers ./handlers
COPY jobs ./jobs
# The project itself: no dependencies (all came from the lock), no build isolation (setuptools came from the lock).
RUN /opt/migrate-bot/bin/pip install --no-cache-dir --no-deps --no-build-isolation .

# -- the image ---------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ARG PG_SERVER_MAJORS="13 14 15 16 17"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY --from=pgdg-key /pgdg.asc /usr/share/keyrings/pgdg.asc
# No default cluster is created: rehearsal.target `local` makes a throwaway cluster per rehearsal, never the
# production server. PGDG, like Debian, keeps only the newest minor of each major in its index, so the packages are
# pinned by major (in the package name) and trusted by the repository's checked key rather than by an exact version
# that would vanish at the next minor release.
# hadolint ignore=DL3008
RUN mkdir -p /etc/postgresql-common/createcluster.d \
    && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/no-main-cluster.conf \
    && apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && printf '%s\n' 'Types: deb' 'URIs: https://apt.postgresql.org/pub/repos/apt' 'Suites: bookworm-pgdg' \
        'Components: main' 'Signed-By: /usr/share/keyrings/pgdg.asc' > /etc/apt/sources.list.d/pgdg.sources \
    && apt-get update \
    && servers=() && for major in ${PG_SERVER_MAJORS}; do servers+=("postgresql-${major}"); done \
    && apt-get install -y --no-install-recommends postgresql-client-17 "${servers[@]}" \
    && rm -rf /var/lib/apt/lists/* \
    && pg_dump --version | grep -F '(PostgreSQL) 17'

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin migrate-bot
COPY --from=python-env /opt/migrate-bot /opt/migrate-bot
WORKDIR /home/migrate-bot

USER 10001
ENV PATH=/opt/migrate-bot/bin:$PATH \
    PORT=3000 \
    PYTHONUNBUFFERED=1
EXPOSE 3000

HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '3000') + '/healthz', timeout=4)"]

CMD ["migrate-bot", "serve"]
