"""Who is calling, and what they may do: bearer JWTs checked into a `Principal`.

A token is a JWT signed with HS256 (`DATAMILL_JWT_SECRET`), with RS256/ES256
(`DATAMILL_JWT_PUBLIC_KEY_FILE`), or with any RS256/ES256 key of a JWKS file
(`DATAMILL_JWT_JWKS_FILE`) named by the token's `kid`. A JWKS file is read again
when a token names a `kid` it does not hold and the file has changed, so keys
rotate without a restart. Its `exp`, `nbf`, `iss` (when configured) and `aud`
are checked with a small clock-skew allowance, and it must carry:

- `sub`: the principal (a service or a person), for the audit log;
- `tenant`: the tenant every resource of the call belongs to;
- `role`: `viewer`, `editor` or `admin`.

Anything wrong with a token is one `Unauthenticated` with one message for every
cause: the caller learns nothing that helps forge the next one. The cause is
logged on the server (never the token).
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from server.core.errors import PermissionDenied, Unauthenticated

if TYPE_CHECKING:
    from server.core.settings import Settings

log = structlog.get_logger(__name__)

#: What every credential failure says: the same for missing, malformed, expired, forged or misaddressed.
UNAUTHENTICATED_MESSAGE = "missing or invalid credentials"
#: A tenant names a directory of objects and a scope of rows: short, lower-case, no separators.
TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
MAX_SUBJECT_LENGTH = 256
MIN_SECRET_BYTES = 32
#: Algorithms a JWKS key may have: public-key ones only (a shared secret does not belong in a key set file).
JWKS_ALGORITHMS = frozenset({"RS256", "ES256"})
#: A token with an unknown `kid` re-reads a changed JWKS file at most this often.
JWKS_RELOAD_INTERVAL_SECONDS = 1.0


class Role(IntEnum):
    """Each role may do everything the roles below it may."""

    VIEWER = 1
    EDITOR = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    tenant: str
    role: Role

    def require(self, role: Role, action: str) -> None:
        """PermissionDenied (with ErrorInfo naming the action and the role needed) unless this role suffices."""
        if self.role < role:
            raise PermissionDenied(
                f"{action} needs the {role.label} role",
                reason="ROLE_REQUIRED",
                metadata={"action": action, "required_role": role.label, "role": self.role.label},
            )


#: The caller when authentication is off (`datamill dev`): one tenant, full rights.
DEV_PRINCIPAL = Principal(subject="dev", tenant="default", role=Role.ADMIN)


class AuthError(Exception):
    """Why a token was refused: for the server's log only, never for the caller."""


class TokenVerifier:
    """Checks bearer JWTs against the configured keys, issuer and audience."""

    def __init__(
        self,
        *,
        secret: bytes = b"",
        public_key: Any = None,
        jwks: JwksFile | None = None,
        issuer: str = "",
        audience: str,
        leeway_seconds: float = 30.0,
    ) -> None:
        if not secret and public_key is None and jwks is None:
            raise ValueError(
                "authentication needs DATAMILL_JWT_SECRET, DATAMILL_JWT_PUBLIC_KEY_FILE or DATAMILL_JWT_JWKS_FILE"
            )
        if secret and len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"DATAMILL_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes")
        self._keys: dict[str, Any] = {}
        if secret:
            self._keys["HS256"] = secret
        if isinstance(public_key, rsa.RSAPublicKey):
            self._keys["RS256"] = public_key
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            self._keys["ES256"] = public_key
        elif public_key is not None:
            raise ValueError("DATAMILL_JWT_PUBLIC_KEY_FILE must hold an RSA (RS256) or EC (ES256) public key")
        self._jwks = jwks
        self._issuer, self._audience, self._leeway = issuer, audience, leeway_seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier | None:
        """The verifier the settings describe, None if they configure no JWT key (API keys only);
        ValueError naming the variable if they are wrong."""
        if (
            not settings.jwt_secret.get_secret_value()
            and settings.jwt_public_key_file is None
            and settings.jwt_jwks_file is None
        ):
            return None
        public_key = None
        if settings.jwt_public_key_file is not None:
            try:
                pem = settings.jwt_public_key_file.read_bytes()
            except OSError as exc:
                raise ValueError(f"DATAMILL_JWT_PUBLIC_KEY_FILE cannot be read: {exc.strerror}") from None
            try:
                public_key = serialization.load_pem_public_key(pem)
            except ValueError:
                raise ValueError("DATAMILL_JWT_PUBLIC_KEY_FILE holds no public key in PEM") from None
        return cls(
            secret=settings.jwt_secret.get_secret_value().encode(),
            public_key=public_key,
            jwks=JwksFile(settings.jwt_jwks_file) if settings.jwt_jwks_file is not None else None,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            leeway_seconds=settings.jwt_leeway_seconds,
        )

    def verify(self, token: str) -> Principal:
        """The token's principal; AuthError saying why not."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthError(f"malformed token: {exc}") from None
        algorithm, kid = header.get("alg"), header.get("kid")
        if kid is not None and self._jwks is not None:
            key, key_algorithm = self._jwks.key(kid)
            if algorithm != key_algorithm:  # a kid's key verifies only its own algorithm
                raise AuthError(f"algorithm {algorithm!r} does not match key {kid!r} ({key_algorithm})")
        else:
            key = self._keys.get(algorithm) if isinstance(algorithm, str) else None
        # Refuses "none", and HS256 "signed" with a public key as its secret (algorithm confusion).
        if key is None or not isinstance(algorithm, str):
            raise AuthError(f"algorithm {algorithm!r} is not accepted")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer or None,
                leeway=self._leeway,
                options={"require": ["exp", "aud", "sub"] + (["iss"] if self._issuer else [])},
            )
        except jwt.PyJWTError as exc:
            raise AuthError(f"{type(exc).__name__}: {exc}") from None
        return _principal(claims)


class JwksFile:
    """The public keys of a JWKS file (`{"keys": [...]}`) by `kid`, re-read when it changes.

    Every key needs a `kid` and must be RSA (RS256) or EC P-256 (ES256); a file
    that breaks either rule is refused whole, at start-up or at a reload (a failed
    reload keeps the keys already loaded, and says why in the log).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._checked = time.monotonic()
        self._mtime, self._keys = self._load()

    def key(self, kid: Any) -> tuple[Any, str]:
        """(key, algorithm) of the kid; AuthError if the file holds no such key (after a re-read if it changed)."""
        if not isinstance(kid, str):
            raise AuthError("kid is not a string")
        found = self._keys.get(kid)
        if found is None and self._reload():
            found = self._keys.get(kid)
        if found is None:
            raise AuthError(f"kid {kid[:64]!r} is not in DATAMILL_JWT_JWKS_FILE")
        return found

    def _reload(self) -> bool:
        with self._lock:
            now = time.monotonic()
            if now - self._checked < JWKS_RELOAD_INTERVAL_SECONDS:
                return False
            self._checked = now
            try:
                if self.path.stat().st_mtime_ns == self._mtime:
                    return False
                self._mtime, self._keys = self._load()
            except ValueError as exc:
                log.warning("jwks_reload_failed", reason=str(exc))
                return False
            except OSError as exc:
                log.warning("jwks_reload_failed", reason=f"DATAMILL_JWT_JWKS_FILE cannot be read: {exc.strerror}")
                return False
            return True

    def _load(self) -> tuple[int, dict[str, tuple[Any, str]]]:
        try:
            mtime = self.path.stat().st_mtime_ns
            document = json.loads(self.path.read_bytes())
        except OSError as exc:
            raise ValueError(f"DATAMILL_JWT_JWKS_FILE cannot be read: {exc.strerror}") from None
        except ValueError:
            raise ValueError("DATAMILL_JWT_JWKS_FILE is not JSON") from None
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list) or not entries:
            raise ValueError('DATAMILL_JWT_JWKS_FILE holds no {"keys": [...]} list')
        keys: dict[str, tuple[Any, str]] = {}
        for number, entry in enumerate(entries):
            kid = entry.get("kid") if isinstance(entry, dict) else None
            if not isinstance(kid, str) or not kid:
                raise ValueError(f"DATAMILL_JWT_JWKS_FILE: key {number} has no kid")
            try:
                jwk = jwt.PyJWK(entry)
            except jwt.PyJWTError as exc:
                raise ValueError(f"DATAMILL_JWT_JWKS_FILE: key {kid!r} is not usable: {exc}") from None
            if jwk.algorithm_name not in JWKS_ALGORITHMS or entry.get("d") is not None:
                raise ValueError(f"DATAMILL_JWT_JWKS_FILE: key {kid!r} is not an RS256 or ES256 public key")
            if kid in keys:
                raise ValueError(f"DATAMILL_JWT_JWKS_FILE: kid {kid!r} appears twice")
            keys[kid] = (jwk.key, jwk.algorithm_name)
        return mtime, keys


def _principal(claims: dict[str, Any]) -> Principal:
    subject, tenant, role = claims.get("sub"), claims.get("tenant"), claims.get("role")
    if not isinstance(subject, str) or not 0 < len(subject) <= MAX_SUBJECT_LENGTH:
        raise AuthError("sub is not a string of 1 to 256 characters")
    if not isinstance(tenant, str) or not TENANT_PATTERN.fullmatch(tenant):
        raise AuthError(f"tenant does not match {TENANT_PATTERN.pattern}")
    try:
        parsed = Role[role.upper()] if isinstance(role, str) else None
    except KeyError:
        parsed = None
    if parsed is None:
        raise AuthError("role is not viewer, editor or admin")
    return Principal(subject=subject, tenant=tenant, role=parsed)


def bearer_token(metadata: Any) -> str:
    """The token of the call's `authorization: Bearer <token>` metadata; Unauthenticated if there is none."""
    values = [value for key, value in metadata or () if key == "authorization"]
    if len(values) == 1 and isinstance(values[0], str):
        scheme, _, token = values[0].partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    raise Unauthenticated(UNAUTHENTICATED_MESSAGE, reason="UNAUTHENTICATED")
