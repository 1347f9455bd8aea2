"""A JWT issuer for the deployed-stack tests: writes an RSA key (PEM, for the
tests to sign tokens with) and the OpenID discovery document and JWKS that
API Gateway's JWT authorizer fetches, then serves them on 127.0.0.1.

    python deploy/test_issuer.py DIR PORT
"""

import base64
import http.server
import json
import sys
from functools import partial
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def b64url(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def main() -> None:
    folder, port = Path(sys.argv[1]), int(sys.argv[2])
    issuer = f"http://127.0.0.1:{port}"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    numbers = key.public_key().public_numbers()
    well_known = folder / ".well-known"
    well_known.mkdir(parents=True, exist_ok=True)
    jwk = {"kty": "RSA", "kid": "test", "use": "sig", "alg": "RS256", "n": b64url(numbers.n), "e": b64url(numbers.e)}
    (well_known / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    (well_known / "openid-configuration").write_text(
        json.dumps({"issuer": issuer, "jwks_uri": f"{issuer}/.well-known/jwks.json"})
    )
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    http.server.ThreadingHTTPServer(("127.0.0.1", port), handler).serve_forever()


if __name__ == "__main__":
    main()
