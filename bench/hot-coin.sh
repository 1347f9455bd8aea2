#!/usr/bin/env bash
# The hot-coin load tool (bench/src/main.rs): many writers sharing nothing
# placing small orders of one coin. On the contention model of DynamoDB in
# virtual time (default), or on the emulators, which this starts like
# scripts/test does.
#
#   bench/hot-coin.sh [--target model|dynamodb-local|ministack] [--writers 1,8,64,256] [--seconds 5] [--design both] [--trickle 30]
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ " $* " == *" dynamodb-local"* || " $* " == *" ministack"* ]]; then
  source scripts/emulators.sh
  start_emulators
fi
cargo run --profile perf --locked -p hot-coin-bench -- "$@"
