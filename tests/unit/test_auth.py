"""Bearer-token checks (server/core/auth.py): every way a token can be wrong, for HS256, RS256 and ES256."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from datamill.v1 import dataset_service_pb2, job_service_pb2
from server.api.auth import REQUIRED_ROLES
from server.core.auth import (
    UNAUTHENTICATED_MESSAGE,
    AuthError,
    Principal,
    Role,
    TokenVerifier,
    bearer_token,
)
from server.core.errors import PermissionDenied, Unauthenticated
from server.core.settings import Settings

SECRET = b"s" * 32
AUDIENCE = "datamill"


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"sub": "svc-a", "tenant": "acme", "role": "editor", "aud": AUDIENCE, "exp": now + 60}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs256(**overrides: Any) -> str:
    return jwt.encode(claims(**overrides), SECRET, algorithm="HS256")


@pytest.fixture
def verifier() -> TokenVerifier:
    return TokenVerifier(secret=SECRET, audience=AUDIENCE, leeway_seconds=5)


def test_a_valid_token_gives_its_principal(verifier: TokenVerifier) -> None:
    assert verifier.verify(hs256()) == Principal("svc-a", "acme", Role.EDITOR)
    assert verifier.verify(hs256(role="ADMIN")).role is Role.ADMIN


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(lambda: hs256(exp=int(time.time()) - 60), id="expired"),
        pytest.param(lambda: hs256(nbf=int(time.time()) + 60), id="not-yet-valid"),
        pytest.param(lambda: hs256(aud="someone-else"), id="wrong-audience"),
        pytest.param(lambda: hs256(aud=None), id="no-audience"),
        pytest.param(lambda: hs256(exp=None), id="no-expiry"),
        pytest.param(lambda: hs256(sub=None), id="no-subject"),
        pytest.param(lambda: jwt.encode(claims(), b"x" * 32, algorithm="HS256"), id="wrong-secret"),
        pytest.param(lambda: jwt.encode(claims(), "", algorithm="none"), id="alg-none"),
        pytest.param(lambda: hs256()[:-3] + "abc", id="tampered-signature"),
        pytest.param(lambda: "not.a.token", id="garbage"),
        pytest.param(lambda: hs256(tenant=None), id="no-tenant"),
        pytest.param(lambda: hs256(tenant="../other"), id="tenant-path"),
        pytest.param(lambda: hs256(tenant="a'; DROP TABLE jobs; --"), id="tenant-sql"),
        pytest.param(lambda: hs256(tenant="Acme"), id="tenant-upper-case"),
        pytest.param(lambda: hs256(tenant="t" * 10_000), id="tenant-10k"),
        pytest.param(lambda: hs256(tenant="тенант"), id="tenant-unicode"),
        pytest.param(lambda: hs256(role="owner"), id="unknown-role"),
        pytest.param(lambda: hs256(role=3), id="role-not-a-string"),
        pytest.param(lambda: hs256(sub="x" * 257), id="subject-too-long"),
    ],
)
def test_a_wrong_token_is_refused(verifier: TokenVerifier, token: Any) -> None:
    with pytest.raises(AuthError):
        verifier.verify(token())


def test_the_clock_skew_allowance_is_small(verifier: TokenVerifier) -> None:
    assert verifier.verify(hs256(exp=int(time.time()) - 2)).tenant == "acme"  # within 5 s
    with pytest.raises(AuthError):
        verifier.verify(hs256(exp=int(time.time()) - 10))


def test_the_issuer_is_checked_when_configured() -> None:
    verifier = TokenVerifier(secret=SECRET, audience=AUDIENCE, issuer="https://idp.example")
    assert verifier.verify(hs256(iss="https://idp.example")).subject == "svc-a"
    for iss in ("https://evil.example", None):
        with pytest.raises(AuthError):
            verifier.verify(hs256(iss=iss))


def _hs256_signed_with(secret: bytes) -> str:
    """An HS256 token signed by hand (PyJWT refuses a PEM as an HMAC secret, as it should)."""
    header = base64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = base64url(json.dumps(claims(role="admin")).encode())
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{base64url(signature)}"


def base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _pem(private: Any) -> bytes:
    return bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


@pytest.mark.parametrize(
    ("algorithm", "make_key"),
    [
        ("RS256", lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("ES256", lambda: ec.generate_private_key(ec.SECP256R1())),
    ],
)
def test_public_key_tokens_from_a_pem_file(tmp_path: Path, algorithm: str, make_key: Any) -> None:
    private, other = make_key(), make_key()
    pem_file = tmp_path / "public.pem"
    pem_file.write_bytes(_pem(private))
    settings = Settings(database_url="x", redis_url="redis://x", jwt_public_key_file=pem_file)
    verifier = TokenVerifier.from_settings(settings)
    assert verifier is not None

    assert verifier.verify(jwt.encode(claims(role="viewer"), private, algorithm=algorithm)).role is Role.VIEWER
    with pytest.raises(AuthError):  # signed by another key
        verifier.verify(jwt.encode(claims(), other, algorithm=algorithm))
    with pytest.raises(AuthError):  # algorithm confusion: HS256 "signed" with the public key as its secret
        verifier.verify(_hs256_signed_with(pem_file.read_bytes()))
    with pytest.raises(AuthError):  # no HS256 secret is configured at all
        verifier.verify(hs256())


def test_a_verifier_needs_a_key_and_a_long_enough_secret(tmp_path: Path) -> None:
    assert TokenVerifier.from_settings(Settings(database_url="x", redis_url="redis://x")) is None  # API keys only
    with pytest.raises(ValueError, match="DATAMILL_JWT_SECRET, DATAMILL_JWT_PUBLIC_KEY_FILE or DATAMILL_JWT_JWKS_FILE"):
        TokenVerifier(audience=AUDIENCE)
    with pytest.raises(ValueError, match="at least 32 bytes"):
        TokenVerifier.from_settings(Settings(database_url="x", redis_url="redis://x", jwt_secret="short"))
    not_a_key = tmp_path / "key.pem"
    not_a_key.write_text("hello")
    with pytest.raises(ValueError, match="no public key"):
        TokenVerifier.from_settings(Settings(database_url="x", redis_url="redis://x", jwt_public_key_file=not_a_key))
    with pytest.raises(ValueError, match="cannot be read"):
        TokenVerifier.from_settings(
            Settings(database_url="x", redis_url="redis://x", jwt_public_key_file=tmp_path / "missing.pem")
        )


@pytest.mark.parametrize(
    "metadata",
    [(), [("authorization", "Basic abc")], [("authorization", "Bearer ")], [("authorization", "Bearer a")] * 2],
)
def test_a_call_without_exactly_one_bearer_token_is_unauthenticated(metadata: Any) -> None:
    with pytest.raises(Unauthenticated) as exc:
        bearer_token(metadata)
    assert exc.value.message == UNAUTHENTICATED_MESSAGE
    assert exc.value.metadata == {}  # nothing that tells the caller why


def test_bearer_token_reads_the_authorization_metadata() -> None:
    assert bearer_token([("x-request-id", "r"), ("authorization", "bearer  tok ")]) == "tok"


def test_roles_are_ordered_and_a_denial_names_what_is_needed() -> None:
    editor = Principal("svc", "acme", Role.EDITOR)
    editor.require(Role.VIEWER, "GetJob")
    editor.require(Role.EDITOR, "Generate")
    with pytest.raises(PermissionDenied) as exc:
        editor.require(Role.ADMIN, "DeleteDataset")
    assert exc.value.reason == "ROLE_REQUIRED"
    assert exc.value.metadata == {"action": "DeleteDataset", "required_role": "admin", "role": "editor"}


def test_every_rpc_has_a_required_role() -> None:
    methods = {
        f"/{service.full_name}/{method.name}"
        for module in (job_service_pb2, dataset_service_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert methods == set(REQUIRED_ROLES)


def _jwk(private: Any, kid: str) -> dict[str, Any]:
    algorithm = jwt.algorithms.RSAAlgorithm if isinstance(private, rsa.RSAPrivateKey) else jwt.algorithms.ECAlgorithm
    return {**json.loads(algorithm.to_jwk(private.public_key())), "kid": kid}


def test_jwks_keys_are_chosen_by_kid_and_rotate_without_a_restart(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr("server.core.auth.JWKS_RELOAD_INTERVAL_SECONDS", 0.0)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key, rotated = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [_jwk(rsa_key, "r1"), _jwk(ec_key, "e1")]}))
    verifier = TokenVerifier.from_settings(Settings(database_url="x", redis_url="redis://x", jwt_jwks_file=jwks))
    assert verifier is not None

    def token(private: Any, algorithm: str, kid: str | None) -> str:
        return jwt.encode(claims(role="editor"), private, algorithm=algorithm, headers={"kid": kid} if kid else None)

    assert verifier.verify(token(rsa_key, "RS256", "r1")).role is Role.EDITOR
    assert verifier.verify(token(ec_key, "ES256", "e1")).tenant == "acme"
    refused = [
        token(ec_key, "ES256", "r1"),  # the kid's key is RSA: another algorithm is not tried with it
        token(rsa_key, "RS256", "e1"),
        token(ec_key, "ES256", None),  # no kid, and no PEM key is configured
        token(rotated, "ES256", "e2"),  # not (yet) in the file
        token(rotated, "ES256", "e1"),  # right kid, wrong key
        jwt.encode(claims(), "", algorithm="none", headers={"kid": "e1"}),
    ]
    for bad in refused:
        with pytest.raises(AuthError):
            verifier.verify(bad)

    # The identity provider adds a key: the first token naming it makes the verifier read the file again.
    jwks.write_text(json.dumps({"keys": [_jwk(rsa_key, "r1"), _jwk(ec_key, "e1"), _jwk(rotated, "e2")]}))
    os.utime(jwks, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert verifier.verify(token(rotated, "ES256", "e2")).role is Role.EDITOR
    # A broken rewrite keeps the keys already loaded.
    jwks.write_text("{not json")
    os.utime(jwks, ns=(time.time_ns() + 2 * 10**9, time.time_ns() + 2 * 10**9))
    with pytest.raises(AuthError):
        verifier.verify(token(rsa_key, "RS256", "r9"))
    assert verifier.verify(token(rsa_key, "RS256", "r1")).role is Role.EDITOR


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("[]", "no"),
        ('{"keys": []}', "no"),
        ("{oops", "not JSON"),
        ('{"keys": [{"kty": "RSA"}]}', "has no kid"),
        ('{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}', "not an RS256 or ES256 public key"),
        ('{"keys": [{"kty": "RSA", "kid": "x", "n": "AQAB"}]}', "not usable"),
    ],
)
def test_a_bad_jwks_file_is_refused_at_start_up(tmp_path: Path, document: str, message: str) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(document)
    with pytest.raises(ValueError, match=message):
        TokenVerifier.from_settings(Settings(database_url="x", redis_url="redis://x", jwt_jwks_file=jwks))
    with pytest.raises(ValueError, match="cannot be read"):
        TokenVerifier.from_settings(
            Settings(database_url="x", redis_url="redis://x", jwt_jwks_file=tmp_path / "missing.json")
        )


def test_a_jwks_file_refuses_private_keys_and_duplicate_kids(tmp_path: Path) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private)) | {"kid": "p"}]}))
    with pytest.raises(ValueError, match="not an RS256 or ES256 public key"):
        TokenVerifier.from_settings(Settings(database_url="x", redis_url="redis://x", jwt_jwks_file=jwks))
    jwks.write_text(json.dumps({"keys": [_jwk(private, "k"), _jwk(private, "k")]}))
    with pytest.raises(ValueError, match="appears twice"):
        TokenVerifier.from_settings(Settings(database_url="x", redis_url="redis://x", jwt_jwks_file=jwks))
