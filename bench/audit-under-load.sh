#!/usr/bin/env bash
# The live audit under load: orders-local on ministack's DynamoDB and SQS,
# 16 clients placing small ABAN orders for 90 s, `orders-admin audit` eight
# times during the load (a scan torn by writes in flight must not be
# reported), then one balance written by hand (which must be named).
#
#   bench/audit-under-load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/emulators.sh
start_emulators >&2
cargo build --locked -p orders-local --bins >&2
export AWS_ENDPOINT_URL=$MINISTACK_ENDPOINT AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 \
  AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test TABLE_NAME=audit-demo SETTLE_QUEUE_NAME=audit-demo-settle
seed="$emulator_run_dir/audit-seed.json"
python3 -c "import json; print(json.dumps({'accounts': [{'user_id': f'u{i}', 'balance_usd': '1000'} for i in range(40)]}))" >"$seed"
target/debug/orders-local --backend aws --listen 127.0.0.1:3901 --seed "$seed" >"$emulator_run_dir/audit-local.log" 2>&1 &
emulator_pids+=($!)
wait_for_http http://127.0.0.1:3901/openapi.json orders-local "$emulator_run_dir/audit-local.log"
python3 bench/audit-load.py http://127.0.0.1:3901 90 40 &
load=$!
sleep 30 # a table of several scan pages
for _ in 1 2 3 4 5 6 7 8; do
  echo '$ orders-admin audit    # during the load'
  target/debug/orders-admin audit && echo "exit 0" || echo "exit $?"
done
wait $load
sleep 3
echo '# a balance written by hand: u7 gets 5000'
.emulators/ministack-venv/bin/python - <<'PY'
import os, boto3
table = boto3.resource("dynamodb", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).Table("audit-demo")
table.update_item(Key={"PK": "ACCOUNT#u7", "SK": "ACCOUNT"}, UpdateExpression="SET balance_usd = :b",
                  ExpressionAttributeValues={":b": 5000})
PY
echo '$ orders-admin audit    # at rest'
target/debug/orders-admin audit && echo "exit 0" || echo "exit $?"
