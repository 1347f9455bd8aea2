"""Load on a deployed stack (on ministack): seeds USERS accounts in its table,
signs a JWT for each with the test issuer's key, and writes a wrk script that
places small ABAN orders as those users.

    python bench/load-deployed.py ENDPOINT API_ID TABLE KEY_PEM ISSUER AUDIENCE USERS > orders.lua
    wrk -t1 -c8 -d10s --latency -s orders.lua "$ENDPOINT"
"""

import base64
import json
import sys
import time

import boto3
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(key, user: str, issuer: str, audience: str) -> str:
    now = int(time.time())
    header = b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "test"}).encode())
    claims = b64(json.dumps({"sub": user, "iss": issuer, "aud": audience, "iat": now, "exp": now + 3600}).encode())
    signature = key.sign(f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{claims}.{b64(signature)}"


def main() -> None:
    endpoint, api_id, table, key_pem, issuer, audience, users = sys.argv[1:8]
    key = serialization.load_pem_private_key(open(key_pem, "rb").read(), None)
    dynamodb = boto3.client(
        "dynamodb", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    )
    tokens = []
    for i in range(1, int(users) + 1):
        user = f"load-{i}"
        dynamodb.put_item(
            TableName=table,
            Item={"PK": {"S": f"ACCOUNT#{user}"}, "SK": {"S": "ACCOUNT"}, "user_id": {"S": user}, "balance_usd": {"N": "1000000000"}},
        )
        tokens.append(token(key, user, issuer, audience))
    print("local tokens = {" + ",".join(f'"{t}"' for t in tokens) + "}")
    # ministack serves the stage under this path.
    print(f'local path = "/_aws/execute-api/{api_id}/$default/orders"')
    print(
        """request = function()
  local cents = math.random(1, 150)
  local body = string.format('{"coin":"ABAN","amount":"%d.%02d"}', math.floor(cents / 100), cents % 100)
  return wrk.format("POST", path, { ["Authorization"] = "Bearer " .. tokens[math.random(1, #tokens)],
    ["Content-Type"] = "application/json" }, body)
end"""
    )


if __name__ == "__main__":
    main()
