"""Who is calling, and what they may do: bearer JWTs checked into a `Principal`.

A token is a JWT signed with HS256 (`DATAMILL_JWT_SECRET`) or with RS256/ES256
(`DATAMILL_JWT_PUBLIC_KEY_FILE`). Its `exp`, `nbf`, `iss` (when configured) and
`aud` are checked with a small clock-skew allowance, and it must carry:

- `sub`: the principal (a service or a person), for the audit log;
- `tenant`: the tenant every resource of the call belongs to;
- `role`: `viewer`, `editor` or `admin`.

Anything wrong with a token is one `Unauthenticated` with one message for every
cause: the caller learns nothing that helps forge the next one. The cause is
logged on the server (never the token).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from server.core.errors import PermissionDenied, Unauthenticated

if TYPE_CHECKING:
    from server.core.settings import Settings

#: What every credential failure says: the same for missing, malformed, expired, forged or misaddressed.
UNAUTHENTICATED_MESSAGE = "missing or invalid credentials"
#: A tenant names a directory of objects and a scope of rows: short, lower-case, no separators.
TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
MAX_SUBJECT_LENGTH = 256
MIN_SECRET_BYTES = 32


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
        issuer: str = "",
        audience: str,
        leeway_seconds: float = 30.0,
    ) -> None:
        if not secret and public_key is None:
            raise ValueError("authentication needs DATAMILL_JWT_SECRET or DATAMILL_JWT_PUBLIC_KEY_FILE")
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
        self._issuer, self._audience, self._leeway = issuer, audience, leeway_seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier | None:
        """The verifier the settings describe, None if they configure no JWT key (API keys only);
        ValueError naming the variable if they are wrong."""
        if not settings.jwt_secret.get_secret_value() and settings.jwt_public_key_file is None:
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
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            leeway_seconds=settings.jwt_leeway_seconds,
        )

    def verify(self, token: str) -> Principal:
        """The token's principal; AuthError saying why not."""
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError as exc:
            raise AuthError(f"malformed token: {exc}") from None
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
