#!/usr/bin/env bash
# Load run against orders-local (memory backend, simulated exchange):
# orders/s and latency percentiles from wrk. Installs wrk if it is missing.
#
#   bench/load.sh [DURATION=20s] [CONNECTIONS=64]
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${1:-20s}
connections=${2:-64}
users=${LOAD_USERS:-1000}
port=${LOAD_PORT:-3901}

if ! command -v wrk >/dev/null; then
  echo "installing wrk (Debian package)" >&2
  if [ "$(id -u)" = 0 ]; then apt-get install -y wrk >/dev/null || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
  else sudo apt-get install -y wrk >/dev/null; fi
fi

cargo build --profile perf --bin orders-local >&2
seed=$(mktemp --suffix=.json)
python3 bench/seed-accounts.py "$users" > "$seed"

RUST_LOG=warn ./target/perf/orders-local --listen "127.0.0.1:$port" --seed "$seed" &
server=$!
trap 'kill -INT $server 2>/dev/null; wait $server 2>/dev/null; rm -f "$seed"' EXIT
for _ in $(seq 100); do
  curl -sf -o /dev/null -H 'X-User-Id: load-1' "http://127.0.0.1:$port/account" && break
  sleep 0.1
done

echo "wrk: $duration, $connections connections, 1 thread, $users users, small ABAN orders" >&2
LOAD_USERS=$users wrk -t1 -c"$connections" -d"$duration" --latency -s bench/place-orders.lua "http://127.0.0.1:$port"
