"""Configuration from `DATAMILL_*` environment variables, validated at start-up.

Every setting is listed with its default in the README (`make settings-doc`
regenerates that table from this class).
"""

from __future__ import annotations

import importlib.util
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ObjectStoreKind(StrEnum):
    LOCAL = "local"
    S3 = "s3"


class AuthMode(StrEnum):
    REQUIRED = "required"
    OFF = "off"


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"


PositiveSeconds = Annotated[float, Field(gt=0)]


class Settings(BaseSettings):
    """datamill's settings. Names are the environment variables without `DATAMILL_`."""

    model_config = SettingsConfigDict(env_prefix="DATAMILL_", extra="ignore", frozen=True)

    # Connections
    database_url: str = Field(description="PostgreSQL conninfo or URL (libpq syntax).")
    redis_url: str = Field(description="Redis URL for the work queue, e.g. redis://host:6379/0.")
    queue_name: str = Field("datamill", min_length=1, description="Redis stream that carries job wake-ups.")
    db_pool_min: int = Field(2, ge=1, description="Minimum PostgreSQL connections per process.")
    db_pool_max: int = Field(10, ge=1, description="Maximum PostgreSQL connections per process.")

    # Server
    listen: str = Field("127.0.0.1:50051", description="host:port the gRPC server listens on.")
    server_processes: int = Field(
        1,
        ge=1,
        le=64,
        description="Server processes sharing the listen port (SO_REUSEPORT): one Python process uses one CPU at most.",
    )
    shutdown_grace_seconds: PositiveSeconds = Field(10.0, description="How long SIGTERM lets RPCs drain.")
    shutdown_delay_seconds: float = Field(
        0.0, ge=0, description="After SIGTERM, report NOT_SERVING this long before refusing new RPCs."
    )
    health_interval_seconds: PositiveSeconds = Field(
        2.0, description="How often health re-checks PostgreSQL and Redis."
    )
    watch_keepalive_seconds: PositiveSeconds = Field(15.0, description="Idle time before WatchJob sends a keepalive.")
    reflection: bool = Field(True, description="Serve gRPC server reflection.")

    # Job lifecycle
    max_attempts: int = Field(3, ge=1, le=100, description="Attempts per job before it fails for good.")
    lease_seconds: PositiveSeconds = Field(30.0, description="A claimed job's lease; renewed while it runs.")
    sweep_interval_seconds: PositiveSeconds = Field(1.0, description="How often the sweeper looks for stuck jobs.")
    redispatch_after_seconds: PositiveSeconds = Field(
        30.0, description="A QUEUED job not claimed within this time is dispatched again."
    )
    retry_backoff_base_seconds: PositiveSeconds = Field(2.0, description="First retry delay; doubles per attempt.")
    retry_backoff_max_seconds: PositiveSeconds = Field(300.0, description="Upper bound of the retry delay.")

    # Worker
    worker_shutdown_seconds: float = Field(
        10.0, ge=0, description="On SIGTERM a worker lets running jobs finish this long, then gives them back."
    )

    # Generate
    generate_chunk_rows: int = Field(
        100_000, ge=100, le=10_000_000, description="Rows per durable checkpoint (one COPY per transaction)."
    )
    generate_shard_rows: int = Field(
        1_000_000,
        ge=1_000,
        description="A Generate of more rows is split into shards of about this many rows that run in parallel.",
    )
    generate_max_shards: int = Field(64, ge=1, le=10_000, description="Most shards one Generate is split into.")
    max_generate_rows: int = Field(1_000_000_000, ge=1, description="Largest row count one Generate may ask for.")
    max_fields: int = Field(500, ge=1, description="Most fields one schema may have.")

    # Object storage
    object_store: ObjectStoreKind = Field(ObjectStoreKind.LOCAL, description="`local` or `s3`.")
    local_object_dir: Path = Field(Path(".datamill/objects"), description="Directory of the local object store.")
    s3_endpoint: str = Field("", description="S3 endpoint host:port, e.g. minio:9000.")
    s3_access_key: str = Field("", description="S3 access key.")
    s3_secret_key: SecretStr = Field(SecretStr(""), description="S3 secret key.")
    s3_bucket: str = Field("datamill", description="Bucket for uploads and exports.")
    s3_region: str = Field("us-east-1", description="S3 region (also lets presigning work offline).")
    s3_secure: bool = Field(False, description="Use HTTPS for S3.")
    s3_breaker_failures: int = Field(
        5, ge=1, description="S3 calls failing in a row (UNAVAILABLE) that open the circuit breaker."
    )
    s3_breaker_reset_seconds: PositiveSeconds = Field(
        5.0, description="How long an open S3 circuit fails calls at once before one trial call is let through."
    )

    # Upload
    max_upload_bytes: int = Field(
        100 * 1024**3, ge=1, description="Largest file one Upload may send (RESOURCE_EXHAUSTED beyond it)."
    )
    upload_part_bytes: int = Field(
        8 * 1024**2,
        ge=5 * 1024**2,
        le=5 * 1024**3,
        description="Smallest multipart part; larger files get larger parts (at most 10,000 parts).",
    )
    upload_ttl_seconds: PositiveSeconds = Field(
        86_400.0, description="An unfinished upload untouched this long is aborted and its parts deleted."
    )

    # Export
    export_url_ttl_seconds: int = Field(
        3600,
        ge=1,
        le=604_800,
        description="How long an export's presigned URL works (S3 allows at most 7 days).",
    )

    # Fault tests
    test_crash_at: str = Field(
        "",
        description="Testing only: comma-separated KIND:PHASE points where a worker kills itself (faults.py).",
    )
    test_crash_marker_dir: Path | None = Field(
        None, description="Testing only: each crash point fires once, recorded by a marker file here."
    )

    @property
    def crash_points(self) -> frozenset[str]:
        return frozenset(p.strip() for p in self.test_crash_at.split(",") if p.strip())

    # Authentication (server only; see server/core/auth.py)
    auth: AuthMode = Field(
        AuthMode.REQUIRED,
        description="`required`: every RPC but health (and reflection) needs a bearer JWT; `off`: no checks, one "
        "tenant `default`, every caller an admin (development only; logged loudly at start-up).",
    )
    jwt_secret: SecretStr = Field(SecretStr(""), description="HS256 shared secret for bearer JWTs (at least 32 bytes).")
    jwt_public_key_file: Path | None = Field(
        None, description="PEM file of the RS256 or ES256 public key that signs bearer JWTs."
    )
    jwt_jwks_file: Path | None = Field(
        None,
        description='JWKS file (`{"keys": [...]}`) of RS256/ES256 public keys, chosen by the token\'s `kid`; '
        "re-read when it changes.",
    )
    jwt_issuer: str = Field("", description="Required `iss` of bearer JWTs; empty: not checked.")
    jwt_audience: str = Field("datamill", min_length=1, description="Required `aud` of bearer JWTs.")
    jwt_leeway_seconds: float = Field(30.0, ge=0, le=300, description="Clock skew allowed on `exp` and `nbf`.")

    # Rate limits (server only): a token bucket per tenant and method class, in Redis
    rate_limit_read_per_second: float = Field(
        1000.0, ge=0, description="Reads (Get, List, Watch, ReadObject) per second per tenant; 0: no limit."
    )
    rate_limit_read_burst: int = Field(2000, ge=1, description="Reads a tenant may make at once above the rate.")
    rate_limit_write_per_second: float = Field(
        200.0, ge=0, description="Writes (Generate, Upload, Export, Cancel, Delete) per second per tenant; 0: no limit."
    )
    rate_limit_write_burst: int = Field(400, ge=1, description="Writes a tenant may make at once above the rate.")

    # Quotas (server only): each tenant's own from `datamill quotas set`, else these; 0: unlimited
    quota_concurrent_jobs: int = Field(1000, ge=0, description="Queued or running jobs a tenant may have at once.")
    quota_generate_rows: int = Field(0, ge=0, description="Rows one Generate of a tenant may ask for.")
    quota_upload_bytes: int = Field(0, ge=0, description="Bytes one Upload of a tenant may hold.")
    quota_datasets: int = Field(10000, ge=0, description="Datasets a tenant may hold.")

    # TLS (server only)
    tls_cert_file: Path | None = Field(None, description="PEM certificate chain of the server; with the key: TLS.")
    tls_key_file: Path | None = Field(None, description="PEM private key of the server certificate.")
    tls_client_ca_file: Path | None = Field(
        None, description="PEM CA bundle: when set, clients must present a certificate it signed (mTLS)."
    )

    # Retention: terminal jobs expire with their events, objects and datasets
    retention_days: float = Field(30.0, ge=0, description="Age (since finishing) at which a job expires; 0: never.")
    retention_interval_seconds: float = Field(
        3600.0, gt=0, description="How often one server replica starts the retention task."
    )
    retention_batch: int = Field(500, ge=1, le=100_000, description="Jobs expired per transaction.")

    # Metrics
    metrics_listen: str = Field(
        "", description="host:port to serve Prometheus /metrics on (server and each datamill-worker); empty: off."
    )
    metrics_interval_seconds: float = Field(
        15.0, gt=0, le=3600, description="How often the server counts live jobs and pool use for its gauges."
    )

    # Dashboard (server only)
    dashboard_listen: str = Field(
        "", description="host:port of the web dashboard; empty: off (`datamill-server --dashboard` turns it on)."
    )

    # Tracing (OpenTelemetry, the `tracing` extra)
    tracing: Literal["off", "otlp", "file"] = Field(
        "off", description="`off`, `otlp` (OTEL_EXPORTER_OTLP_* configure it) or `file` (JSON lines)."
    )
    tracing_file: Path | None = Field(None, description="With DATAMILL_TRACING=file: where spans are appended.")

    # Logs
    log_level: str = Field("info", pattern="(?i)^(debug|info|warning|error)$", description="Log level.")
    log_format: LogFormat = Field(LogFormat.JSON, description="`json` or `console`.")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.db_pool_max < self.db_pool_min:
            raise ValueError("DATAMILL_DB_POOL_MAX must be >= DATAMILL_DB_POOL_MIN")
        if self.object_store is ObjectStoreKind.S3 and not (self.s3_endpoint and self.s3_access_key):
            raise ValueError("DATAMILL_OBJECT_STORE=s3 needs DATAMILL_S3_ENDPOINT and DATAMILL_S3_ACCESS_KEY")
        listens = (
            ("LISTEN", self.listen),
            ("METRICS_LISTEN", self.metrics_listen),
            ("DASHBOARD_LISTEN", self.dashboard_listen),
        )
        for name, value in ((n, v) for n, v in listens if v):
            host, sep, port = value.rpartition(":")
            if not sep or not host or not port.isdigit() or int(port) > 65535:
                raise ValueError(f"DATAMILL_{name} must be host:port, got {value!r}")
        if self.server_processes > 1 and self.listen.rpartition(":")[2] == "0":
            raise ValueError("DATAMILL_SERVER_PROCESSES > 1 needs a fixed port in DATAMILL_LISTEN, not 0")
        for point in self.crash_points:
            kind, _, phase = point.partition(":")
            if phase not in ("claimed", "midway", "before_done") or not kind.isupper():
                raise ValueError(f"DATAMILL_TEST_CRASH_AT: {point!r} is not KIND:claimed|midway|before_done")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("DATAMILL_TLS_CERT_FILE and DATAMILL_TLS_KEY_FILE go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError(
                "DATAMILL_TLS_CLIENT_CA_FILE (mTLS) needs DATAMILL_TLS_CERT_FILE and DATAMILL_TLS_KEY_FILE"
            )
        if self.dashboard_listen and self.tls_cert_file is not None:
            raise ValueError(
                "DATAMILL_DASHBOARD_LISTEN: the dashboard calls the server over plaintext loopback, not TLS"
            )
        if self.tracing == "file" and self.tracing_file is None:
            raise ValueError("DATAMILL_TRACING=file needs DATAMILL_TRACING_FILE")
        if self.tracing != "off" and importlib.util.find_spec("opentelemetry.sdk") is None:
            raise ValueError(
                f"DATAMILL_TRACING={self.tracing} needs the `tracing` extra: pip install 'datamill[tracing]'"
            )
        if self.lease_seconds < 3 * self.sweep_interval_seconds:
            raise ValueError("DATAMILL_LEASE_SECONDS must be at least 3x DATAMILL_SWEEP_INTERVAL_SECONDS")
        return self


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def load_settings() -> Settings:
    """Read and validate settings, or exit with a message naming each bad variable."""
    try:
        return Settings()  # required values come from the environment
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = "DATAMILL_" + "_".join(str(p) for p in err["loc"]).upper() if err["loc"] else "settings"
            lines.append(f"  {name}: {err['msg']}")
        sys.stderr.write("datamill: invalid configuration\n" + "\n".join(lines) + "\n")
        raise SystemExit(2) from None
