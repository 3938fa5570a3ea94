#!/usr/bin/env bash
# Make sure PostgreSQL, Redis and RabbitMQ are there: install from Debian packages when missing, start them
# when stopped, reuse them when running. Used by scripts/test and by CI.
set -euo pipefail

log() { echo "services: $*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=""
need_pkg() {
  if ! command -v "$1" >/dev/null 2>&1; then
    if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
    log "installing $2"
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$2" >/dev/null
  fi
}

wait_for() { # name, command...
  local name=$1; shift
  for _ in $(seq 1 60); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  log "$name did not come up"; return 1
}

# PostgreSQL
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  need_pkg pg_ctlcluster postgresql
  need_pkg pg_isready postgresql-client
  version=$(ls /etc/postgresql | sort -V | tail -1)
  log "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for PostgreSQL pg_isready -q -h 127.0.0.1 -p 5432
fi
if ! psql -h 127.0.0.1 -U postgres -tAc "select 1" >/dev/null 2>&1; then
  # A fresh Debian install authenticates by peer: allow local trust for the test cluster.
  hba=$(ls /etc/postgresql/*/main/pg_hba.conf | head -1)
  log "enabling trust authentication on loopback for tests ($hba)"
  as_root sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
  as_root sed -i -E 's/^(local\s+all\s+all\s+)\S+/\1trust/' "$hba"
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main reload
fi

# Redis
if ! redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
  need_pkg redis-server redis-server
  log "starting Redis"
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for Redis redis-cli -h 127.0.0.1 -p 6379 ping
fi

# RabbitMQ (the second Celery broker)
if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
  need_pkg rabbitmq-server rabbitmq-server
  log "starting RabbitMQ"
  as_root rabbitmq-server -detached || true
  wait_for RabbitMQ bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672'
fi
log "PostgreSQL, Redis and RabbitMQ are up"
