"""Tokens from an external identity provider: RS256 with the provider's public
key (PEM), signed here with the openssl command line like a provider would."""

import os
import shutil
import subprocess
import tempfile
import time

from harness import Node, b64url, expect, jwt_sign, uid


def _rs256(priv, header, payload):
    import json
    signing_input = b64url(json.dumps(header, separators=(",", ":")).encode()) + "." + \
        b64url(json.dumps(payload, separators=(",", ":")).encode())
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", priv], input=signing_input.encode(),
                         stdout=subprocess.PIPE, check=True).stdout
    return signing_input + "." + b64url(sig)


def test_rs256_pem_and_algorithm_confusion():
    keys = tempfile.mkdtemp(prefix="circa-idp-")
    try:
        _rs256_checks(keys)
    finally:
        shutil.rmtree(keys, ignore_errors=True)   # the IdP's keys: never left behind


def _rs256_checks(keys):
    priv, pub = os.path.join(keys, "idp.key"), os.path.join(keys, "idp.pub")
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", priv],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["openssl", "pkey", "-in", priv, "-pubout", "-out", pub], check=True)
    n = Node(name="idp", config={"jwt": {"alg": "RS256", "public_key_file": pub, "issuer": "https://idp.test",
                                         "audience": "circa"}})
    try:
        now = int(time.time())
        claims = {"sub": uid(), "role": "librarian", "iss": "https://idp.test", "aud": "circa",
                  "iat": now, "exp": now + 300}
        good = _rs256(priv, {"alg": "RS256", "typ": "JWT"}, claims)
        expect(n.request("GET", "/v1/resources", token=good), 200)
        # the classic confusion: an HS256 token whose HMAC key is the public key PEM
        with open(pub, "rb") as f:
            forged = jwt_sign({"alg": "HS256", "typ": "JWT"}, claims, f.read())
        expect(n.request("GET", "/v1/resources", token=forged), 401, "unauthorized")
        # wrong issuer, and a token signed by another key
        expect(n.request("GET", "/v1/resources",
                         token=_rs256(priv, {"alg": "RS256", "typ": "JWT"}, dict(claims, iss="https://evil.test"))),
               401, "unauthorized")
        other = os.path.join(keys, "other.key")
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", other],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        expect(n.request("GET", "/v1/resources", token=_rs256(other, {"alg": "RS256", "typ": "JWT"}, claims)),
               401, "unauthorized")
        # login cannot mint tokens the node would not accept
        expect(n.request("POST", "/v1/auth/login", {"email": "x@example.org", "password": "whatever1"}),
               403, "forbidden")
    finally:
        n.cleanup()
