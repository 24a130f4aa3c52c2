#!/usr/bin/env bash
# Make sure a local service answers before `make run` / `make test` use it:
#   scripts/ensure-service.sh rabbitmq|redis|postgresql
# It connects to the address from AMQP_URL / REDIS_URL / POSTGRES_TEST_URL (environment,
# then .env, then the default; PostgreSQL is what the ledger's integration tests use); if nothing answers on this machine it starts the installed
# server (with sudo when a system install needs root and you are not root), installs
# it with apt-get when running as root on Debian/Ubuntu (saying so first and showing
# apt's progress), or stops with one line on how to get one.
#   scripts/ensure-service.sh rabbitmq-management
# enables the management plugin of the local RabbitMQ and prints where the UI is, or
# one line on why it is not enabled; it never fails `make run`.
#   scripts/ensure-service.sh chromium
# makes sure a Chromium is installed for the console's browser test (Playwright drives
# the system one): as root on Debian/Ubuntu apt-get installs it, else one line says how.
#   scripts/ensure-service.sh locate rabbitmq|redis|postgresql
# prints the path of the installed server (PostgreSQL: Debian's pg_ctlcluster, which
# starts its cluster), or fails when it is not installed.
#
# Debian installs rabbitmq-server and rabbitmq-plugins in /usr/sbin, which a non-root
# PATH lacks; so besides PATH the sbin directories are searched
# (ENSURE_SERVICE_SBIN_DIRS replaces their list).
set -euo pipefail
usage="usage: ensure-service.sh rabbitmq|redis|postgresql|rabbitmq-management|chromium|locate SERVICE"
service=${1:?$usage}
sbin_dirs=${ENSURE_SERVICE_SBIN_DIRS-/usr/local/sbin /usr/sbin /sbin /usr/lib/rabbitmq/bin}

setting() {  # setting NAME DEFAULT: environment, then .env, then the default
  local name=$1 default=$2 value=${!1:-}
  if [ -z "$value" ] && [ -f .env ]; then
    value=$(sed -n "s/^[[:space:]]*$name=//p" .env | tail -n 1 | tr -d '"'"'"'')
  fi
  printf '%s' "${value:-$default}"
}

find_bin() {  # find_bin NAME: its path, from PATH or the sbin directories
  local dir
  if command -v "$1" 2>/dev/null; then return 0; fi
  for dir in $sbin_dirs; do
    if [ -x "$dir/$1" ]; then printf '%s\n' "$dir/$1"; return 0; fi
  done
  return 1
}

needs_sudo() {  # needs_sudo PATH: a system RabbitMQ (Debian's runs only as root or rabbitmq)
  # or PostgreSQL cluster (root or postgres) while not root
  [ "$(id -u)" != 0 ] && case $1 in
    /usr/*/rabbitmq*|/sbin/rabbitmq*) true ;;
    */pg_ctlcluster) [ "$(id -un)" != postgres ] ;;
    *) false ;;
  esac
}

one_line() {  # the first line that says what went wrong, without timestamps, at most 200 characters
  local line
  line=$(grep -m 1 -iE 'error|denied|eacces|not permitted|password|only root' <<<"$1" || grep -m 1 . <<<"$1" || true)
  line=$(sed -E 's/^[0-9:.]+ \[[a-z]+\] //' <<<"$line")
  printf '%s' "${line:0:200}"
}

if [ "$service" = chromium ]; then  # a program, not a server: installed is enough
  if [ -n "${CHROMIUM:-}" ] && [ -x "$CHROMIUM" ]; then exit 0; fi
  command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 && exit 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "chromium is not installed: installing it with apt-get for the console's browser test (package lists, then a download that can take a few minutes)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q 2>&1 | sed -u 's/^/  /'
    apt-get install -y -q chromium 2>&1 |
      sed -u -E '/^(Selecting previously unselected|Preparing to unpack|Unpacking|\(Reading database)/d; s/^/  /'
    command -v chromium >/dev/null 2>&1 && exit 0
    echo "apt-get installed no chromium command; install a Chromium yourself and set CHROMIUM to its path" >&2
    exit 1
  fi
  echo "chromium is not installed; install it (sudo apt-get install -y chromium), or set CHROMIUM to the path of a Chromium or Chrome" >&2
  exit 1
fi

case $service in
  locate) target=${2:?$usage}
          case $target in rabbitmq) find_bin rabbitmq-server ;; redis) find_bin redis-server ;;
            postgresql) find_bin pg_ctlcluster ;;
            *) echo "ensure-service: unknown service $target" >&2; exit 2 ;; esac
          exit ;;
  rabbitmq|rabbitmq-management)
            url=$(setting AMQP_URL amqp://guest:guest@127.0.0.1:5672/); default_port=5672
            package=rabbitmq-server ;;
  redis)    url=$(setting REDIS_URL redis://127.0.0.1:6379/0); default_port=6379
            package=redis-server ;;
  postgresql) url=$(setting POSTGRES_TEST_URL postgresql://postgres@127.0.0.1:5432/postgres)
            default_port=5432; package=postgresql; binary=pg_ctlcluster ;;
  *) echo "ensure-service: unknown service $service" >&2; exit 2 ;;
esac

hostport=${url#*://}; hostport=${hostport#*@}; hostport=${hostport%%/*}
host=${hostport%%:*}; port=${hostport##*:}; [ "$port" = "$hostport" ] && port=$default_port
[ -z "$host" ] && host=127.0.0.1
local_host() { case $host in 127.*|localhost|::1) true ;; *) false ;; esac; }

answers() { timeout 2 bash -c "exec 3<>/dev/tcp/$host/${1:-$port}" 2>/dev/null; }
wait_for() {  # wait_for SECONDS [PORT]
  for _ in $(seq 1 "$1"); do answers "${2:-}" && return 0; sleep 1; done
  return 1
}

if [ "$service" = rabbitmq-management ]; then
  ui="RabbitMQ management UI: http://127.0.0.1:15672 (guest/guest)"
  local_host || exit 0  # a remote broker's UI is wherever its operator put it
  if answers 15672; then echo "$ui"; exit 0; fi
  if ! plugins=$(find_bin rabbitmq-plugins); then
    echo "RabbitMQ management UI not enabled: rabbitmq-plugins not found (a broker in Docker: use the rabbitmq:*-management image)"
    exit 0
  fi
  run=("$plugins" -q enable rabbitmq_management)
  if needs_sudo "$plugins"; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "RabbitMQ management UI not enabled: only root can enable it (as root: rabbitmq-plugins enable rabbitmq_management)"
      exit 0
    fi
    run=(sudo -n "${run[@]}")  # -n never asks for a password: the UI is not worth a prompt
  fi
  if ! output=$("${run[@]}" 2>&1); then
    echo "RabbitMQ management UI not enabled: $(one_line "$output"); enable it with: sudo rabbitmq-plugins enable rabbitmq_management"
  elif wait_for 15 15672; then
    echo "$ui"
  else
    echo "RabbitMQ management plugin enabled, but nothing answers on 127.0.0.1:15672"
  fi
  exit 0
fi

answers && exit 0
if ! local_host; then
  echo "$service at $host:$port does not answer; start it there or point its URL setting at a running one" >&2
  exit 1
fi

binary=${binary:-$package}
if ! server=$(find_bin "$binary"); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "$service is not installed: installing $package with apt-get (package lists, then a download that can take a few minutes)"
    export DEBIAN_FRONTEND=noninteractive
    # apt's own lines show the progress; dpkg's per-package unpacking chatter is dropped
    apt-get update -q 2>&1 | sed -u 's/^/  /'
    apt-get install -y -q "$package" 2>&1 |
      sed -u -E '/^(Selecting previously unselected|Preparing to unpack|Unpacking|\(Reading database)/d; s/^/  /'
    answers && exit 0  # the package's own start-up was enough
    server=$(find_bin "$binary")
  else
    case $service in
      postgresql) other="or point POSTGRES_TEST_URL at a running PostgreSQL" ;;
      *) other="or run 'docker compose up -d'" ;;
    esac
    echo "$service is not running and not installed; install it (sudo apt-get install -y $package) $other" >&2
    exit 1
  fi
fi

if needs_sudo "$server"; then
  if ! command -v sudo >/dev/null 2>&1; then
    how="$server -detached"; [ "$service" = postgresql ] && how="$server --skip-systemctl-redirect <version> main start"
    echo "$service is installed ($server) but not running, and only root can start it: as root, run $how" >&2
    exit 1
  fi
  echo "starting the local $service server with sudo ($server; sudo may ask for your password)"
  as_root=(sudo)
else
  echo "starting the local $service server"
  as_root=()
fi
# rabbitmq-server -detached can fail while the server starts anyway: then the wait decides
lenient=false
case $service in
  rabbitmq)
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
      start=("${as_root[@]}" systemctl start rabbitmq-server)
    else
      start=("${as_root[@]}" "$server" -detached)
      if [ ${#as_root[@]} -eq 0 ]; then lenient=true; fi
    fi ;;
  postgresql)
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
      start=("${as_root[@]}" systemctl start postgresql)
    else
      # Debian's clusters live in /etc/postgresql/<version>/<name>: the newest version's main
      version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
      if [ -z "$version" ]; then
        echo "postgresql is installed but has no cluster in /etc/postgresql; create one: sudo pg_createcluster --start <version> main" >&2
        exit 1
      fi
      start=("${as_root[@]}" "$server" --skip-systemctl-redirect "$version" main start)
    fi ;;
  redis)
    start=("${as_root[@]}" "$server" --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no) ;;
esac
if ! output=$("${start[@]}" 2>&1) && [ $lenient = false ]; then
  echo "could not start $service: $(one_line "$output")${as_root:+; start it yourself: sudo ${start[*]:1}}" >&2
  exit 1
fi
if ! wait_for 90; then
  echo "$service did not start answering on $host:$port within 90 s; see its log (journalctl or /var/log/$service*)" >&2
  exit 1
fi
