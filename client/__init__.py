"""The Python client of datamill, and the `datamill` CLI (`client.cli`).

Use `Client` from synchronous code and `AsyncClient` from asyncio code; both
have the same methods::

    from client import Client, InvalidArgumentError

    with Client.connect("127.0.0.1:50051") as dm:
        try:
            job = dm.generate("people", schema={"rows": 1000, "fields": [{"name": "id", "type": "uuid4"}]})
        except InvalidArgumentError as exc:
            for violation in exc.field_violations:
                print(violation.field, violation.description)
        else:
            job = dm.wait(job.id)

Every failed call raises a `DatamillError` subclass (see `client.errors`).
This package needs only the generated `datamill.v1` stubs, never the server.
"""

from client._requests import DatasetPage, JobPage, RetryPolicy, is_terminal
from client._upload import UploadOptions
from client.aio import AsyncClient, AsyncWatchStream
from client.errors import (
    AbortedError,
    AlreadyExistsError,
    CallCancelledError,
    DataLossError,
    DatamillError,
    DeadlineExceededError,
    FailedPreconditionError,
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
    UnknownError,
)
from client.schema_file import SchemaError, load_schema
from client.sync import Client, WatchStream

__all__ = [
    "AbortedError",
    "AlreadyExistsError",
    "AsyncClient",
    "AsyncWatchStream",
    "CallCancelledError",
    "Client",
    "DataLossError",
    "DatamillError",
    "DatasetPage",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "FieldViolation",
    "InternalError",
    "InvalidArgumentError",
    "JobPage",
    "NotFoundError",
    "OutOfRangeError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "RetryPolicy",
    "SchemaError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "UnknownError",
    "UploadOptions",
    "WatchStream",
    "is_terminal",
    "load_schema",
]
