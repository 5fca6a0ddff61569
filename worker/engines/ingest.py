"""Parse an uploaded CSV, JSON Lines or Parquet file into Arrow batches ready for binary COPY.

    source ─ _Source (counts bytes, keeps the caller's own errors apart)
      ├─ Parquet: pyarrow.parquet.ParquetFile, read by row batches (needs seek)
      └─ CSV, JSONL: forward reads only
           gzip / zstd (detected from the magic bytes) ─ pa.CompressedInputStream
           another encoding than UTF-8 ─ _Transcoder
           CSV: pyarrow.csv.open_csv, every field as bytes, one block at a time
           JSONL: blocks of whole lines, each parsed by pyarrow.json (or by `json` when needed)
      └─ every column converted with Arrow compute, whole columns at a time; only a
         column that fails is searched for its bad rows (by bisection with the same
         conversion, so the slow path judges each value exactly as the fast one).

Memory stays within a few blocks (and the longest record) whatever the file's size;
for Parquet, within a row group, pyarrow's unit of reading.

Columns are either given (name, logical type, nullable) or inferred from the first
block (CSV, JSONL) or the file's schema (Parquet). Inferred columns are nullable.
Inference tries, per column: integer, float, boolean, date, timestamp, time, uuid,
and settles for text; values with leading zeros (`007`) or hex (`0x1f`) stay text, and
so do integers too big for 64 bits. In JSON Lines a JSON number is an integer or a
float, true/false a boolean, a string is tried as date, timestamp, time or uuid, and
an object, an array or a mix of kinds is json. Header names and JSON keys become
column names by `column_names`.

Values (CSV fields, JSON strings, Parquet strings):

- text is taken as is: an empty CSV field is the empty string, never NULL;
- for every other type an empty value, or one of only spaces, is NULL, and spaces
  around a value are ignored;
- integer: decimal (or 0x hex) 64-bit; float: decimal or exponent, nan, inf;
  boolean: true/false, t/f, yes/no, y/n, 1/0 in any case; date: YYYY-MM-DD;
  time: HH:MM[:SS[.fraction]]; timestamp: ISO 8601 (`T` or a space), an offset
  (`Z`, `+02`, `+02:00`) converts to UTC, none means UTC; uuid: the canonical
  8-4-4-4-12 hex form; json: text that is one valid JSON value.
- Fractions beyond microseconds are truncated. Text may not hold NUL, which
  PostgreSQL rejects, and json may not hold NaN, Infinity, \\u0000 or lone surrogates.

Row numbers (`MalformedFile.row`) count data records from 1: for CSV the first
record after the header is row 1 and blank lines are not records (a quoted value
may span lines); for JSON Lines the row is the line number, blank lines included;
for Parquet it is the row's position in the file.

A row that fails (wrong field count, invalid JSON, an unknown key, a value that
does not convert, NULL in a non-nullable column) raises MalformedFile, or with
`skip_malformed_rows` is dropped and counted in `skipped`: every row yielded is
valid for COPY. Errors:

    MalformedFile(Exception)     the file cannot be imported (row, column, reason)
    UnsupportedColumn(ValueError) a given column's type cannot be imported
    ValueError                   bad options or column definitions
"""

from __future__ import annotations

import atexit
import codecs
import contextlib
import io
import json
import re
import threading
import unicodedata
import weakref
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from time import monotonic, sleep
from typing import Any, BinaryIO, Literal, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from server.core.fileformats import text_encoding
from server.core.schema import INGEST_PG_TYPES, ColumnDef

__all__ = [
    "ARROW_TYPES",
    "PG_TYPES",
    "IngestColumn",
    "IngestOptions",
    "IngestReader",
    "MalformedFile",
    "UnsupportedColumn",
    "column_names",
    "parse_uuid",
]

#: The logical types an import supports, with their PostgreSQL types (one list, shared with the server).
PG_TYPES = INGEST_PG_TYPES
_JSON = pa.json_(pa.string())
_TIMESTAMP = pa.timestamp("us", tz="UTC")
#: The Arrow type of each logical type in the batches (what worker.engines.pgcopy encodes).
ARROW_TYPES = {
    "boolean": pa.bool_(),
    "integer": pa.int64(),
    "float": pa.float64(),
    "text": pa.large_string(),
    "uuid": pa.binary(16),
    "date": pa.date32(),
    "time": pa.time64("us"),
    "timestamp": _TIMESTAMP,
    "json": _JSON,
}

_MiB = 1024 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_PARQUET_MAGIC = b"PAR1"
_UTF8_BOM = b"\xef\xbb\xbf"
_NAME_RE = re.compile(r"[a-z_][a-z0-9_]*")
_MAX_NAME_BYTES = 63
_CONVERSION_ERRORS = (pa.ArrowInvalid, ValueError, OverflowError)
_TRUE_WORDS = pa.array(["true", "t", "yes", "y", "1", "on"])
_FALSE_WORDS = pa.array(["false", "f", "no", "n", "0", "off"])
_EXPECTED = {
    "integer": "a 64-bit integer",
    "float": "a number",
    "boolean": "a boolean (true/false, t/f, yes/no, y/n, 1/0)",
    "date": "a date (YYYY-MM-DD)",
    "time": "a time (HH:MM[:SS[.ffffff]])",
    "timestamp": "a timestamp (ISO 8601, like 2024-01-31 13:45:00+02)",
    "uuid": "a UUID",
    "text": "a string",
    "json": "JSON",
}
_NOT_NULL = "no value, but the column is not nullable"
# A timestamp that states its offset: Z, or a time followed by +HH, +HHMM or +HH:MM.
_ZONE_RE = r"(?:[Zz]|[T ]\S*[+-]\d\d(?::?\d\d)?)$"
_EXTRA_DIGITS_RE = r"(\.\d{6})\d+"
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# PostgreSQL's ranges, in Arrow's units since 1970 (only Parquet can carry values beyond them).
_PG_MIN_DAYS, _PG_END_DAYS = -2_440_588, 2_145_042_906
_PG_MIN_MICROS = -210_866_803_200_000_000
_DAY_MICROS = 86_400_000_000

Bools = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class IngestOptions:
    """How to read the file. `compression=None` (or "") detects gzip and zstd from the first bytes;
    Parquet cannot be compressed as a whole. The CSV options apply to CSV only, `encoding` to CSV and JSONL.
    """

    format: Literal["csv", "jsonl", "parquet"]
    compression: Literal["none", "gzip", "zstd"] | None = None
    delimiter: str = ","
    header: bool = True
    quote: str = '"'  # "" turns quoting off
    encoding: str = "utf-8"
    skip_malformed_rows: bool = False


@dataclass(frozen=True, slots=True)
class IngestColumn:
    """A column the user gives: its name in the table (a valid column name), logical type and nullability."""

    name: str
    logical_type: str
    nullable: bool = True


class MalformedFile(Exception):
    """The file cannot be imported. `row` is the 1-based number of the data record (see the module
    docstring), None when the problem is not about one row; `column` names the column when there is one.
    """

    def __init__(self, reason: str, *, row: int | None = None, column: str | None = None) -> None:
        self.reason = reason
        self.row = row
        self.column = column
        super().__init__(reason)

    def __str__(self) -> str:
        where = [f"row {self.row}"] if self.row is not None else []
        if self.column is not None:
            where.append(f"column {self.column!r}")
        return f"{', '.join(where)}: {self.reason}" if where else self.reason


class UnsupportedColumn(ValueError):
    """A given column's logical type cannot be imported."""


def column_names(raw_names: Sequence[str]) -> list[str]:
    """Valid, distinct column names for header names or JSON keys, in order.

    A name that is already valid ([a-z_][a-z0-9_]*, at most 63 bytes) is kept.
    Any other is lower-cased with accents removed, each run of other characters
    becomes "_", "_" at either end is dropped, "_" goes in front of a leading
    digit, and it is cut to 63 bytes; nothing left gives col_<position>
    (from 1). A repeated name gets a suffix _2, _3, ...:
    "First Name" -> first_name, "Café (€)" -> cafe, "2nd" -> _2nd, "" -> col_3 (third),
    and "a", "A" -> a, a_2.
    """
    names: list[str] = []
    taken: set[str] = set()
    for position, raw in enumerate(raw_names, start=1):
        base = _identifier(raw) or f"col_{position}"
        name, suffix = base, 2
        while name in taken:
            tail = f"_{suffix}"
            name = base[: _MAX_NAME_BYTES - len(tail)] + tail
            suffix += 1
        taken.add(name)
        names.append(name)
    return names


def _identifier(raw: str) -> str:
    if _is_column_name(raw):
        return raw
    ascii_text = unicodedata.normalize("NFKD", raw).encode("ascii", "ignore").decode("ascii").lower()
    text = re.sub(r"[^a-z0-9]+", "_", ascii_text).strip("_")
    if text[:1].isdigit():
        text = "_" + text
    return text[:_MAX_NAME_BYTES]


def _is_column_name(name: str) -> bool:
    return bool(_NAME_RE.fullmatch(name)) and len(name.encode()) <= _MAX_NAME_BYTES


class IngestReader:
    """Reads one file into Arrow record batches whose schema is exactly `columns`.

    The columns are known once the reader is built (which reads at most the first
    block); `batches()` then streams the rest, once. `rows`, `skipped` and
    `bytes_read` (compressed bytes read from `source`) follow the reading.
    For Parquet the source must also support seek and tell.
    """

    def __init__(
        self,
        source: BinaryIO,
        options: IngestOptions,
        columns: Sequence[IngestColumn] | None = None,
        *,
        block_size: int = 4 * _MiB,
    ) -> None:
        _check_options(options, block_size)
        given = None if columns is None else _column_defs(columns)
        self.rows = 0
        self.skipped = 0
        self._skip = options.skip_malformed_rows
        self._source = _Source(source)
        engine: _Engine
        with self._source.reading():
            if options.format == "parquet":
                engine = _ParquetEngine(self._source, options, given, block_size)
            else:
                stream = _decoded_stream(self._source, options, block_size)
                if options.format == "csv":
                    engine = _CsvEngine(self._source, stream, options, given, block_size)
                else:
                    engine = _JsonlEngine(self._source, stream, given, block_size)
        self._engine = engine
        self.columns: list[ColumnDef] = engine.columns
        self._schema = pa.schema(
            pa.field(c.name, ARROW_TYPES[c.logical_type], nullable=c.nullable) for c in self.columns
        )
        self._started = False

    @property
    def bytes_read(self) -> int:
        return self._source.progress

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The rows, in file order, as batches of about one block each (empty batches are left out)."""
        if self._started:
            raise RuntimeError("an IngestReader's batches can be read only once")
        self._started = True
        chunks = self._engine.chunks()
        try:
            for chunk in chunks:
                batch = self._settle(chunk)
                if batch is not None and batch.num_rows:
                    self.rows += batch.num_rows
                    yield batch
        finally:
            chunks.close()  # now, not whenever a traceback holding it is collected: it holds pyarrow's I/O thread
        with self._source.reading():
            self._source.drain()

    def _settle(self, chunk: _Chunk) -> pa.RecordBatch | None:
        """The chunk's valid rows as a batch, after raising its first problem (or counting its bad rows)."""
        problems: list[tuple[int, Bools, Callable[[int], str]]] = []
        for index, (column, converted) in enumerate(zip(self.columns, chunk.columns, strict=True)):
            if converted.bad is not None and converted.bad.any():
                problems.append((index, converted.bad, converted.why))
            if not column.nullable and converted.values.null_count:
                empty = converted.values.is_null().to_numpy(zero_copy_only=False)
                if converted.bad is not None:
                    empty &= ~converted.bad
                if empty.any():
                    problems.append((index, empty, _not_null))
        arrays = [c.values for c in chunk.columns]
        if not problems and not chunk.early:
            return pa.RecordBatch.from_arrays(arrays, schema=self._schema) if arrays else None
        numbers = chunk.numbers()
        if not self._skip:
            first = list(chunk.early)
            for index, mask, why in problems:
                at = int(np.argmax(mask))
                first.append(MalformedFile(why(at), row=int(numbers[at]), column=self.columns[index].name))
            raise min(first, key=lambda exc: exc.row or 0)
        bad = np.zeros(chunk.size, dtype=np.bool_)
        for _, mask, _ in problems:
            bad |= mask
        self.skipped += len(chunk.early) + int(bad.sum())
        if not arrays:
            return None
        return pa.RecordBatch.from_arrays(arrays, schema=self._schema).filter(pa.array(~bad))


def _not_null(_: int) -> str:
    return _NOT_NULL


def _check_options(options: IngestOptions, block_size: int) -> None:
    if options.format not in ("csv", "jsonl", "parquet"):
        raise ValueError(f"unknown format {options.format!r}; expected csv, jsonl or parquet")
    if options.compression not in (None, "", "none", "gzip", "zstd"):
        raise ValueError(f"unknown compression {options.compression!r}; expected none, gzip or zstd")
    if block_size < 1:
        raise ValueError(f"block_size must be positive, not {block_size}")
    if text_encoding(options.encoding) is None:
        raise ValueError(f"unknown text encoding {options.encoding!r}")
    if options.format != "csv":
        return
    if len(options.delimiter) != 1 or not options.delimiter.isascii() or options.delimiter in "\r\n":
        raise ValueError(f"the delimiter must be one ASCII character other than a newline, not {options.delimiter!r}")
    if options.quote and (len(options.quote) != 1 or not options.quote.isascii() or options.quote in "\r\n"):
        raise ValueError(f"the quote must be one ASCII character other than a newline, not {options.quote!r}")
    if options.quote == options.delimiter:
        raise ValueError("the quote and the delimiter must differ")


def _column_defs(columns: Sequence[IngestColumn]) -> list[ColumnDef]:
    if not columns:
        raise ValueError("no columns given; pass None to infer them")
    seen: set[str] = set()
    defs = []
    for column in columns:
        if not _is_column_name(column.name):
            raise ValueError(
                f"column name {column.name!r} is not a lower-case identifier [a-z_][a-z0-9_]* of at most 63 bytes"
            )
        if column.name in seen:
            raise ValueError(f"column {column.name!r} is given twice")
        seen.add(column.name)
        pg_type = PG_TYPES.get(column.logical_type)
        if pg_type is None:
            raise UnsupportedColumn(
                f"column {column.name!r} has type {column.logical_type!r}, which cannot be imported;"
                f" supported: {', '.join(PG_TYPES)}"
            )
        defs.append(ColumnDef(column.name, column.logical_type, pg_type, column.nullable))
    return defs


def _inferred(names: Sequence[str], logical_types: Sequence[str]) -> list[ColumnDef]:
    return [ColumnDef(n, t, PG_TYPES[t], nullable=True) for n, t in zip(names, logical_types, strict=True)]


# ---------------------------------------------------------------------------------------------------------------
# Byte streams


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Stream:
    """What pyarrow's PythonFile needs besides read()."""

    def readable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return False

    def close(self) -> None:
        """The caller owns the file: pyarrow closing its wrapper must not close it."""


class _Source(_Stream):
    """The caller's file. Counts the bytes read, for progress, and remembers an error of its own, so that a
    storage failure surfacing through pyarrow is re-raised as itself and not taken for a malformed file.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._count = 0
        self._size: int | None = None  # known for Parquet, which caps progress at it
        self._failure: BaseException | None = None

    @property
    def progress(self) -> int:
        return self._count if self._size is None else min(self._count, self._size)

    def read(self, size: int = -1, /) -> bytes:
        try:
            data = self._raw.read(size)
        except BaseException as exc:
            self._failure = exc
            raise
        self._count += len(data)
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        try:
            return self._raw.seek(offset, whence)
        except BaseException as exc:
            self._failure = exc
            raise

    def tell(self) -> int:
        return self._raw.tell()

    def seekable(self) -> bool:
        return self._raw.seekable()

    def drain(self) -> None:
        """Read to the end, so that a caller hashing the bytes it serves sees all of them."""
        while self.read(_MiB):
            pass

    def measure(self) -> int:
        self._size = self.seek(0, io.SEEK_END)
        self.seek(0)
        return self._size

    @contextlib.contextmanager
    def reading(self, what: str = "the file cannot be read") -> Iterator[None]:
        """Errors of reading, decompressing or parsing as MalformedFile; but the source's own error as itself."""
        try:
            yield
        except (pa.ArrowException, OSError) as exc:
            if self._failure is exc:
                raise
            if self._failure is not None:
                raise self._failure from exc
            hint = " (is a record longer than the block size?)" if "straddl" in str(exc) else ""
            raise MalformedFile(f"{what}: {exc}{hint}") from exc


class _Prefixed(_Stream):
    """A stream with some bytes, already read from its start, put back in front."""

    def __init__(self, prefix: bytes, rest: _Readable) -> None:
        self._prefix = prefix
        self._rest = rest

    def read(self, size: int = -1, /) -> bytes:
        if not self._prefix:
            return self._rest.read(size)
        if size < 0:
            data, self._prefix = self._prefix + self._rest.read(), b""
            return data
        data, self._prefix = self._prefix[:size], self._prefix[size:]
        if len(data) < size:
            data += self._rest.read(size - len(data))
        return data


class _Transcoder(_Stream):
    """A text stream in another encoding, read as UTF-8."""

    def __init__(self, raw: _Readable, encoding: str, chunk: int) -> None:
        self._raw = raw
        self._encoding = encoding
        self._decoder = codecs.getincrementaldecoder(encoding)()
        self._chunk = chunk
        self._pending = b""
        self._done = False

    def read(self, size: int = -1, /) -> bytes:
        while not self._done and (size < 0 or len(self._pending) < size):
            raw = self._raw.read(self._chunk)
            try:
                text = self._decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as exc:
                raise MalformedFile(f"the file is not valid {self._encoding}: {exc.reason}") from exc
            self._pending += text.encode("utf-8")
            self._done = not raw
        if size < 0:
            data, self._pending = self._pending, b""
        else:
            data, self._pending = self._pending[:size], self._pending[size:]
        return data


class _EndsWithNewline(_Stream):
    """A stream that ends with a newline even if the file does not, read in full blocks: pyarrow's CSV
    reader cannot take a first block without a whole line, so the newline must come with the last bytes.
    """

    def __init__(self, raw: _Readable) -> None:
        self._raw = raw
        self._ending = b""  # the newline still to send
        self._last = b"\n"
        self._done = False

    def read(self, size: int = -1, /) -> bytes:
        parts = []
        wanted = size
        while not self._done and wanted != 0:
            data = self._raw.read(wanted)
            if not data:
                self._done = True
                self._ending = b"" if self._last in (b"\n", b"\r") else b"\n"
                break
            parts.append(data)
            self._last = data[-1:]
            wanted = -1 if size < 0 else wanted - len(data)
        if self._done and self._ending and wanted != 0:
            parts.append(self._ending)
            self._ending = b""
        return b"".join(parts)


class _Feeder(_Stream):
    """Feeds pyarrow's streaming CSV reader, which reads up to 32 blocks ahead on an I/O thread
    (ARROW-12090: not configurable), from the consumer's thread.

    Before each batch the consumer reads blocks from the file until `ahead` blocks are read beyond the
    batches handed over (the reader makes about one batch per block); the I/O thread only takes them.
    So memory stays within a few blocks, and the caller's file is read by the thread that asks for
    batches, never by pyarrow's, which a reader being dropped waits for. A batch can need more blocks
    (records about as long as a block): when the consumer has waited for one a moment, the I/O thread
    reads the next block itself. The count is cumulative, so such a read is paid back by the next batches.
    """

    _PATIENCE = 0.05  # seconds; parsing a block takes about that long

    def __init__(self, raw: _Readable, block_size: int, ahead: int) -> None:
        self._raw = raw
        self._block_size = block_size
        self._blocks: deque[bytes] = deque()
        self._fetched = 0
        self._allowed = ahead
        self._at_end = False
        self._stopped = False
        self._waiting_since: float | None = None
        self._in_read = 0
        self._changed = threading.Condition()
        self._reading = threading.Lock()  # one reader of the file at a time, in order
        _FEEDERS.add(self)

    def read(self, size: int = -1, /) -> bytes:
        """pyarrow's I/O thread: the next block in line."""
        with self._changed:
            self._in_read += 1
        try:
            return self._next_block(size)
        finally:
            with self._changed:
                self._in_read -= 1
                self._changed.notify_all()

    def _next_block(self, size: int) -> bytes:
        with self._changed:
            while not (self._blocks or self._at_end or self._stopped):
                if self._waiting_since is None:
                    self._changed.wait()
                    continue
                left = self._waiting_since + self._PATIENCE - monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            starving = not (self._blocks or self._at_end or self._stopped)
        if starving:
            with self._reading:
                if not self._blocks and not self._at_end:
                    self._fetch()
        with self._changed:
            if self._stopped or not self._blocks:
                return b""
            block = self._blocks.popleft()
            if 0 <= size < len(block):
                block, rest = block[:size], block[size:]
                self._blocks.appendleft(rest)
            return block

    def _fetch(self) -> None:
        data = self._raw.read(self._block_size)
        with self._changed:
            self._fetched += 1
            if data:
                self._blocks.append(data)
            else:
                self._at_end = True
            self._changed.notify_all()

    def stop(self) -> None:
        """Let pyarrow's I/O thread finish: every later read is the end."""
        with self._changed:
            self._stopped = True
            self._blocks.clear()
            self._changed.notify_all()

    @property
    def stopped(self) -> bool:
        return self._stopped

    def wait_idle(self, deadline: float) -> None:
        """Wait until pyarrow's I/O thread is out of `read` (or the deadline passes)."""
        with self._changed:
            while self._in_read and monotonic() < deadline:
                self._changed.wait(deadline - monotonic())

    @contextlib.contextmanager
    def next_batch(self) -> Iterator[None]:
        """Around the consumer's wait for a batch: reads the blocks it allows, then lets one more."""
        with self._reading:
            while not self._at_end and self._fetched < self._allowed:
                self._fetch()
        with self._changed:
            self._waiting_since = monotonic()
            self._changed.notify_all()
        try:
            yield
        finally:
            with self._changed:
                self._waiting_since = None
                self._allowed += 1


# Feeders whose batches a caller dropped without closing them (a generator kept alive by a traceback
# cycle): stopped at exit, and their I/O threads given a moment to leave Python before it finalizes, or
# the process would hang on pyarrow's thread pool as it ends.
_FEEDERS: weakref.WeakSet[_Feeder] = weakref.WeakSet()


@atexit.register
def _stop_feeders() -> None:
    running = [feeder for feeder in list(_FEEDERS) if not feeder.stopped]
    for feeder in running:
        feeder.stop()
    deadline = monotonic() + 2.0
    for feeder in running:
        feeder.wait_idle(deadline)
    if running:
        sleep(0.1)  # for the woken threads to finish with Python (return the end, drop the file)


def _decoded_stream(source: _Source, options: IngestOptions, block_size: int) -> _Readable:
    """The file's text as UTF-8 bytes: decompressed, then transcoded (Python's codecs, as pyarrow's own
    ReadOptions.encoding would use, but here JSON Lines gets it too)."""
    compression = options.compression or None
    stream: _Readable = source
    if compression is None:
        magic = source.read(4)
        compression = "gzip" if magic.startswith(_GZIP_MAGIC) else "zstd" if magic == _ZSTD_MAGIC else "none"
        stream = _Prefixed(magic, source)
    if compression != "none":
        stream = pa.CompressedInputStream(pa.PythonFile(stream, mode="r"), compression)
    if codecs.lookup(options.encoding).name != "utf-8":
        stream = _Transcoder(stream, options.encoding, block_size)
    return stream


# ---------------------------------------------------------------------------------------------------------------
# Engines: each parses its format into chunks of converted columns


@dataclass(slots=True)
class _Converted:
    """One column of a chunk in its Arrow type, NULL where `bad`; `why(i)` says what is wrong with row i."""

    values: pa.Array
    bad: Bools | None = None
    why: Callable[[int], str] = _not_null


@dataclass(slots=True)
class _Chunk:
    """Converted rows, their row numbers (computed only when needed) and the rows that failed before
    conversion (wrong field count, invalid JSON line), which are not among the rows.
    """

    columns: list[_Converted]
    size: int
    numbers: Callable[[], npt.NDArray[np.int64]]
    early: list[MalformedFile] = field(default_factory=list)


class _Engine(Protocol):
    columns: list[ColumnDef]

    def chunks(self) -> Generator[_Chunk, None, None]: ...


class _CsvEngine:
    """CSV by pyarrow's streaming reader, every field read as bytes and converted per column.

    pyarrow reports rows with the wrong number of fields to `invalid_row_handler`
    with their record number (exact when not threaded, and counting the header
    record); the reader may already parse the next block when it hands over a
    batch, so the reported rows are kept in order until the batch they belong to.
    """

    def __init__(
        self, source: _Source, stream: _Readable, options: IngestOptions, given: list[ColumnDef] | None, block_size: int
    ) -> None:
        self._source = source
        self._options = options
        self._block_size = block_size
        self._file_names: list[str] = []
        sample, at_end = _csv_sample(stream, block_size)
        head = sample if at_end else sample[: max(sample.rfind(b"\n"), sample.rfind(b"\r")) + 1]
        if head and head[-1:] not in (b"\n", b"\r"):
            head += b"\n"
        self._rest: _Readable = _EndsWithNewline(_Prefixed(sample, stream))
        self._invalid: list[tuple[int, str]] = []  # (data record number, reason), in order
        self._empty = not head.strip()
        if self._empty:
            if given is None or options.header:
                raise MalformedFile("the file is empty" if given is None else "the file is empty: it has no header")
            self.columns = given
            return
        with source.reading("the file is not valid CSV"):
            self._file_names = pacsv.open_csv(io.BytesIO(head), **self._csv_options(len(head) + 1)).schema.names
        if given is None:
            self.columns = self._infer(head, at_end)
            self._order = list(range(len(self.columns)))
        else:
            self.columns = given
            self._order = self._match(given)

    def _csv_options(self, block_size: int, *, keep_invalid: bool = False) -> dict[str, Any]:
        options = self._options
        return {
            "read_options": pacsv.ReadOptions(
                use_threads=False, block_size=block_size, autogenerate_column_names=not options.header
            ),
            "parse_options": pacsv.ParseOptions(
                delimiter=options.delimiter,
                quote_char=options.quote or False,
                newlines_in_values=True,
                invalid_row_handler=self._on_invalid if keep_invalid else _skip_row,
            ),
            "convert_options": pacsv.ConvertOptions(column_types=dict.fromkeys(self._file_names, pa.binary())),
        }

    def _on_invalid(self, row: Any) -> str:
        number = row.number - 1 if self._options.header else row.number
        self._invalid.append((number, f"has {row.actual_columns} fields, expected {row.expected_columns}"))
        return "skip"

    def _infer(self, head: bytes, at_end: bool) -> list[ColumnDef]:
        if self._options.header:
            names = column_names(self._file_names)
        else:
            names = [f"col_{i}" for i in range(1, len(self._file_names) + 1)]
        with self._source.reading("the file is not valid CSV"):
            table = pacsv.read_csv(io.BytesIO(head), **self._csv_options(len(head) + 1))
        if not at_end and table.num_rows:
            table = table.slice(0, table.num_rows - 1)  # the block may end inside a quoted value
        logical_types = []
        for column in table.columns:
            strings = _utf8_or_none(column.combine_chunks())
            logical_types.append("text" if strings is None else _infer_strings(strings, _CSV_CANDIDATES))
        return _inferred(names, logical_types)

    def _match(self, given: list[ColumnDef]) -> list[int]:
        """The file column of each given column: by position without a header, else by name."""
        count = len(self._file_names)
        if not self._options.header:
            if count != len(given):
                raise MalformedFile(f"the file has {count} fields per record, but {len(given)} columns were given")
            return list(range(count))
        return _match_by_name(self._file_names, given)

    def chunks(self) -> Generator[_Chunk, None, None]:
        if self._empty:
            return
        feeder = _Feeder(self._rest, self._block_size, ahead=4)
        # Whatever ends this generator (a failing open included), the reader's I/O thread must be let go.
        try:
            with self._source.reading("the file is not valid CSV"), feeder.next_batch():
                reader = pacsv.open_csv(feeder, **self._csv_options(self._block_size, keep_invalid=True))
            start = 1  # number of the next data record
            while True:
                try:
                    with (
                        self._source.reading(f"the file is not valid CSV after row {start - 1}"),
                        feeder.next_batch(),
                    ):
                        batch = reader.read_next_batch()
                except StopIteration:
                    break
                count = 0
                end = start + batch.num_rows
                while count < len(self._invalid) and self._invalid[count][0] < end:
                    count, end = count + 1, end + 1
                failed, self._invalid = self._invalid[:count], self._invalid[count:]
                columns = [
                    _from_csv(batch.column(i), c.logical_type) for i, c in zip(self._order, self.columns, strict=True)
                ]
                yield _Chunk(
                    columns,
                    batch.num_rows,
                    _record_numbers(start, end, [n for n, _ in failed]),
                    [MalformedFile(reason, row=n) for n, reason in failed],
                )
                start = end
            if self._invalid:
                yield _Chunk(
                    [_Converted(pa.nulls(0, ARROW_TYPES[c.logical_type])) for c in self.columns],
                    0,
                    _record_numbers(start, start, []),
                    [MalformedFile(reason, row=n) for n, reason in self._invalid],
                )
        finally:
            feeder.stop()


def _skip_row(_: Any) -> str:
    return "skip"


def _csv_sample(stream: _Readable, block_size: int) -> tuple[bytes, bool]:
    """The first block, extended to hold a whole line, and whether it is the whole file."""
    parts: list[bytes] = []
    size = 0
    limit = _record_limit(block_size)
    while True:
        piece = stream.read(block_size)
        if not piece:
            return b"".join(parts), True
        parts.append(piece)
        size += len(piece)
        if size >= block_size and any(b"\n" in p or b"\r" in p for p in parts):
            return b"".join(parts), False
        if size > limit:
            raise MalformedFile(f"the first record is longer than {limit} bytes")


def _record_limit(block_size: int) -> int:
    return max(16 * block_size, 64 * _MiB)


def _record_numbers(start: int, end: int, failed: list[int]) -> Callable[[], npt.NDArray[np.int64]]:
    def numbers() -> npt.NDArray[np.int64]:
        every = np.arange(start, end, dtype=np.int64)
        return np.setdiff1d(every, np.array(failed, dtype=np.int64), assume_unique=True) if failed else every

    return numbers


class _JsonlEngine:
    """JSON Lines in blocks of whole lines. A block goes through pyarrow's JSON reader with an explicit
    schema; when that fails, or when a json column needs a value's JSON text (which pyarrow cannot give),
    the block is parsed line by line with `json`, which finds the bad lines.

    Keys map to columns by exact name or by their `column_names` form.
    """

    def __init__(self, source: _Source, stream: _Readable, given: list[ColumnDef] | None, block_size: int) -> None:
        self._source = source
        self._blocks = _line_blocks(stream, block_size)
        self._first = next(self._blocks, None)
        self._keys: dict[str, int] = {}  # key in the file -> column index
        if given is None:
            self.columns = self._infer(self._first[0] if self._first else b"")
        else:
            self.columns = given
            self._keys = {c.name: i for i, c in enumerate(given)}
        self._by_name = {c.name: i for i, c in enumerate(self.columns)}
        self._is_json = [c.logical_type == "json" for c in self.columns]
        self._python_only = any(c.logical_type == "json" for c in self.columns)

    def _infer(self, block: bytes) -> list[ColumnDef]:
        kinds: dict[str, set[str]] = {}
        strings: dict[str, list[str]] = {}
        for line in block.split(b"\n"):
            try:
                row = json.loads(line) if line.strip() else None
            except (ValueError, RecursionError):
                continue
            if not isinstance(row, dict):
                continue
            for key, value in row.items():
                kinds.setdefault(key, set()).add(_json_kind(value))
                if isinstance(value, str):
                    strings.setdefault(key, []).append(value)
        if not kinds:
            raise MalformedFile("no columns: the first block of the file has no JSON object with keys")
        keys = list(kinds)
        self._keys = {key: i for i, key in enumerate(keys)}
        logical_types = []
        for key in keys:
            found = kinds[key] - {"null"}
            if found == {"str"}:
                candidates = pa.array(strings[key], pa.string())
                logical_types.append(_infer_strings(candidates, _JSON_STRING_CANDIDATES))
            else:
                logical_types.append(_JSON_KINDS.get(frozenset(found), "json"))
        return _inferred(column_names(keys), logical_types)

    def _column_of(self, key: str) -> int | None:
        index = self._keys.get(key)
        if index is None:
            index = self._by_name.get(key)
            if index is None:
                index = self._by_name.get(column_names([key])[0])
            if index is not None:
                self._keys[key] = index
        return index

    def chunks(self) -> Generator[_Chunk, None, None]:
        if self._first is None:
            return
        blocks = self._blocks
        block, first_line = self._first
        self._first = None
        while True:
            lines = _nonblank_lines(block, first_line)
            if len(lines):
                chunk = None if self._python_only else self._fast(block, lines)
                yield chunk or self._slow(block, first_line)
            with self._source.reading():
                nxt = next(blocks, None)
            if nxt is None:
                return
            block, first_line = nxt

    def _fast(self, block: bytes, lines: npt.NDArray[np.int64]) -> _Chunk | None:
        """The block by pyarrow's JSON reader, or None when it fails or may have miscounted lines."""
        keys_of: list[list[str]] = [[] for _ in self.columns]
        for key, index in self._keys.items():
            keys_of[index].append(key)
        if any(len(keys) > 1 for keys in keys_of):
            return None
        schema = pa.schema(
            (keys[0], _JSON_READ_TYPES[c.logical_type]) for keys, c in zip(keys_of, self.columns, strict=True) if keys
        )
        try:
            table = pajson.read_json(
                io.BytesIO(block),
                read_options=pajson.ReadOptions(use_threads=False, block_size=len(block) + 1),
                parse_options=pajson.ParseOptions(
                    explicit_schema=schema, unexpected_field_behavior="error", newlines_in_values=False
                ),
            )
        except (pa.ArrowException, ValueError):
            return None
        if table.num_rows != len(lines):  # two objects on one line
            return None
        if not _valid_utf8(table):  # pyarrow's JSON reader keeps invalid bytes in strings: the slow path finds the line
            return None
        columns = []
        for keys, column in zip(keys_of, self.columns, strict=True):
            if not keys:
                columns.append(_Converted(pa.nulls(len(lines), ARROW_TYPES[column.logical_type])))
                continue
            columns.append(_from_json_values(table.column(keys[0]).combine_chunks(), column.logical_type))
        return _Chunk(columns, len(lines), lambda: lines)

    def _slow(self, block: bytes, first_line: int) -> _Chunk:
        """The block line by line with `json`: the bad lines are found, and json columns get their text."""
        rows: list[list[Any]] = []
        numbers: list[int] = []
        early: list[MalformedFile] = []
        for offset, line in enumerate(block.split(b"\n")):
            if line.strip():
                row = self._parse_line(line)
                if isinstance(row, MalformedFile):
                    row.row = first_line + offset
                    early.append(row)
                else:
                    rows.append(row)
                    numbers.append(first_line + offset)
        values = list(zip(*rows, strict=True)) if rows else [() for _ in self.columns]
        columns = [_from_python(v, c.logical_type) for v, c in zip(values, self.columns, strict=True)]
        found = np.array(numbers, dtype=np.int64)
        return _Chunk(columns, len(numbers), lambda: found, early)

    def _parse_line(self, line: bytes) -> list[Any] | MalformedFile:
        """The line's value for each column (JSON text for json columns, other values unchecked), or what is
        wrong with it. A key repeated in one object keeps its last value, as in `json`.
        """
        try:
            obj = _DECODER.decode(line.decode("utf-8"))
        except UnicodeDecodeError:
            return MalformedFile("the line is not valid UTF-8")
        except (ValueError, RecursionError) as exc:
            return MalformedFile(f"the line is not valid JSON: {exc}")
        if type(obj) is not dict:
            return MalformedFile(f"the line is a JSON {_json_kind(obj)}, not an object")
        row: list[Any] = [None] * len(self.columns)
        keys, is_json = self._keys, self._is_json
        seen: set[int] | None = set() if len(keys) > len(self.columns) else None  # several keys for one column
        for key, value in obj.items():
            index = keys.get(key)
            if index is None:
                index = self._column_of(key)
                if index is None:
                    names = ", ".join(c.name for c in self.columns[:20])
                    return MalformedFile(f"key {key!r} is unknown; the columns are {names}")
            if seen is not None:
                if index in seen:
                    return MalformedFile(f"key {key!r} is a second key for column {self.columns[index].name!r}")
                seen.add(index)
            if value is None or not is_json[index]:
                row[index] = value
                continue
            text, problem = _jsonb_text(value)
            if problem is not None:
                return MalformedFile(problem, column=self.columns[index].name)
            row[index] = text
        return row


def _is_int64(value: Any) -> bool:
    return type(value) is int and -(2**63) <= value < 2**63


def _is_float(value: Any) -> bool:
    return type(value) is float or (type(value) is int and _fits_float(value))


def _is_bool(value: Any) -> bool:
    return type(value) is bool


def _is_string_value(value: Any) -> bool:
    return type(value) is str and (value.isascii() or _encodable(value))


# Which JSON values a scalar column takes, as pyarrow's JSON reader decides: first by Python type, then each.
_JSON_TYPES: dict[str, set[type]] = {"integer": {int}, "float": {int, float}, "boolean": {bool}}
_JSON_CHECKS = {"integer": _is_int64, "float": _is_float, "boolean": _is_bool}
_DECODER = json.JSONDecoder()
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _from_python(values: Sequence[Any], logical: str) -> _Converted:
    """Python values parsed from JSON (JSON text for json columns) in their logical type."""
    kind = _JSON_READ_TYPES[logical]
    if logical == "json":
        return _Converted(pa.ExtensionArray.from_storage(_JSON, pa.array(values, kind)))
    if set(map(type, values)) <= {type(None), *_JSON_TYPES.get(logical, {str})}:
        try:
            return _from_json_values(pa.array(values, kind), logical)
        except (pa.ArrowException, ValueError, TypeError, OverflowError):
            pass  # out of range, or a lone surrogate
    check = _JSON_CHECKS.get(logical, _is_string_value)
    bad = np.fromiter((v is not None and not check(v) for v in values), dtype=np.bool_, count=len(values))
    kept = pa.array([None if b else v for v, b in zip(values, bad, strict=True)], kind)
    first = _Converted(kept, bad, lambda i: f"{_show(values[i])} is not {_EXPECTED[logical]}")
    return _merge(first, _from_json_values(kept, logical))


_JSON_KINDS = {
    frozenset(): "text",
    frozenset({"bool"}): "boolean",
    frozenset({"int"}): "integer",
    frozenset({"int", "float"}): "float",
    frozenset({"float"}): "float",
    frozenset({"bigint"}): "float",
    frozenset({"int", "bigint"}): "float",
    frozenset({"bigint", "float"}): "float",
    frozenset({"int", "bigint", "float"}): "float",
}
# What pyarrow's JSON reader reads each logical type as; string ones are converted afterwards.
_JSON_READ_TYPES = {
    "boolean": pa.bool_(),
    "integer": pa.int64(),
    "float": pa.float64(),
    "text": pa.string(),
    "uuid": pa.string(),
    "date": pa.string(),
    "time": pa.string(),
    "timestamp": pa.string(),
    "json": pa.string(),
}


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if -(2**63) <= value < 2**63 else "bigint"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return "array" if isinstance(value, list) else "object"


def _fits_float(value: int) -> bool:
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _line_blocks(stream: _Readable, block_size: int) -> Iterator[tuple[bytes, int]]:
    """Blocks of whole lines (the last may lack its newline), each with the number of its first line."""
    carry = b""
    line = 1
    first = True
    limit = _record_limit(block_size)
    while True:
        chunk = stream.read(block_size)
        if first:
            chunk, first = chunk.removeprefix(_UTF8_BOM), False
        if not chunk:
            if carry:
                yield carry, line
            return
        data = carry + chunk if carry else chunk
        cut = data.rfind(b"\n") + 1
        if not cut:
            if len(data) > limit:
                raise MalformedFile(f"the line is longer than {limit} bytes", row=line)
            carry = data
            continue
        block, carry = data[:cut], data[cut:]
        yield block, line
        line += block.count(b"\n")


def _nonblank_lines(block: bytes, first_line: int) -> npt.NDArray[np.int64]:
    """The numbers of the block's lines that hold more than spaces."""
    data = np.frombuffer(block, dtype=np.uint8)
    ends = np.flatnonzero(data == 10)
    if not block.endswith(b"\n"):
        ends = np.append(ends, len(data))
    starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
    blank = ends == starts
    # Lines that start with a space might be only spaces: look at those one by one (rare).
    spaced = np.flatnonzero(~blank)
    if len(spaced):
        spaced = spaced[np.isin(data[starts[spaced]], (9, 13, 32))]
    for index in spaced:
        blank[index] = not block[starts[index] : ends[index]].strip()
    result: npt.NDArray[np.int64] = first_line + np.flatnonzero(~blank).astype(np.int64)
    return result


class _ParquetEngine:
    """Parquet by row batches, each column converted from the file's type (random access, read by pyarrow)."""

    def __init__(self, source: _Source, options: IngestOptions, given: list[ColumnDef] | None, block_size: int) -> None:
        if options.compression in ("gzip", "zstd"):
            raise MalformedFile(f"a Parquet file cannot be {options.compression}-compressed as a whole")
        magic = source.read(4)
        if magic.startswith(_GZIP_MAGIC) or magic == _ZSTD_MAGIC:
            raise MalformedFile("a Parquet file cannot be compressed as a whole (this one is gzip or zstd)")
        if magic != _PARQUET_MAGIC:
            raise MalformedFile("the file is not a Parquet file: it does not start with PAR1")
        self._source = source
        self._size = source.measure()
        # No pre-buffering and no threads: pyarrow would read the caller's file from its own threads
        # (see _Feeder for why that is avoided); decoding stays far faster than the rest of the import.
        with source.reading("the file is not a readable Parquet file"):
            self._file = pq.ParquetFile(source, pre_buffer=False)
        schema = self._file.schema_arrow
        raw_names = list(schema.names)
        fields = [schema.field(i) for i in range(len(raw_names))]
        if given is None:
            logical_types = []
            for f in fields:
                logical = _parquet_logical(f.type)
                if logical is None:
                    raise MalformedFile(
                        f"has Parquet type {f.type}, which cannot be imported as is; give the columns with a"
                        " type for it (such as float or text for a decimal, text for binary)",
                        column=f.name,
                    )
                logical_types.append(logical)
            self.columns = _inferred(column_names(raw_names), logical_types)
            self._order = list(range(len(fields)))
        else:
            self.columns = given
            self._order = _match_by_name(raw_names, given)
            for column, position in zip(given, self._order, strict=True):
                _check_castable(fields[position], column)
        self._fields = fields
        metadata = self._file.metadata
        row_bytes = max(1, sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups)))
        row_bytes = max(1, row_bytes // max(1, metadata.num_rows))
        self._batch_rows = max(1, min(block_size // row_bytes, _MiB))

    def chunks(self) -> Generator[_Chunk, None, None]:
        names = [self._fields[p].name for p in self._order]
        start = 1
        with self._source.reading("the Parquet file cannot be read"):
            batches = self._file.iter_batches(
                batch_size=self._batch_rows, columns=list(dict.fromkeys(names)), use_threads=False
            )
        while True:
            with self._source.reading(f"the Parquet file cannot be read after row {start - 1}"):
                batch = next(batches, None)
            if batch is None:
                return
            columns = []
            for position, column in zip(self._order, self.columns, strict=True):
                values = batch.column(self._fields[position].name)
                bad = _first_invalid_utf8(values)  # Parquet readers do not check the UTF-8 of strings
                if bad is not None:
                    raise MalformedFile("the text is not valid UTF-8", row=start + bad, column=column.name)
                columns.append(_from_arrow(values, column))
            yield _Chunk(columns, batch.num_rows, _numbers_from(start, batch.num_rows))
            start += batch.num_rows


def _valid_utf8(data: pa.Table | pa.Array) -> bool:
    """Whether every string in `data` is UTF-8 (a full validation: SIMD-fast, about a GB/s)."""
    try:
        data.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _first_invalid_utf8(values: pa.Array) -> int | None:
    """The 0-based index of the first value whose text is not UTF-8 (found by halving), or None."""
    if "string" not in str(values.type) or _valid_utf8(values):
        return None
    low, high = 0, len(values)  # the first invalid value is in [low, high)
    while high - low > 1:
        middle = (low + high) // 2
        if _valid_utf8(values.slice(low, middle - low)):
            low = middle
        else:
            high = middle
    return low


def _numbers_from(start: int, count: int) -> Callable[[], npt.NDArray[np.int64]]:
    return lambda: np.arange(start, start + count, dtype=np.int64)


def _match_by_name(raw_names: list[str], given: list[ColumnDef]) -> list[int]:
    """The file column of each given column, whose name is a file column's name or its `column_names` form;
    every file column must be given.
    """
    position_of: dict[str, int] = {}
    for position, (raw, name) in enumerate(zip(raw_names, column_names(raw_names), strict=True)):
        position_of.setdefault(raw, position)
        position_of.setdefault(name, position)
    order = []
    for column in given:
        if column.name not in position_of:
            listed = ", ".join(repr(n) for n in raw_names)
            raise MalformedFile(f"the file has no column {column.name!r}; it has {listed}", column=column.name)
        order.append(position_of[column.name])
    used = set(order)
    extra = [raw_names[p] for p in range(len(raw_names)) if p not in used]
    if extra:
        raise MalformedFile(f"the file has columns that were not given: {', '.join(repr(n) for n in extra)}")
    return order


def _parquet_logical(kind: pa.DataType) -> str | None:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    checks: list[tuple[Callable[[pa.DataType], bool], str]] = [
        (pa.types.is_integer, "integer"),
        (pa.types.is_floating, "float"),
        (pa.types.is_boolean, "boolean"),
        (_is_string, "text"),
        (pa.types.is_null, "text"),
        (pa.types.is_date, "date"),
        (pa.types.is_timestamp, "timestamp"),
        (pa.types.is_time, "time"),
        (lambda k: isinstance(k, pa.UuidType), "uuid"),
        (lambda k: isinstance(k, pa.JsonType), "json"),
        (pa.types.is_nested, "json"),
    ]
    return next((logical for check, logical in checks if check(kind)), None)


def _is_string(kind: pa.DataType) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind))


def _check_castable(file_field: pa.Field, column: ColumnDef) -> None:
    """Fail before any row when a file column's type cannot become the given column's."""
    kind = file_field.type.value_type if pa.types.is_dictionary(file_field.type) else file_field.type
    logical = column.logical_type
    if _is_string(kind) or logical == "json":
        return
    if logical == "uuid" and (isinstance(kind, pa.UuidType) or kind == pa.binary(16)):
        return
    try:
        pc.cast(pa.nulls(0, kind), pa.string() if logical == "text" else ARROW_TYPES[logical])
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise MalformedFile(
            f"has Parquet type {kind}, which cannot be imported as {logical}", column=column.name
        ) from exc


# ---------------------------------------------------------------------------------------------------------------
# Conversion of columns to their logical types


def _from_csv(column: pa.Array, logical: str) -> _Converted:
    """A CSV column read as bytes (never NULL) in its logical type."""
    invalid: Bools | None = None
    try:
        strings = column.cast(pa.string())
    except pa.ArrowInvalid:
        invalid = _failing_rows(column, _cast_to(pa.string()))
        strings = _null_where(column, invalid).cast(pa.string())
    converted = _from_strings(strings, logical)
    if invalid is None:
        return converted
    return _merge(
        _Converted(converted.values, invalid, lambda i: f"{_show(column[i].as_py())} is not UTF-8"), converted
    )


def _from_json_values(array: pa.Array, logical: str) -> _Converted:
    """A column from the JSON reader (int64, float64, bool or string) in its logical type."""
    if logical in ("integer", "float", "boolean"):
        return _Converted(array)
    if logical == "json":  # checked already
        return _Converted(pa.ExtensionArray.from_storage(_JSON, array))
    return _from_strings(array, logical)


def _from_strings(strings: pa.Array, logical: str) -> _Converted:
    """Strings (NULL allowed) in a logical type: see the module docstring for each type's forms."""
    if logical == "text":
        return _text(strings)
    if logical == "json":
        return _json_column(strings)
    parse = _PARSERS[logical]
    values = _empty_as_null(strings)
    try:
        return _Converted(parse(values))
    except _CONVERSION_ERRORS:
        pass
    values = _empty_as_null(pc.utf8_trim_whitespace(values))
    try:
        return _Converted(parse(values))
    except _CONVERSION_ERRORS:
        pass
    bad = _failing_rows(values, parse)
    expected = _EXPECTED[logical]
    return _Converted(parse(_null_where(values, bad)), bad, lambda i: f"{_show(strings[i].as_py())} is not {expected}")


def _text(strings: pa.Array) -> _Converted:
    values = strings.cast(pa.large_string())
    if not _may_hold_nul(strings):
        return _Converted(values)
    bad = pc.fill_null(pc.match_substring(strings, "\x00"), False).to_numpy(zero_copy_only=False)
    if not bad.any():
        return _Converted(values)
    return _Converted(_null_where(values, bad), bad, lambda _: "NUL characters cannot be stored in text")


def _may_hold_nul(strings: pa.Array) -> bool:
    data = strings.buffers()[2]
    return data is not None and not np.frombuffer(data, dtype=np.uint8).all()


def _json_column(strings: pa.Array) -> _Converted:
    """JSON text, checked value by value (no vectorized JSON validation exists in Arrow)."""
    values = _empty_as_null(strings)
    texts = values.to_pylist()
    bad = np.zeros(len(texts), dtype=np.bool_)
    problems: dict[int, str] = {}
    blank = np.zeros(len(texts), dtype=np.bool_)
    for index, text in enumerate(texts):
        if text is None:
            continue
        if not text.strip():
            blank[index] = True
            continue
        problem = _json_text_problem(text)
        if problem is not None:
            bad[index] = True
            problems[index] = problem
    storage = _null_where(values, bad | blank) if bad.any() or blank.any() else values
    json_values = pa.ExtensionArray.from_storage(_JSON, storage.cast(pa.string()))
    return _Converted(json_values, bad if bad.any() else None, lambda i: f"{_show(texts[i])} {problems[i]}")


def _json_text_problem(text: str) -> str | None:
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        return f"is not valid JSON ({exc})"
    if "\\u" not in text:
        return None
    if _NUL_ESCAPE.search(text):
        return "holds \\u0000, which PostgreSQL's jsonb rejects"
    if _SURROGATE_ESCAPE.search(text) and not _encodable(json.dumps(value, ensure_ascii=False)):
        return "holds a lone UTF-16 surrogate, which PostgreSQL's jsonb rejects"
    return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _jsonb_text(value: Any, encoder: json.JSONEncoder = _ENCODER) -> tuple[str | None, str | None]:
    """A Python value as JSON text for jsonb, or None and what keeps it out."""
    try:
        text = encoder.encode(value)
    except (ValueError, RecursionError):
        return None, f"{_show(value)} holds NaN or Infinity, which are not JSON"
    if _NUL_ESCAPE.search(text):
        return None, f"{_show(value)} holds \\u0000, which PostgreSQL's jsonb rejects"
    if not text.isascii() and not _encodable(text):
        return None, f"{_show(value)} holds a lone UTF-16 surrogate, which PostgreSQL's jsonb rejects"
    return text, None


def _empty_as_null(strings: pa.Array) -> pa.Array:
    present = pc.greater(pc.binary_length(strings), 0)
    if strings.null_count == 0 and _all(present):
        return strings
    if strings.null_count == 0 and strings.offset == 0:  # reuse the buffers; only the validity changes
        return pa.Array.from_buffers(strings.type, len(strings), [present.buffers()[1], *strings.buffers()[1:]])
    return pc.if_else(present, strings, pa.scalar(None, strings.type))


def _null_where(values: pa.Array, bad: Bools) -> pa.Array:
    if isinstance(values.type, pa.BaseExtensionType):  # canonical ones (json, uuid) too
        return pa.ExtensionArray.from_storage(values.type, _null_where(values.storage, bad))
    return pc.if_else(pa.array(bad), pa.scalar(None, values.type), values)


def _merge(first: _Converted, then: _Converted) -> _Converted:
    """Two checks of one column, `then` made from `first`'s values: a row bad in `first` keeps its reason."""
    if first.bad is None or not first.bad.any():
        return then
    bad_first = first.bad
    if then.bad is None or not then.bad.any():
        return _Converted(_null_where(then.values, bad_first), bad_first, first.why)

    def why(index: int) -> str:
        return first.why(index) if bad_first[index] else then.why(index)

    return _Converted(_null_where(then.values, bad_first | then.bad), bad_first | then.bad, why)


def _all(flags: pa.Array) -> bool:
    """Whether every flag is true (NULL counts as false), true when there are none."""
    return bool(pc.all(flags, skip_nulls=False, min_count=0).as_py())


def _any(flags: pa.Array) -> bool:
    return bool(pc.any(flags, min_count=0).as_py())


def _failing_rows(values: pa.Array, convert: Callable[[pa.Array], pa.Array]) -> Bools:
    """The rows that `convert` rejects, by bisection: a row is bad exactly when converting it alone fails."""
    bad = np.zeros(len(values), dtype=np.bool_)
    pending = [(0, len(values))]
    while pending:
        start, stop = pending.pop()
        if start >= stop:
            continue
        try:
            convert(values.slice(start, stop - start))
            continue
        except _CONVERSION_ERRORS:
            pass
        if stop - start == 1:
            bad[start] = True
            continue
        middle = (start + stop) // 2
        pending += [(middle, stop), (start, middle)]
    return bad


def _cast_to(kind: pa.DataType, *, safe: bool = True) -> Callable[[pa.Array], pa.Array]:
    def cast(values: pa.Array) -> pa.Array:
        return values.cast(kind, safe=safe)

    return cast


def _parse_boolean(strings: pa.Array) -> pa.Array:
    lower = pc.utf8_lower(strings)
    true = pc.is_in(lower, value_set=_TRUE_WORDS)
    known = pc.or_(true, pc.is_in(lower, value_set=_FALSE_WORDS))
    if not _all(pc.or_(known, pc.is_null(strings))):
        raise ValueError("not a boolean")
    return pc.if_else(pc.is_null(strings), pa.scalar(None, pa.bool_()), true)


def _parse_timestamp(strings: pa.Array) -> pa.Array:
    # Whole columns with an offset, or all without (UTC); the first value picks which to try first,
    # as a failing cast costs many times a successful one.
    first = _first_valid(strings)
    attempts = [_cast_to(_TIMESTAMP), _cast_to(pa.timestamp("us"))]
    if first is None or not re.search(_ZONE_RE, first):
        attempts.reverse()
    for attempt in attempts:
        try:
            return attempt(strings).cast(_TIMESTAMP)
        except pa.ArrowInvalid:
            pass
    strings = pc.replace_substring_regex(strings, _EXTRA_DIGITS_RE, r"\1")
    zoned = pc.match_substring_regex(strings, _ZONE_RE)
    with_zone = pc.if_else(zoned, strings, pa.scalar(None, strings.type)).cast(_TIMESTAMP)
    without = pc.if_else(zoned, pa.scalar(None, strings.type), strings).cast(pa.timestamp("us")).cast(_TIMESTAMP)
    return pc.if_else(zoned, with_zone, without)


def _first_valid(strings: pa.Array) -> str | None:
    if strings.null_count == len(strings):
        return None
    if not strings.null_count:
        return str(strings[0].as_py())
    return str(strings[int(np.argmax(strings.is_valid().to_numpy(zero_copy_only=False)))].as_py())


def _parse_time(strings: pa.Array) -> pa.Array:
    stamps = pc.binary_join_element_wise(pa.scalar("1970-01-01T"), strings, pa.scalar(""))
    try:
        micros = stamps.cast(pa.timestamp("us"))
    except pa.ArrowInvalid:
        micros = pc.replace_substring_regex(stamps, _EXTRA_DIGITS_RE, r"\1").cast(pa.timestamp("us"))
    return micros.cast(pa.time64("us"))


_HEX_VALUE = np.full(256, -1, dtype=np.int16)
for _digit, _char in enumerate("0123456789abcdef"):
    _HEX_VALUE[ord(_char)] = _HEX_VALUE[ord(_char.upper())] = _digit
_DASHES = np.array([8, 13, 18, 23])
_HEX_POSITIONS = np.array([i for i in range(36) if i not in (8, 13, 18, 23)])
_ZERO_UUID = pa.scalar("00000000-0000-0000-0000-000000000000")


def parse_uuid(strings: pa.Array) -> pa.Array:
    """Canonical UUID text (8-4-4-4-12 hex digits, any case) as 16 bytes, with numpy over the fixed-width text."""
    count = len(strings)
    filled = pc.fill_null(strings, _ZERO_UUID).cast(pa.string()) if strings.null_count else strings.cast(pa.string())
    if count == 0:
        return pa.array([], pa.binary(16))
    if _any(pc.not_equal(pc.binary_length(filled), 36)):
        raise ValueError("not a UUID")
    offsets = np.frombuffer(filled.buffers()[1], dtype=np.int32, count=count + 1, offset=filled.offset * 4)
    text = np.frombuffer(filled.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]].reshape(count, 36)
    digits = _HEX_VALUE[text[:, _HEX_POSITIONS]]
    if (text[:, _DASHES] != ord("-")).any() or (digits < 0).any():
        raise ValueError("not a UUID")
    raw = ((digits[:, 0::2] << 4) | digits[:, 1::2]).astype(np.uint8)
    validity = pc.is_valid(strings).buffers()[1] if strings.null_count else None
    return pa.Array.from_buffers(pa.binary(16), count, [validity, pa.py_buffer(np.ascontiguousarray(raw))])


_PARSERS: dict[str, Callable[[pa.Array], pa.Array]] = {
    "integer": _cast_to(pa.int64()),
    "float": _cast_to(pa.float64()),
    "boolean": _parse_boolean,
    "date": _cast_to(pa.date32()),
    "time": _parse_time,
    "timestamp": _parse_timestamp,
    "uuid": parse_uuid,
}
_CSV_CANDIDATES = ("integer", "float", "boolean", "date", "timestamp", "time", "uuid")
_JSON_STRING_CANDIDATES = ("date", "timestamp", "time", "uuid")


def _infer_strings(strings: pa.Array, candidates: Sequence[str]) -> str:
    """The first candidate type that every value converts to, or text."""
    present = _empty_as_null(pc.utf8_trim_whitespace(strings)).drop_null()
    if not len(present):
        return "text"
    head = present.slice(0, 100)  # most candidates fail on the first values, and a failing cast is slow
    for logical in candidates:
        if logical in ("integer", "float") and _any(pc.match_substring_regex(present, r"^[+-]?0\d|[xX]")):
            continue  # zip codes, account numbers, hex: keep their text
        if logical == "float" and _all(pc.match_substring_regex(present, r"^[+-]?\d+$")):
            continue  # integers too big for 64 bits: floats would lose their digits
        try:
            _PARSERS[logical](head)
            _PARSERS[logical](present)
        except _CONVERSION_ERRORS:
            continue
        return logical
    return "text"


def _utf8_or_none(column: pa.Array) -> pa.Array | None:
    try:
        return column.cast(pa.string())
    except pa.ArrowInvalid:
        return None


def _from_arrow(column: pa.Array, target: ColumnDef) -> _Converted:
    """A Parquet column in its logical type."""
    logical = target.logical_type
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    kind = column.type
    if _is_string(kind):
        strings = column.cast(pa.string())
        return _text(strings) if logical == "text" else _from_strings(strings, logical)
    if logical == "json":
        if isinstance(kind, pa.JsonType):
            return _json_column(column.storage.cast(pa.string()))
        return _json_dumped(column, target.name)
    if logical == "uuid" and isinstance(kind, pa.UuidType):
        return _Converted(column.storage)
    if logical == "text":
        converted = _checked_cast(column, pa.string())
        return _merge(converted, _text(converted.values))
    if logical == "timestamp" and pa.types.is_timestamp(kind):
        column = column.cast(pa.timestamp(kind.unit, tz="UTC"))  # relabels: naive values are taken as UTC
    if logical in ("timestamp", "time") and _is_nanoseconds(column.type):
        column = column.cast(ARROW_TYPES[logical], safe=False)  # truncated: PostgreSQL keeps microseconds
    converted = _checked_cast(column, ARROW_TYPES[logical])
    return _merge(converted, _out_of_range(converted.values, logical))


def _is_nanoseconds(kind: pa.DataType) -> bool:
    return bool((pa.types.is_timestamp(kind) or pa.types.is_time64(kind)) and kind.unit == "ns")


def _checked_cast(column: pa.Array, kind: pa.DataType) -> _Converted:
    cast = _cast_to(kind)
    try:
        return _Converted(cast(column))
    except _CONVERSION_ERRORS:
        pass
    bad = _failing_rows(column, cast)
    return _Converted(cast(_null_where(column, bad)), bad, lambda i: f"{_show_scalar(column[i])} does not fit {kind}")


def _out_of_range(values: pa.Array, logical: str) -> _Converted:
    """Dates and times PostgreSQL cannot hold, which Parquet can."""
    bounds = {
        "date": (pa.int32(), _PG_MIN_DAYS, _PG_END_DAYS - 1),
        "timestamp": (pa.int64(), _PG_MIN_MICROS, None),
        "time": (pa.int64(), 0, _DAY_MICROS),
    }.get(logical)
    if bounds is None or not len(values) or values.null_count == len(values):
        return _Converted(values)
    storage_type, low, high = bounds
    numbers = values.view(storage_type)
    extremes = pc.min_max(numbers).as_py()
    if extremes["min"] >= low and (high is None or extremes["max"] <= high):
        return _Converted(values)
    outside = pc.less(numbers, low) if high is None else pc.or_(pc.less(numbers, low), pc.greater(numbers, high))
    bad = pc.fill_null(outside, False).to_numpy(zero_copy_only=False)
    unit = {"date": "days", "timestamp": "microseconds", "time": "microseconds"}[logical]
    return _Converted(
        values, bad, lambda i: f"{numbers[i].as_py()} {unit} since 1970 is out of PostgreSQL's {logical} range"
    )


def _json_dumped(column: pa.Array, name: str) -> _Converted:
    """Any other column (nested ones above all) as JSON text, value by value."""
    try:
        values = column.to_pylist(maps_as_pydicts="lossy")
    except (pa.ArrowException, ValueError) as exc:
        raise MalformedFile(f"has values that cannot be turned into JSON: {exc}", column=name) from exc
    texts: list[str | None] = []
    bad = np.zeros(len(values), dtype=np.bool_)
    problems: dict[int, str] = {}
    for index, value in enumerate(values):
        text, problem = (None, None) if value is None else _jsonb_text(value, _PARQUET_ENCODER)
        if problem is not None:
            bad[index] = True
            problems[index] = problem
        texts.append(text)
    storage = pa.array(texts, pa.string())
    return _Converted(pa.ExtensionArray.from_storage(_JSON, storage), bad if bad.any() else None, problems.__getitem__)


def _to_json(value: Any) -> Any:
    """JSON for the Python values of Arrow types that JSON lacks (practical, not reversible)."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return str(value)


def _show_scalar(scalar: pa.Scalar) -> str:
    try:
        return _show(scalar.as_py())
    except (pa.ArrowException, ValueError, OverflowError):
        return str(scalar)


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str | bytes) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


_PARQUET_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_to_json)
