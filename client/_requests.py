"""What the sync and async clients share: request building, retry policy and watch bookkeeping.

Nothing here does I/O, so `Client` and `AsyncClient` differ only in how they
wait (threads or the event loop), not in what they send or how they recover.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf import json_format

from client.errors import DatamillError, from_status
from client.schema_file import SchemaError
from datamill.v1 import dataset_service_pb2, job_pb2, job_service_pb2, schema_pb2

if TYPE_CHECKING:
    # Only the type stubs name the generic wrapper that mypy-protobuf enums use.
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

SchemaLike = schema_pb2.Schema | Mapping[str, Any]
"""A schema message, or the same structure as a JSON-like dict (see schema.proto)."""

EnumLike = int | str
"""A proto enum value, or its name with or without prefix, any case: ``"csv"``, ``"FILE_FORMAT_CSV"``."""

_V = TypeVar("_V", bound=int)

TERMINAL_STATES = frozenset({job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED})


def new_request_id() -> str:
    """A fresh idempotency key (AIP-155), so that retrying a create cannot create twice."""
    return str(uuid.uuid4())


def is_terminal(job: job_pb2.Job) -> bool:
    """Whether the job has reached SUCCEEDED, FAILED or CANCELLED."""
    return job.state in TERMINAL_STATES


# --- channels -------------------------------------------------------------------------------------

CHANNEL_OPTIONS: list[tuple[str, str | int]] = [
    ("grpc.primary_user_agent", "datamill-python"),
    # ReadObject chunks are at most 1 MiB, but a ListJobs page of 1000 full jobs can pass 4 MiB.
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    # While the channel waits to reconnect, calls fail at once and use up our retry attempts;
    # gRPC's own default (1 s growing to 120 s) would outlast a server restart by far.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]


def channel_credentials(
    *,
    tls: bool,
    root_certificates: bytes | None,
    certificate_chain: bytes | None = None,
    private_key: bytes | None = None,
) -> grpc.ChannelCredentials | None:
    """TLS credentials when asked for (a CA bundle or a client certificate implies TLS), else None for plaintext.

    A client certificate and its key (mTLS) go together.
    """
    if (certificate_chain is None) != (private_key is None):
        raise ValueError("a client certificate and its private key go together")
    if not tls and root_certificates is None and certificate_chain is None:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=root_certificates, private_key=private_key, certificate_chain=certificate_chain
    )


# --- enums ----------------------------------------------------------------------------------------


def _enum_value(wrapper: _EnumTypeWrapper[_V], prefix: str, value: EnumLike | None, what: str) -> _V:
    if value is None:
        return wrapper.Value(f"{prefix}UNSPECIFIED")
    if isinstance(value, int):
        by_number = wrapper.DESCRIPTOR.values_by_number.get(value)
        if by_number is None:
            raise ValueError(f"unknown {what} {value}; expected one of: {', '.join(enum_choices(wrapper, prefix))}")
        return wrapper.Value(by_number.name)
    name = value.strip().upper().replace("-", "_")
    if not name.startswith(prefix):
        name = prefix + name
    if name not in wrapper.DESCRIPTOR.values_by_name:
        raise ValueError(f"unknown {what} {value!r}; expected one of: {', '.join(enum_choices(wrapper, prefix))}")
    return wrapper.Value(name)


def enum_choices(wrapper: _EnumTypeWrapper[_V], prefix: str) -> list[str]:
    """The short lower-case names of an enum's values, without the UNSPECIFIED one."""
    names = (value.name for value in wrapper.DESCRIPTOR.values)
    return [name.removeprefix(prefix).lower() for name in names if not name.endswith("_UNSPECIFIED")]


def enum_name(wrapper: _EnumTypeWrapper[_V], prefix: str, value: int) -> str:
    """The short upper-case name of an enum value, e.g. ``SUCCEEDED`` for JOB_STATE_SUCCEEDED."""
    by_number = wrapper.DESCRIPTOR.values_by_number.get(value)
    return by_number.name.removeprefix(prefix) if by_number is not None else str(value)


def parse_job_kind(value: EnumLike | None) -> job_pb2.JobKind.ValueType:
    """Parse a job kind: ``"generate"``, ``"JOB_KIND_EXPORT"``, a JobKind value, or None for any."""
    return _enum_value(job_pb2.JobKind, "JOB_KIND_", value, "job kind")


def parse_job_state(value: EnumLike | None) -> job_pb2.JobState.ValueType:
    """Parse a job state: ``"running"``, ``"JOB_STATE_FAILED"``, a JobState value, or None for any."""
    return _enum_value(job_pb2.JobState, "JOB_STATE_", value, "job state")


def parse_file_format(value: EnumLike) -> job_service_pb2.FileFormat.ValueType:
    """Parse a file format: ``"csv"``, ``"jsonl"``, ``"parquet"``, ``"sql"`` or a FileFormat value."""
    return _enum_value(job_service_pb2.FileFormat, "FILE_FORMAT_", value, "file format")


def parse_compression(value: EnumLike | None) -> job_service_pb2.Compression.ValueType:
    """Parse a compression: ``"none"``, ``"gzip"``, ``"zstd"``, a Compression value, or None."""
    return _enum_value(job_service_pb2.Compression, "COMPRESSION_", value, "compression")


# --- requests -------------------------------------------------------------------------------------


def to_schema(schema: SchemaLike) -> schema_pb2.Schema:
    """Return ``schema`` as a Schema message, parsing a dict with ``json_format.ParseDict``.

    Raises:
        SchemaError: The dict does not have the shape of a Schema (unknown key, wrong type).
    """
    if isinstance(schema, schema_pb2.Schema):
        return schema
    try:
        return json_format.ParseDict(dict(schema), schema_pb2.Schema())
    except json_format.ParseError as exc:
        raise SchemaError(str(exc)) from exc


def generate_request(
    dataset_name: str, *, schema: SchemaLike, request_id: str | None
) -> job_service_pb2.GenerateRequest:
    """Build a GenerateRequest, filling in a request_id when the caller gave none."""
    return job_service_pb2.GenerateRequest(
        dataset_name=dataset_name, schema=to_schema(schema), request_id=request_id or new_request_id()
    )


def export_request(
    dataset: str,
    *,
    format: EnumLike,
    compression: EnumLike | None,
    columns: Sequence[str],
    row_limit: int | None,
    request_id: str | None,
    csv_options: job_service_pb2.CsvOptions | None,
    parquet_options: job_service_pb2.ParquetOptions | None,
    sql_options: job_service_pb2.SqlOptions | None,
) -> job_service_pb2.ExportRequest:
    """Build an ExportRequest, filling in a request_id when the caller gave none."""
    request = job_service_pb2.ExportRequest(
        dataset=dataset,
        format=parse_file_format(format),
        compression=parse_compression(compression),
        columns=list(columns),
        request_id=request_id or new_request_id(),
    )
    if row_limit is not None:
        request.row_limit = row_limit
    if csv_options is not None:
        request.csv_options.CopyFrom(csv_options)
    if parquet_options is not None:
        request.parquet_options.CopyFrom(parquet_options)
    if sql_options is not None:
        request.sql_options.CopyFrom(sql_options)
    return request


def list_jobs_request(
    *, kind: EnumLike | None, state: EnumLike | None, page_size: int, page_token: str
) -> job_service_pb2.ListJobsRequest:
    """Build a ListJobsRequest from friendly filter values."""
    return job_service_pb2.ListJobsRequest(
        kind=parse_job_kind(kind), state=parse_job_state(state), page_size=page_size, page_token=page_token
    )


def list_datasets_request(*, page_size: int, page_token: str) -> dataset_service_pb2.ListDatasetsRequest:
    """Build a ListDatasetsRequest."""
    return dataset_service_pb2.ListDatasetsRequest(page_size=page_size, page_token=page_token)


def subscribe_request(job_id: str, *, after_sequence: int | None) -> job_service_pb2.WatchJobRequest:
    """A WatchJob subscribe message; after_sequence None (or 0) replays the whole history."""
    subscribe = job_service_pb2.WatchSubscribe(job_id=job_id)
    if after_sequence is not None:
        subscribe.after_sequence = after_sequence
    return job_service_pb2.WatchJobRequest(subscribe=subscribe)


def unsubscribe_request(job_id: str) -> job_service_pb2.WatchJobRequest:
    """A WatchJob unsubscribe message."""
    return job_service_pb2.WatchJobRequest(unsubscribe=job_service_pb2.WatchUnsubscribe(job_id=job_id))


# --- pages ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of ListJobs: the jobs, newest first, and the token of the next page ("" on the last)."""

    jobs: list[job_pb2.Job]
    next_page_token: str

    def __iter__(self) -> Iterator[job_pb2.Job]:
        return iter(self.jobs)

    def __len__(self) -> int:
        return len(self.jobs)


@dataclass(frozen=True, slots=True)
class DatasetPage:
    """One page of ListDatasets: the datasets, newest first, and the next page's token."""

    datasets: list[job_pb2.Dataset]
    next_page_token: str

    def __iter__(self) -> Iterator[job_pb2.Dataset]:
        return iter(self.datasets)

    def __len__(self) -> int:
        return len(self.datasets)


# --- retries --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How the client retries a call that failed with UNAVAILABLE (AIP-194).

    Only UNAVAILABLE is retried, and only for calls that are safe to repeat:
    reads, CancelJob, and creates that carry a request_id. The delay before
    retry ``n`` is ``initial_backoff * multiplier ** (n - 1)``, capped at
    ``max_backoff``, with jitter so that many clients do not retry in step,
    and never shorter than the server's RetryInfo.

    Attributes:
        max_attempts: Attempts in all, the first included; 1 disables retries.
        initial_backoff: Seconds before the first retry.
        max_backoff: Upper bound of one delay, in seconds.
        multiplier: Growth of the delay per attempt.
    """

    max_attempts: int = 4
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0

    def backoff(self, attempt: int, *, retry_delay: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** max(attempt - 1, 0))
        # "Equal jitter": at least half the exponential delay, so backoff still grows.
        delay = random.uniform(ceiling / 2, ceiling)
        return max(delay, retry_delay or 0.0)

    def retry_delay(self, error: DatamillError, attempt: int, *, safe_to_retry: bool) -> float | None:
        """Seconds to wait before retrying after ``error`` on attempt ``attempt``, or None to give up."""
        if not safe_to_retry or error.code != grpc.StatusCode.UNAVAILABLE or attempt >= self.max_attempts:
            return None
        return self.backoff(attempt, retry_delay=error.retry_delay)


DEFAULT_RETRY = RetryPolicy()
# A server restart takes seconds, not milliseconds: watches keep trying for about half a minute.
DEFAULT_WATCH_RETRY = RetryPolicy(max_attempts=10, initial_backoff=0.2, max_backoff=5.0)


# --- watch bookkeeping ----------------------------------------------------------------------------


class WatchTracker:
    """Follows the subscriptions of one logical watch across reconnects.

    It remembers the last sequence seen per job, so that a new stream can
    subscribe with ``after_sequence`` and drop anything already delivered:
    after a reconnect the caller sees no duplicate and, because sequences have
    no gaps on the server, no gap either.
    """

    def __init__(self, job_ids: Iterable[str], *, after_sequence: Mapping[str, int] | None = None) -> None:
        after = dict(after_sequence or {})
        # dict keeps the caller's order, which makes re-subscription order stable.
        self.last_sequence: dict[str, int] = {job_id: after.get(job_id, 0) for job_id in job_ids}
        self.active: dict[str, None] = dict.fromkeys(self.last_sequence)

    @property
    def done(self) -> bool:
        """True once every subscription has ended."""
        return not self.active

    def subscriptions(self) -> list[tuple[str, int]]:
        """(job_id, after_sequence) for each subscription still open, to send on a (new) stream."""
        return [(job_id, self.last_sequence[job_id]) for job_id in self.active]

    def accept(self, message: job_service_pb2.WatchJobResponse) -> job_pb2.JobEvent | None:
        """Take one server message; return the event to deliver, or None for anything else.

        Raises:
            DatamillError: A subscription ended with an error (for example NOT_FOUND).
        """
        kind = message.WhichOneof("message")
        if kind == "event":
            event = message.event
            if event.job_id not in self.active or event.sequence <= self.last_sequence[event.job_id]:
                return None
            self.last_sequence[event.job_id] = event.sequence
            return event
        if kind == "ended":
            ended = message.ended
            if ended.reason == job_service_pb2.WATCH_END_REASON_ERROR:
                raise from_status(ended.status)
            self.active.pop(ended.job_id, None)
        return None
