# Installs the deployment tools into .emulators/tools-venv (git-ignored), from
# PyPI: aws-sam-cli (brings cfn-lint; `sam validate --lint` needs no
# credentials) and cargo-lambda (a wheel that brings zig). Sourced by
# scripts/test; puts them on PATH.

AWS_SAM_CLI_VERSION=1.170.0
CARGO_LAMBDA_VERSION=1.9.2
SCHEMATHESIS_VERSION=4.32.5
OPENAPI_SPEC_VALIDATOR_VERSION=0.9.0

install_tools() {
  local venv
  venv="$(pwd)/.emulators/tools-venv"
  if [ ! -x "$venv/bin/sam" ] || [ ! -x "$venv/bin/cargo-lambda" ]; then
    echo "installing aws-sam-cli==$AWS_SAM_CLI_VERSION and cargo-lambda==$CARGO_LAMBDA_VERSION (PyPI)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
      "aws-sam-cli==$AWS_SAM_CLI_VERSION" "cargo-lambda==$CARGO_LAMBDA_VERSION" >&2
  fi
  export PATH="$venv/bin:$PATH"
  export SAM_CLI_TELEMETRY=0
}

# schemathesis (PyPI), the API fuzzer, and openapi-spec-validator, which
# holds openapi.yaml to the OpenAPI 3.1 schema, in a venv of their own: their
# pins and the SAM CLI's need not agree.
install_schemathesis() {
  local venv
  venv="$(pwd)/.emulators/schemathesis-venv"
  if [ ! -x "$venv/bin/schemathesis" ] || [ ! -x "$venv/bin/openapi-spec-validator" ]; then
    echo "installing schemathesis==$SCHEMATHESIS_VERSION and openapi-spec-validator==$OPENAPI_SPEC_VALIDATOR_VERSION (PyPI)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" \
      "openapi-spec-validator==$OPENAPI_SPEC_VALIDATOR_VERSION" >&2
  fi
}
