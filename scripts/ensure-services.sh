#!/usr/bin/env bash
# Make sure PostgreSQL (127.0.0.1:$PGPORT, default 5432: user postgres, no password) and Redis
# (127.0.0.1:$REDIS_PORT, default 6379) answer, for `make test` and `make demo`.
#
# 1. Both answer: nothing is done (no apt, no sudo): services in containers, Homebrew or CI are used as they are.
# 2. Missing programs are installed from Debian's packages only where apt-get exists (as root, or with sudo).
# 3. Down: Redis is started from redis-server; PostgreSQL gets a throwaway cluster of its own under
#    $SERVICES_DIR (default .services/ in the repository) with its own pg_hba.conf (trust on loopback only).
#    The system PostgreSQL's pg_hba.conf is never edited.
# 4. Without apt and without the programs: says what to start and how (Homebrew, containers) and exits 1.
# Stop what it started: `pg_ctl -D .services/pg stop` and `redis-cli -p 6379 shutdown nosave`.
set -euo pipefail

PGPORT=${PGPORT:-5432}
REDIS_PORT=${REDIS_PORT:-6379}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SERVICES_DIR=${SERVICES_DIR:-$ROOT/.services}

say() { printf 'ensure-services: %s\n' "$*" >&2; }

redis_up() {
  # PING over bash's /dev/tcp, so no redis-cli is needed to find out
  local reply=""
  { exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT"; } 2>/dev/null || return 1
  printf 'PING\r\n' >&3
  IFS= read -r -t 3 reply <&3 || true
  exec 3>&- 3<&-
  [ "${reply%$'\r'}" = "+PONG" ]
}
pg_listening() { { exec 4<>"/dev/tcp/127.0.0.1/$PGPORT"; } 2>/dev/null && { exec 4>&- 4<&-; return 0; }; return 1; }
pg_trusts() {
  command -v psql >/dev/null 2>&1 &&
    PGCONNECT_TIMEOUT=3 psql -w -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1
}

if pg_trusts && redis_up; then
  say "PostgreSQL (127.0.0.1:$PGPORT) and Redis (127.0.0.1:$REDIS_PORT) answer; nothing to do"
  exit 0
fi

have_apt() { command -v apt-get >/dev/null 2>&1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  say "installing $* from Debian's packages"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

how_to_start() {
  cat >&2 <<EOF
ensure-services: $1
  The tests and the demo need PostgreSQL on 127.0.0.1:$PGPORT (user postgres, no password on loopback)
  and Redis on 127.0.0.1:$REDIS_PORT. Start them, then run this again:
    macOS (Homebrew):  brew install postgresql@17 redis && brew services start redis
                       initdb -A trust -U postgres -D .services/pg && pg_ctl -D .services/pg -l .services/pg.log start
                       (or: brew services start postgresql@17, then: createuser -s postgres)
    containers:        docker run -d --name mb-pg -p 127.0.0.1:$PGPORT:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:17
                       docker run -d --name mb-redis -p 127.0.0.1:$REDIS_PORT:6379 redis:7
  Elsewhere, point the tests at your own servers: TEST_DATABASE_URL=postgresql://USER@HOST:PORT/postgres
  and TEST_REDIS_URL=redis://HOST:PORT/0.
EOF
  exit 1
}

# ---- Redis ----------------------------------------------------------------------------------------------------
if ! redis_up; then
  if ! command -v redis-server >/dev/null 2>&1; then
    have_apt || how_to_start "Redis does not answer on 127.0.0.1:$REDIS_PORT and redis-server is not installed"
    apt_install redis-server
  fi
  say "starting Redis on 127.0.0.1:$REDIS_PORT (data in $SERVICES_DIR/redis)"
  mkdir -p "$SERVICES_DIR/redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$SERVICES_DIR/redis" --logfile "$SERVICES_DIR/redis/redis.log" --pidfile "$SERVICES_DIR/redis/redis.pid"
  for _ in $(seq 1 60); do redis_up && break; sleep 0.5; done
  redis_up || { say "Redis did not come up: see $SERVICES_DIR/redis/redis.log"; exit 1; }
fi

# ---- PostgreSQL -----------------------------------------------------------------------------------------------
pg_bin() {
  # initdb/pg_ctl: on PATH, else the newest Debian server (they are not on PATH there)
  local dir
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v initdb)"
    return 0
  fi
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && { echo "$dir"; return 0; }
  done
  return 1
}

if ! pg_trusts && ! command -v psql >/dev/null 2>&1; then
  have_apt || how_to_start "psql (PostgreSQL's client) is not installed, so PostgreSQL cannot be checked"
  apt_install postgresql-client
fi
if ! pg_trusts; then
  if pg_listening; then
    # Someone else's server: we do not change how it authenticates.
    how_to_start "a PostgreSQL on 127.0.0.1:$PGPORT does not let user postgres in without a password (this script
  never edits a server's pg_hba.conf). Stop it to get a throwaway cluster here, or point TEST_DATABASE_URL at it"
  fi
  if ! bin=$(pg_bin); then
    have_apt || how_to_start "PostgreSQL does not answer on 127.0.0.1:$PGPORT and its programs are not installed"
    apt_install postgresql
    bin=$(pg_bin) || { say "no initdb/pg_ctl found after installing PostgreSQL"; exit 1; }
    if ! pg_trusts && pg_listening && command -v pg_ctlcluster >/dev/null 2>&1; then
      # The package just created and started a cluster of its own that asks for passwords on TCP: stop that
      # (it is new, nothing uses it) rather than edit its pg_hba.conf, and start the throwaway one below.
      for version in $(ls /etc/postgresql 2>/dev/null); do
        say "stopping the PostgreSQL $version cluster the package just started (its pg_hba.conf is left as it is)"
        as_root pg_ctlcluster --skip-systemctl-redirect "$version" main stop || true
      done
    fi
  fi
  if ! pg_trusts; then
    data=$SERVICES_DIR/pg
    run_pg() { "$@"; }
    if [ "$(id -u)" = 0 ]; then
      # initdb refuses to run as root: the cluster belongs to the postgres account (Debian's packages create it)
      id postgres >/dev/null 2>&1 || { say "running as root and there is no 'postgres' account to own the cluster"; exit 1; }
      run_pg() { runuser -u postgres -- "$@"; }
    fi
    mkdir -p "$SERVICES_DIR"
    if [ ! -s "$data/PG_VERSION" ]; then
      say "creating a throwaway PostgreSQL cluster in $data (trust on loopback, its own pg_hba.conf)"
      mkdir -p "$data"
      [ "$(id -u)" = 0 ] && chown postgres "$data" "$SERVICES_DIR"
      chmod 700 "$data"
      run_pg test -w "$data" || { say "the account that runs PostgreSQL cannot reach $data (a parent directory is
  private): set SERVICES_DIR to a directory it can reach, e.g. /tmp/migrate-bot-services"; exit 1; }
      run_pg "$bin/initdb" -D "$data" -U postgres -A trust --no-sync >/dev/null
      printf 'local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n' \
        | run_pg tee "$data/pg_hba.conf" >/dev/null
    fi
    say "starting it on 127.0.0.1:$PGPORT (log: $data.log)"
    run_pg "$bin/pg_ctl" -D "$data" -l "$data.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $data -c fsync=off" start >/dev/null
    pg_trusts || { say "PostgreSQL did not come up on 127.0.0.1:$PGPORT: see $data.log"; exit 1; }
  fi
fi
say "PostgreSQL (127.0.0.1:$PGPORT) and Redis (127.0.0.1:$REDIS_PORT) answer"
