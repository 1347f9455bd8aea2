#!/usr/bin/env bash
# Load run against orders-local --backend aws on the emulators: orders/s and
# latency from wrk, then (on Ctrl-C) orders-local's own count of DynamoDB
# requests per placed order, TransactionConflicts and retries.
#
#   bench/load-aws.sh ministack|dynamodb-local [DURATION=15s] [CONNECTIONS=16]
#
# ministack: table and queue on ministack. dynamodb-local: table on DynamoDB
# Local, queue on ministack. Starts the emulators like scripts/test does.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${1:?ministack or dynamodb-local}
duration=${2:-15s}
connections=${3:-16}
users=${LOAD_USERS:-1000}
port=${LOAD_PORT:-3902}

command -v wrk >/dev/null || { apt-get install -y wrk >/dev/null || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }; }
source scripts/emulators.sh
start_emulators

export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
export AWS_ENDPOINT_URL_SQS=$MINISTACK_ENDPOINT
case "$target" in
  ministack) export AWS_ENDPOINT_URL_DYNAMODB=$MINISTACK_ENDPOINT ;;
  dynamodb-local) export AWS_ENDPOINT_URL_DYNAMODB=$DYNAMODB_LOCAL_ENDPOINT ;;
  *) echo "unknown target $target" >&2; exit 2 ;;
esac

cargo build --profile perf --bin orders-local >&2
seed=$(mktemp --suffix=.json)
python3 bench/seed-accounts.py "$users" > "$seed"

log=$(mktemp)
TABLE_NAME=load-$RANDOM SETTLE_QUEUE_NAME=load-settle-$RANDOM RUST_LOG=info,orders_local=info \
  ./target/perf/orders-local --backend aws --listen "127.0.0.1:$port" --seed "$seed" >"$log" 2>&1 &
server=$!
for _ in $(seq 300); do
  curl -sf -o /dev/null -H 'X-User-Id: load-1' "http://127.0.0.1:$port/account" && break
  sleep 0.1
done

echo "wrk: $duration, $connections connections, 1 thread, $users users, small ABAN orders, backend aws ($target)" >&2
LOAD_USERS=$users wrk -t1 -c"$connections" -d"$duration" --latency -s bench/place-orders.lua "http://127.0.0.1:$port"
sleep 2 # let settlement drain
kill -INT $server
wait $server || true
grep -E "orders placed" "$log" | sed 's/^.*INFO //'
rm -f "$seed" "$log"
