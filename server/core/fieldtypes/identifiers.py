"""Identifiers: time-ordered UUIDs and ULIDs, hex digests, ObjectIds, random strings and nano IDs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import Field

from server.core.fieldtypes.base import FieldParams, FieldType, IntParam, Timestamp, declare

UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_MILLIS = 2**48  # the width of the time field of a UUIDv7 or a ULID
_MAX_SECONDS = 2**32  # the width of the time field of an ObjectId
HEX_ALPHABET = "0123456789abcdef"
# nanoid's default alphabet: URL-safe, 64 symbols.
NANOID_ALPHABET = "useandom-26T198340PX75pxJACKVERYMINDBUSHWOLF_GQZbfghjklqvwyzrict"
ALPHANUMERIC = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def strings_domain(alphabet_size: int, length: int) -> int:
    """How many distinct strings a unique field of fixed length can promise.

    The generators make the first characters (as many as fit in 60 bits) a
    permutation of the row number, so that is the bound, however long the rest.
    """
    fitting = 1
    while alphabet_size ** (fitting + 1) <= 2**60:
        fitting += 1
    return int(alphabet_size ** min(length, fitting))


class TimeOrderedParams(FieldParams):
    """The embedded instant: `start` for row 0, `step_ms` later for each next row."""

    start: Timestamp = Field(
        datetime(2024, 1, 1, tzinfo=UTC), description="instant embedded in row 0's value (ISO-8601 with zone)"
    )
    step_ms: Annotated[float, Field(ge=0.0, le=1e12)] = Field(
        1000.0,
        description="milliseconds between the instants of consecutive rows; a fraction puts several rows in one"
        " millisecond (their order within it is random)",
    )

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        if self.start < UNIX_EPOCH:
            yield "start", "must not be before 1970-01-01T00:00:00Z"
        elif self.start_ms + int((rows - 1) * self.step_ms) >= _MAX_MILLIS:
            yield (
                "step_ms",
                f"the last row's instant passes the 48-bit millisecond clock (year 10889) within {rows} rows",
            )

    @property
    def start_ms(self) -> int:
        return (self.start - UNIX_EPOCH) // timedelta(milliseconds=1)


class HexParams(FieldParams):
    length: IntParam = Field(
        32, ge=1, le=256, description="number of hex digits: 32 looks like MD5, 40 like SHA-1, 64 like SHA-256"
    )
    uppercase: bool = Field(False, description="use A-F instead of a-f")

    def domain(self, locale: str) -> int | None:
        return strings_domain(16, self.length)


class ObjectIdParams(FieldParams):
    """A 4-byte creation time in [start, end] and 8 bytes that are distinct for each row."""

    start: Timestamp = Field(datetime(2020, 1, 1, tzinfo=UTC), description="earliest creation time (ISO-8601)")
    end: Timestamp = Field(datetime(2025, 1, 1, tzinfo=UTC), description="latest creation time (ISO-8601)")

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        if self.start < UNIX_EPOCH:
            yield "start", "must not be before 1970-01-01T00:00:00Z"
        if self.end < self.start:
            yield "end", f"must not be before start ({self.start.isoformat()})"
        elif self.end >= UNIX_EPOCH + timedelta(seconds=_MAX_SECONDS):
            yield "end", "must be before 2106-02-07T06:28:16Z (the 32-bit seconds clock)"


class RandomStringParams(FieldParams):
    alphabet: Annotated[str, Field(min_length=1, max_length=1000)] = Field(
        ALPHANUMERIC, description="the characters to draw from (each equally likely)"
    )
    min_length: IntParam = Field(8, ge=0, le=10_000, description="fewest characters")
    max_length: IntParam = Field(16, ge=0, le=10_000, description="most characters")

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        if len(set(self.alphabet)) != len(self.alphabet):
            yield "alphabet", "must not repeat a character"
        if "\x00" in self.alphabet:
            yield "alphabet", "must not contain NUL, which PostgreSQL text cannot hold"
        if self.min_length > self.max_length:
            yield "max_length", f"must be >= min_length ({self.min_length})"


class NanoidParams(FieldParams):
    size: IntParam = Field(21, ge=2, le=255, description="number of characters (21 gives about 126 random bits)")

    def domain(self, locale: str) -> int | None:
        return strings_domain(len(NANOID_ALPHABET), self.size)


declare(
    FieldType(
        "uuid7", "identifiers", "time-ordered UUID version 7 (instants ascend with the row number)",
        TimeOrderedParams, "uuid", "uuid", True,
    ),
    FieldType(
        "ulid", "identifiers", "time-ordered ULID: 26 characters of Crockford base32",
        TimeOrderedParams, "text", "text", True,
    ),
    FieldType("hex", "identifiers", "random hex digits, like a digest", HexParams, "text", "text", True),
    FieldType(
        "object_id", "identifiers", "MongoDB-like ObjectId: 24 hex digits, time first",
        ObjectIdParams, "text", "text", True,
    ),
    FieldType(
        "random_string", "identifiers", "random characters of an alphabet, of random length",
        RandomStringParams, "text", "text",
    ),
    FieldType("nanoid", "identifiers", "URL-safe nano ID", NanoidParams, "text", "text", True),
)  # fmt: skip
