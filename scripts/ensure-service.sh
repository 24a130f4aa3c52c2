#!/usr/bin/env bash
# Make sure a local service answers before `make run` / `make test` use it:
#   scripts/ensure-service.sh rabbitmq|redis
# It connects to the address from AMQP_URL / REDIS_URL (environment, then .env,
# then the default); if nothing answers on this machine it starts the installed
# server, installs it with apt-get when running as root on Debian/Ubuntu (saying so
# first), or stops with one line on how to get one.
set -euo pipefail
service=${1:?usage: ensure-service.sh rabbitmq|redis}

setting() {  # setting NAME DEFAULT: environment, then .env, then the default
  local name=$1 default=$2 value=${!1:-}
  if [ -z "$value" ] && [ -f .env ]; then
    value=$(sed -n "s/^[[:space:]]*$name=//p" .env | tail -n 1 | tr -d '"'"'"'')
  fi
  printf '%s' "${value:-$default}"
}

case $service in
  rabbitmq) url=$(setting AMQP_URL amqp://guest:guest@127.0.0.1:5672/); default_port=5672
            package=rabbitmq-server; start() { rabbitmq-server -detached >/dev/null 2>&1 || true; } ;;
  redis)    url=$(setting REDIS_URL redis://127.0.0.1:6379/0); default_port=6379
            package=redis-server
            start() { redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no >/dev/null; } ;;
  *) echo "ensure-service: unknown service $service" >&2; exit 2 ;;
esac

hostport=${url#*://}; hostport=${hostport#*@}; hostport=${hostport%%/*}
host=${hostport%%:*}; port=${hostport##*:}; [ "$port" = "$hostport" ] && port=$default_port
[ -z "$host" ] && host=127.0.0.1

answers() { timeout 2 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null; }
wait_for() {
  for _ in $(seq 1 90); do answers && return 0; sleep 1; done
  return 1
}

answers && exit 0
case $host in
  127.*|localhost|::1) ;;
  *) echo "$service at $host:$port does not answer; start it there or point ${url%%:*} settings at a running one" >&2; exit 1 ;;
esac

if ! command -v "$package" >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "$service is not installed: installing $package with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "$package" >/dev/null
  else
    echo "$service is not running and not installed; install $package (sudo apt-get install $package) or run 'docker compose up -d'" >&2
    exit 1
  fi
fi

echo "starting the local $service server"
start
if ! wait_for; then
  echo "$service did not start answering on $host:$port within 90 s; see its log (journalctl or /var/log/$service*)" >&2
  exit 1
fi
