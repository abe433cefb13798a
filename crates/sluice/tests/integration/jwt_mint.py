#!/usr/bin/env python3
"""Keys and tokens for the jwt middleware tests (jwt.rs), made with PyJWT and cryptography.

    jwt_mint.py keys DIR   writes NAME.key (private, PKCS#8) and NAME.pub.pem (public) for
                           every test key into DIR; prints {NAME: public JWK with kid NAME}
    jwt_mint.py mint       reads a JSON list of token specs on stdin; prints a JSON list of
                           the tokens, in the same order

A spec is {"alg": ..., "claims": {...}, "headers": {...}} and one of:
    "key": "DIR/NAME.key"     signed with that private key
    "secret": "..."           signed with that HMAC secret
    "attack": "none"          unsigned (alg "none")
    "attack": "hmac_with_public_key", "public_key": "DIR/NAME.pub.pem"
                              HS256 with the RSA public key's PEM as the HMAC secret: a
                              verifier that takes the algorithm from the token and uses the
                              key it has for RS256 would accept it
"""

import json
import sys
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, OKPAlgorithm, RSAAlgorithm

KEYS = {
    "rs1": (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), RSAAlgorithm),
    "rs2": (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), RSAAlgorithm),
    "es": (lambda: ec.generate_private_key(ec.SECP256R1()), ECAlgorithm),
    "es384": (lambda: ec.generate_private_key(ec.SECP384R1()), ECAlgorithm),
    "ed": (ed25519.Ed25519PrivateKey.generate, OKPAlgorithm),
}


def keys(directory):
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    jwks = {}
    for name, (generate, algorithm) in KEYS.items():
        private = generate()
        (out / f"{name}.key").write_bytes(
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        public = private.public_key()
        (out / f"{name}.pub.pem").write_bytes(
            public.public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
        )
        jwk = algorithm.to_jwk(public, as_dict=True)
        jwk.pop("key_ops", None)
        jwk.update({"kid": name, "use": "sig"})
        jwks[name] = jwk
    print(json.dumps(jwks))


class RawHMAC(HMACAlgorithm):
    """HMAC that takes any bytes as its secret, PEM public keys included (PyJWT refuses
    those, which is the defence this attack probes on the gateway)."""

    def prepare_key(self, key):
        return key if isinstance(key, bytes) else key.encode()


def mint_one(spec):
    claims, headers = spec.get("claims", {}), spec.get("headers") or None
    attack = spec.get("attack")
    if attack == "none":
        return jwt.encode(claims, None, algorithm="none", headers=headers)
    if attack == "hmac_with_public_key":
        jws = jwt.api_jws.PyJWS()
        jws.unregister_algorithm("HS256")
        jws.register_algorithm("HS256", RawHMAC(RawHMAC.SHA256))
        secret = Path(spec["public_key"]).read_bytes()
        return jws.encode(json.dumps(claims).encode(), secret, algorithm="HS256", headers=headers)
    if "secret" in spec:
        return jwt.encode(claims, spec["secret"], algorithm=spec["alg"], headers=headers)
    key = Path(spec["key"]).read_bytes()
    return jwt.encode(claims, key, algorithm=spec["alg"], headers=headers)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "keys":
        keys(sys.argv[2])
    elif len(sys.argv) == 2 and sys.argv[1] == "mint":
        print(json.dumps([mint_one(spec) for spec in json.load(sys.stdin)]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
