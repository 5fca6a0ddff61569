"""The `datamill` command line: generate, export, watch and inspect jobs and datasets.

Results go to stdout (tables, or one JSON document per line with ``--json``);
progress bars and errors go to stderr. Exit codes:

    0    success
    1    a call failed, or the job watched ended FAILED or CANCELLED
    2    invalid input: bad options, an unreadable schema, or INVALID_ARGUMENT
    130  interrupted (the job keeps running on the server)
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import click
import grpc
from rich.console import Console

from client import _render as render
from client._requests import enum_choices, is_terminal
from client._upload import UploadOptions
from client.errors import DatamillError
from client.schema_file import SchemaError, load_schema, parse_schema
from client.sync import Client
from datamill.v1 import job_pb2, job_service_pb2

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_INTERRUPTED = 130

_FORMATS = enum_choices(job_service_pb2.FileFormat, "FILE_FORMAT_")
_COMPRESSIONS = enum_choices(job_service_pb2.Compression, "COMPRESSION_")
_KINDS = enum_choices(job_pb2.JobKind, "JOB_KIND_")
_STATES = enum_choices(job_pb2.JobState, "JOB_STATE_")


@dataclass
class _Settings:
    """The global options, and the client they open on first use."""

    target: str
    tls: bool
    ca_cert: Path | None
    client_cert: Path | None
    client_key: Path | None
    token: str | None
    timeout: float
    json_output: bool
    out: Console = field(init=False)
    err: Console = field(init=False)
    _client: Client | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        # Created per invocation so that they write to the streams of that invocation.
        self.out = Console(highlight=False)
        self.err = Console(stderr=True, highlight=False)

    def client(self) -> Client:
        if self._client is None:
            metadata = [("authorization", f"Bearer {self.token}")] if self.token else []
            root_certificates = self.ca_cert.read_bytes() if self.ca_cert is not None else None
            self._client = Client.connect(
                self.target,
                tls=self.tls,
                root_certificates=root_certificates,
                certificate_chain=self.client_cert.read_bytes() if self.client_cert is not None else None,
                private_key=self.client_key.read_bytes() if self.client_key is not None else None,
                metadata=metadata,
                timeout=self.timeout,
            )
            click.get_current_context().find_root().call_on_close(self._client.close)
        return self._client

    def show_job(self, job: job_pb2.Job) -> None:
        if self.json_output:
            render.print_json(self.out, render.to_json(job))
        else:
            self.out.print(render.job_table(job))


class _Group(click.Group):
    """Turns client errors into a clean message and an exit code instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (DatamillError, SchemaError) as exc:
            settings = ctx.find_object(_Settings)
            _fail(exc, settings)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)


def _fail(error: DatamillError | SchemaError, settings: _Settings | None) -> NoReturn:
    if settings is not None and settings.json_output:
        render.print_json(settings.err, {"error": render.error_json(error)})
    else:
        for line in render.error_lines(error):
            click.echo(line, err=True)
        if isinstance(error, DatamillError) and error.code == grpc.StatusCode.UNAVAILABLE and settings is not None:
            click.echo(f"  is a datamill server running at {settings.target}?", err=True)
    invalid = isinstance(error, SchemaError) or (
        isinstance(error, DatamillError) and error.code == grpc.StatusCode.INVALID_ARGUMENT
    )
    raise click.exceptions.Exit(EXIT_INVALID if invalid else EXIT_FAILED)


def _job_exit_code(jobs: Sequence[job_pb2.Job]) -> int:
    return EXIT_OK if all(job.state == job_pb2.JOB_STATE_SUCCEEDED for job in jobs) else EXIT_FAILED


pass_settings = click.make_pass_decorator(_Settings)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--target",
    envvar="DATAMILL_TARGET",
    default="127.0.0.1:50051",
    show_default=True,
    help="Server address, host:port (env DATAMILL_TARGET).",
)
@click.option("--tls", is_flag=True, help="Connect with TLS (implied by --ca-cert and --client-cert).")
@click.option(
    "--ca-cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM file of the CA to trust instead of the system's.",
)
@click.option(
    "--client-cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM client certificate chain, for a server that requires mTLS (with --client-key).",
)
@click.option(
    "--client-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM private key of --client-cert.",
)
@click.option("--token", envvar="DATAMILL_TOKEN", help="Bearer token sent with every call (env DATAMILL_TOKEN).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Deadline of each call, in seconds (watches and downloads have none).",
)
@click.option("--json", "json_output", is_flag=True, help="Print JSON (one document per line) instead of tables.")
@click.pass_context
def cli(
    ctx: click.Context,
    *,
    target: str,
    tls: bool,
    ca_cert: Path | None,
    client_cert: Path | None,
    client_key: Path | None,
    token: str | None,
    timeout: float,
    json_output: bool,
) -> None:
    """datamill: make, export and inspect datasets through background jobs."""
    if (client_cert is None) != (client_key is None):
        raise click.UsageError("--client-cert and --client-key go together")
    ctx.obj = _Settings(
        target=target,
        tls=tls,
        ca_cert=ca_cert,
        client_cert=client_cert,
        client_key=client_key,
        token=token,
        timeout=timeout,
        json_output=json_output,
    )


# --- jobs -----------------------------------------------------------------------------------------


@cli.command()
@click.argument("dataset_name")
@click.option("--schema", "schema_path", required=True, help="Schema file, JSON or YAML ('-' for stdin).")
@click.option("--rows", type=click.IntRange(min=1), help="Row count; overrides the schema's.")
@click.option("--seed", type=click.IntRange(min=0, max=2**64 - 1), help="Seed; overrides the schema's.")
@click.option("--request-id", help="Idempotency key; a random one when omitted.")
@click.option("--wait", is_flag=True, help="Show progress until the job ends; exit 1 unless it succeeded.")
@pass_settings
def generate(
    settings: _Settings,
    *,
    dataset_name: str,
    schema_path: str,
    rows: int | None,
    seed: int | None,
    request_id: str | None,
    wait: bool,
) -> None:
    """Generate synthetic rows into the new dataset DATASET_NAME."""
    schema = parse_schema(sys.stdin.read(), source="<stdin>") if schema_path == "-" else load_schema(schema_path)
    if rows is not None:
        schema.rows = rows
    if seed is not None:
        schema.seed = seed
    client = settings.client()
    job = client.generate(dataset_name, schema=schema, request_id=request_id)
    if wait:
        job = _wait(settings, job)
    settings.show_job(job)
    if wait:
        raise click.exceptions.Exit(_job_exit_code([job]))


@cli.command()
@click.argument("job_id")
@pass_settings
def get(settings: _Settings, job_id: str) -> None:
    """Show one job."""
    settings.show_job(settings.client().get_job(job_id))


@cli.command("list")
@click.option("--kind", type=click.Choice(_KINDS, case_sensitive=False), help="Only jobs of this kind.")
@click.option("--state", type=click.Choice(_STATES, case_sensitive=False), help="Only jobs in this state.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="Jobs to show at most.")
@click.option("--all", "all_pages", is_flag=True, help="Show every job, page after page.")
@pass_settings
def list_jobs(settings: _Settings, kind: str | None, state: str | None, limit: int, all_pages: bool) -> None:
    """List jobs, newest first."""
    client = settings.client()
    jobs: list[job_pb2.Job] = []
    page_token = ""
    while True:
        page_size = 1000 if all_pages else min(limit - len(jobs), 1000)
        page = client.list_jobs(kind=kind, state=state, page_size=page_size, page_token=page_token)
        jobs.extend(page.jobs)
        page_token = page.next_page_token
        if not page_token or (not all_pages and len(jobs) >= limit):
            break
    if settings.json_output:
        for job in jobs:
            render.print_json(settings.out, render.to_json(job))
    else:
        settings.out.print(render.jobs_table(jobs))
        if page_token:
            settings.err.print(f"showing the first {len(jobs)} jobs; --all lists every one", style="dim")


@cli.command()
@click.argument("job_ids", nargs=-1, required=True)
@click.option(
    "--after-sequence",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Skip each job's events up to this sequence.",
)
@pass_settings
def watch(settings: _Settings, job_ids: tuple[str, ...], after_sequence: int) -> None:
    """Follow jobs until each ends, on one stream; exit 1 unless all succeeded.

    With --json, print every event as it arrives.
    """
    client = settings.client()
    unique_ids = list(dict.fromkeys(job_ids))
    final: dict[str, job_pb2.Job] = {}
    after = dict.fromkeys(unique_ids, after_sequence)
    with render.JobProgress(settings.err, unique_ids, enabled=not settings.json_output) as progress:
        for event in client.watch(unique_ids, after_sequence=after):
            final[event.job_id] = event.job
            progress.update(event)
            if settings.json_output:
                render.print_json(settings.out, render.to_json(event))
    jobs = [final.get(job_id) or client.get_job(job_id) for job_id in unique_ids]
    if not settings.json_output:
        settings.out.print(render.jobs_table(jobs))
    raise click.exceptions.Exit(_job_exit_code(jobs))


@cli.command()
@click.argument("job_id")
@pass_settings
def cancel(settings: _Settings, job_id: str) -> None:
    """Cancel a job. A running job stops at its next checkpoint."""
    settings.show_job(settings.client().cancel_job(job_id))


# --- export and download --------------------------------------------------------------------------


@cli.command()
@click.argument("dataset")
@click.option("--format", "file_format", type=click.Choice(_FORMATS, case_sensitive=False), required=True)
@click.option("--compression", type=click.Choice(_COMPRESSIONS, case_sensitive=False), help="Not with parquet.")
@click.option("--column", "columns", multiple=True, help="Column to write, in order; repeat for more. Default: all.")
@click.option("--row-limit", type=click.IntRange(min=0), help="Write at most this many rows.")
@click.option("--delimiter", help="CSV: field delimiter, one character (default ,).")
@click.option("--quote", help='CSV: quote character (default ").')
@click.option("--no-header", is_flag=True, help="CSV: no line of column names.")
@click.option("--encoding", help="CSV: text encoding, e.g. latin-1 (default utf-8).")
@click.option("--row-group-size", type=click.IntRange(min=1), help="Parquet: rows per row group (default 131072).")
@click.option(
    "--parquet-compression",
    type=click.Choice(["zstd", "snappy", "gzip", "lz4", "none"], case_sensitive=False),
    help="Parquet: column compression (default zstd).",
)
@click.option(
    "--sql-style", type=click.Choice(["insert", "copy"], case_sensitive=False), help="SQL: INSERT statements or COPY."
)
@click.option("--table-name", help="SQL: table name in the statements (default: the dataset's name).")
@click.option("--create-table", is_flag=True, help="SQL: start with CREATE TABLE.")
@click.option("--rows-per-statement", type=click.IntRange(min=1), help="SQL: rows per INSERT (default 1000).")
@click.option("--request-id", help="Idempotency key; a random one when omitted.")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Wait, then download the file here."
)
@click.option("--wait", is_flag=True, help="Show progress until the job ends; exit 1 unless it succeeded.")
@pass_settings
def export(
    settings: _Settings,
    *,
    dataset: str,
    file_format: str,
    compression: str | None,
    columns: tuple[str, ...],
    row_limit: int | None,
    delimiter: str | None,
    quote: str | None,
    no_header: bool,
    encoding: str | None,
    row_group_size: int | None,
    parquet_compression: str | None,
    sql_style: str | None,
    table_name: str | None,
    create_table: bool,
    rows_per_statement: int | None,
    request_id: str | None,
    output: Path | None,
    wait: bool,
) -> None:
    """Export DATASET (id or name) to a file in object storage, and optionally download it.

    With -o, waits for the job with a progress bar, then downloads the file with a
    second one and checks its SHA-256 against the job's result.
    """
    csv_options = parquet_options = sql_options = None
    if delimiter is not None or quote is not None or no_header or encoding is not None:
        csv_options = job_service_pb2.CsvOptions(delimiter=delimiter or "", quote=quote or "", encoding=encoding or "")
        if no_header:
            csv_options.header = False
    if row_group_size is not None or parquet_compression is not None:
        parquet_options = job_service_pb2.ParquetOptions(
            row_group_size=row_group_size or 0, compression=parquet_compression or ""
        )
    if sql_style is not None or table_name is not None or create_table or rows_per_statement is not None:
        style = {"insert": job_service_pb2.SqlOptions.STYLE_INSERT, "copy": job_service_pb2.SqlOptions.STYLE_COPY}
        sql_options = job_service_pb2.SqlOptions(
            style=style[sql_style.lower()] if sql_style else job_service_pb2.SqlOptions.STYLE_UNSPECIFIED,
            table_name=table_name or "",
            include_create_table=create_table,
            rows_per_statement=rows_per_statement or 0,
        )
    client = settings.client()
    job = client.export(
        dataset,
        format=file_format,
        compression=compression,
        columns=columns,
        row_limit=row_limit,
        request_id=request_id,
        csv_options=csv_options,
        parquet_options=parquet_options,
        sql_options=sql_options,
    )
    if wait or output is not None:
        job = _wait(settings, job)
    settings.show_job(job)
    if output is not None and job.state == job_pb2.JOB_STATE_SUCCEEDED:
        _download(
            settings,
            job.export.object_key,
            output,
            expected_sha256=job.export.sha256,
            total=job.export.size_bytes,
        )
    if wait or output is not None:
        raise click.exceptions.Exit(_job_exit_code([job]))


_UPLOAD_FORMATS = ["csv", "jsonl", "parquet"]
_UPLOAD_TYPES = ["boolean", "integer", "float", "text", "uuid", "date", "time", "timestamp", "json"]


def _parse_column(value: str) -> tuple[str, str, bool]:
    """NAME:TYPE, or NAME:TYPE! for a column that may not be NULL."""
    name, sep, kind = value.partition(":")
    nullable = not kind.endswith("!")
    kind = kind.removesuffix("!")
    if not sep or not name or kind not in _UPLOAD_TYPES:
        raise click.BadParameter(f"{value!r}: expected NAME:TYPE with TYPE one of {', '.join(_UPLOAD_TYPES)}")
    return name, kind, nullable


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dataset", "dataset_name", required=True, help="Name of the dataset to create.")
@click.option(
    "--format", "file_format", type=click.Choice(_UPLOAD_FORMATS, case_sensitive=False), help="Default: from the name."
)
@click.option(
    "--compression",
    type=click.Choice(["none", "gzip", "zstd"], case_sensitive=False),
    help="Whole-file compression; detected by the server when omitted.",
)
@click.option(
    "--column",
    "columns",
    multiple=True,
    help="NAME:TYPE (TYPE! for NOT NULL), in file order; repeat for each. Default: inferred by the server.",
)
@click.option("--delimiter", default="", help="CSV delimiter (default ',', or tab for .tsv).")
@click.option("--no-header", is_flag=True, help="The CSV's first line is data, not column names.")
@click.option("--quote", default="", help="CSV quote character (default '\"').")
@click.option("--encoding", default="", help="Text encoding of the file (default utf-8).")
@click.option("--skip-malformed-rows", is_flag=True, help="Skip and count rows that cannot be imported.")
@click.option("--request-id", help="Idempotency key: repeating it resumes or returns the same upload.")
@click.option("--resume", "upload_id", help="Resume this upload (its id is printed when an upload starts).")
@click.option("--no-wait", is_flag=True, help="Return once the file is stored, without waiting for the import.")
@pass_settings
def upload(
    settings: _Settings,
    *,
    file: Path,
    dataset_name: str,
    file_format: str | None,
    compression: str | None,
    columns: tuple[str, ...],
    delimiter: str,
    no_header: bool,
    quote: str,
    encoding: str,
    skip_malformed_rows: bool,
    request_id: str | None,
    upload_id: str | None,
    no_wait: bool,
) -> None:
    """Upload FILE (CSV, JSON Lines or Parquet, maybe .gz or .zst) and import it as a new dataset.

    The bytes are checked by SHA-256 on the server. A broken connection is
    resumed by itself; after the process was stopped, `--resume UPLOAD_ID`
    continues where the server's stored bytes end.
    """
    options = UploadOptions(
        format=file_format,
        compression=compression,
        columns=[_parse_column(c) for c in columns],
        delimiter=delimiter,
        header=False if no_header else None,
        quote=quote,
        encoding=encoding,
        skip_malformed_rows=skip_malformed_rows,
    )
    client = settings.client()
    with render.download_progress(settings.err, enabled=not settings.json_output) as progress:
        task = progress.add_task(f"upload {file.name}", total=file.stat().st_size or None)

        def started(new_id: str) -> None:
            progress.console.print(f"upload_id {new_id} (resume with --resume {new_id})", style="dim")

        def advance(sent: int, committed: int, size: int) -> None:
            progress.update(task, completed=sent)

        try:
            completed = client.upload(
                file,
                dataset_name,
                options=options,
                request_id=request_id,
                upload_id=upload_id,
                on_progress=advance,
                on_started=started,
            )
        except ValueError as exc:  # the format could not be guessed
            raise click.UsageError(str(exc)) from exc
    job = completed.job
    if not no_wait:
        job = _wait(settings, job)
    settings.show_job(job)
    if not no_wait:
        raise click.exceptions.Exit(_job_exit_code([job]))


@cli.command()
@click.argument("object_key")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option(
    "--sha256", "expected_sha256", help="Expected lower-case hex SHA-256; the file is kept only if it matches."
)
@pass_settings
def download(settings: _Settings, object_key: str, output: Path, expected_sha256: str | None) -> None:
    """Download a stored object (an export's object key) to a file."""
    _download(settings, object_key, output, expected_sha256=expected_sha256, total=None)


# --- datasets -------------------------------------------------------------------------------------


@cli.group()
def datasets() -> None:
    """Inspect and delete datasets."""


@datasets.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="Datasets to show at most.")
@click.option("--all", "all_pages", is_flag=True, help="Show every dataset, page after page.")
@pass_settings
def list_datasets(settings: _Settings, limit: int, all_pages: bool) -> None:
    """List datasets, newest first."""
    client = settings.client()
    found: list[job_pb2.Dataset] = []
    page_token = ""
    while True:
        page_size = 1000 if all_pages else min(limit - len(found), 1000)
        page = client.list_datasets(page_size=page_size, page_token=page_token)
        found.extend(page.datasets)
        page_token = page.next_page_token
        if not page_token or (not all_pages and len(found) >= limit):
            break
    if settings.json_output:
        for dataset in found:
            render.print_json(settings.out, render.to_json(dataset))
    else:
        settings.out.print(render.datasets_table(found))
        if page_token:
            settings.err.print(f"showing the first {len(found)} datasets; --all lists every one", style="dim")


@datasets.command("get")
@click.argument("name")
@pass_settings
def get_dataset(settings: _Settings, name: str) -> None:
    """Show one dataset (by name or id) with its columns."""
    dataset = settings.client().get_dataset(name)
    if settings.json_output:
        render.print_json(settings.out, render.to_json(dataset))
    else:
        settings.out.print(render.dataset_table(dataset))


@datasets.command("delete")
@click.argument("name")
@pass_settings
def delete_dataset(settings: _Settings, name: str) -> None:
    """Delete a dataset (by name or id) and its rows."""
    settings.client().delete_dataset(name)
    if settings.json_output:
        render.print_json(settings.out, {"deleted": name})
    else:
        settings.out.print(f"deleted dataset {name}", markup=False)


# --- admin ----------------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".datamill/dev"),
    show_default=True,
    help="Where the embedded PostgreSQL, Redis and objects live.",
)
@click.option("--port", type=click.IntRange(min=1, max=65535), default=50051, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True)
@click.option(
    "--demo/--no-demo", default=False, show_default=True, help="Generate a demo dataset, watch it, then stop."
)
@click.option("--rows", type=click.IntRange(min=1), default=100_000, show_default=True, help="Rows of the demo.")
def dev(data_dir: Path, port: int, workers: int, demo: bool, rows: int) -> None:
    """Run a server, workers, PostgreSQL and Redis on this machine, for trying datamill out."""
    # Imported here: the client must work without the server's dependencies installed.
    from server.dev import run_dev  # noqa: PLC0415

    raise click.exceptions.Exit(run_dev(data_dir=data_dir, port=port, workers=workers, demo=demo, rows=rows))


@cli.command()
@click.option("--database-url", envvar="DATAMILL_DATABASE_URL", help="PostgreSQL URL (env DATAMILL_DATABASE_URL).")
def migrate(database_url: str | None) -> None:
    """Apply the database migrations."""
    # Imported here: the client must work without the server's dependencies installed.
    from server.core.migrate import migrate_command  # noqa: PLC0415

    raise click.exceptions.Exit(migrate_command(database_url))


# --- helpers --------------------------------------------------------------------------------------


def _wait(settings: _Settings, job: job_pb2.Job) -> job_pb2.Job:
    """Follow ``job`` to its end with a progress bar; Ctrl-C leaves it running."""
    if is_terminal(job):
        return job
    try:
        with render.JobProgress(settings.err, [job.id], enabled=not settings.json_output) as progress:
            return settings.client().wait(job.id, on_event=progress.update)
    except KeyboardInterrupt:
        click.echo(f"stopped waiting; the job continues: datamill watch {job.id}", err=True)
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


def _download(
    settings: _Settings, object_key: str, output: Path, *, expected_sha256: str | None, total: int | None
) -> None:
    """Stream an object into ``output``, keeping the file only if it is complete and checked."""
    # Written beside the target and renamed at the end, so that a broken or corrupt
    # download never leaves a file that looks complete.
    partial = output.with_name(output.name + ".part")
    digest = hashlib.sha256()
    size = 0
    try:
        with (
            render.download_progress(settings.err, enabled=not settings.json_output) as progress,
            partial.open("wb") as sink,
        ):
            task = progress.add_task(output.name, total=total or None)
            for chunk in settings.client().read_object(object_key):
                sink.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                progress.advance(task, len(chunk))
        actual = digest.hexdigest()
        if expected_sha256 and actual != expected_sha256.lower():
            raise click.ClickException(
                f"sha256 mismatch for {object_key}: expected {expected_sha256}, got {actual}; {output} not written"
            )
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)
    if settings.json_output:
        render.print_json(settings.err, {"downloaded": str(output), "size_bytes": size, "sha256": actual})
    else:
        checked = " (checked)" if expected_sha256 else ""
        click.echo(f"wrote {output}: {size:,} bytes, sha256 {actual}{checked}", err=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `datamill` console script."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="datamill")


_database_url_option = click.option(
    "--database-url",
    envvar="DATAMILL_DATABASE_URL",
    required=True,
    help="PostgreSQL URL of the service (env DATAMILL_DATABASE_URL): an operator's command works on the database.",
)


@cli.group()
@_database_url_option
@click.pass_context
def keys(ctx: click.Context, database_url: str) -> None:
    """Create, list and revoke API keys (an operator's tool: it needs the service's database)."""
    ctx.meta["datamill.database_url"] = database_url


def _operator_connection() -> Any:
    # Imported here: the client must work without the server's dependencies installed.
    import psycopg  # noqa: PLC0415

    return psycopg.connect(click.get_current_context().meta["datamill.database_url"], autocommit=True)


@keys.command("create")
@click.option("--tenant", required=True, help="Tenant the key acts for.")
@click.option("--role", type=click.Choice(["viewer", "editor", "admin"]), required=True)
@click.option("--name", required=True, help="What the key is for, e.g. the service that uses it.")
@pass_settings
def create_key(settings: _Settings, tenant: str, role: str, name: str) -> None:
    """Create a key and print it: it is shown this once, and only its salted hash is stored."""
    from server.core.apikeys import create_key as create  # noqa: PLC0415

    with _operator_connection() as conn:
        try:
            key, info = create(conn, tenant=tenant, role=role, name=name)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    if settings.json_output:
        render.print_json(settings.out, {"key": key, **info.to_json()})
    else:
        settings.out.print(key, markup=False, highlight=False)
        settings.err.print(f"key {info.id} for tenant {tenant} as {role}: store it now, it is not shown again")


@keys.command("list")
@click.option("--tenant", help="Only this tenant's keys.")
@pass_settings
def list_keys(settings: _Settings, tenant: str | None) -> None:
    """List keys, newest first (never their secrets)."""
    from server.core.apikeys import list_keys as listed  # noqa: PLC0415

    with _operator_connection() as conn:
        found = listed(conn, tenant=tenant)
    for info in found:
        if settings.json_output:
            render.print_json(settings.out, info.to_json())
        else:
            state = f"revoked {info.revoked_at:%Y-%m-%d %H:%M}" if info.revoked_at else "active"
            settings.out.print(f"{info.id}  {info.tenant}  {info.role:<6}  {state:<24}  {info.name}", markup=False)


@keys.command("revoke")
@click.argument("key_id")
@pass_settings
def revoke_key(settings: _Settings, key_id: str) -> None:
    """Revoke a key by id: calls with it are refused from now on."""
    from server.core.apikeys import revoke_key as revoke  # noqa: PLC0415

    with _operator_connection() as conn:
        info = revoke(conn, key_id)
    if info is None:
        raise click.ClickException(f"no API key {key_id!r}")
    if settings.json_output:
        render.print_json(settings.out, info.to_json())
    else:
        settings.out.print(f"revoked key {info.id}", markup=False)


@cli.group()
@_database_url_option
@click.pass_context
def quotas(ctx: click.Context, database_url: str) -> None:
    """Set and list tenants' own quotas (an operator's tool); the rest get the server's DATAMILL_QUOTA_* defaults."""
    ctx.meta["datamill.database_url"] = database_url


def _quota_value(ctx: click.Context, param: click.Parameter, value: str | None) -> int | str | None:
    """'default' (back to the server's default) as None, a count as an int, not given as '' (unchanged)."""
    if value is None:
        return ""
    if value == "default":
        return None
    try:
        number = int(value)
    except ValueError:
        raise click.BadParameter("a count (0: unlimited) or 'default'") from None
    if number < 0:
        raise click.BadParameter("a count (0: unlimited) or 'default'")
    return number


def _quota_options(command: Callable[..., None]) -> Callable[..., None]:
    for name, what in reversed(
        (
            ("concurrent-jobs", "Queued or running jobs at once"),
            ("generate-rows", "Rows per Generate"),
            ("upload-bytes", "Bytes per Upload"),
            ("datasets", "Datasets held"),
        )
    ):
        option = click.option(f"--{name}", metavar="N|default", callback=_quota_value, help=f"{what}; 0: unlimited.")
        command = option(command)
    return command


@quotas.command("set")
@click.argument("tenant")
@_quota_options
@pass_settings
def set_quota(
    settings: _Settings,
    tenant: str,
    *,
    concurrent_jobs: int | str | None,
    generate_rows: int | str | None,
    upload_bytes: int | str | None,
    datasets: int | str | None,
) -> None:
    """Set TENANT's own quotas; the options not given keep their value."""
    from server.core.quotas import set_quotas  # noqa: PLC0415

    given = {"concurrent_jobs": concurrent_jobs, "generate_rows": generate_rows, "upload_bytes": upload_bytes}
    changes = {name: value for name, value in {**given, "datasets": datasets}.items() if value != ""}
    with _operator_connection() as conn:
        try:
            row = set_quotas(conn, tenant, changes)  # type: ignore[arg-type]
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    _print_quotas(settings, row)


@quotas.command("list")
@pass_settings
def list_quota(settings: _Settings) -> None:
    """Every tenant with quotas of its own ('default': the server's DATAMILL_QUOTA_* value)."""
    from server.core.quotas import list_quotas  # noqa: PLC0415

    with _operator_connection() as conn:
        for row in list_quotas(conn):
            _print_quotas(settings, row)


def _print_quotas(settings: _Settings, row: dict[str, Any]) -> None:
    if settings.json_output:
        render.print_json(settings.out, row)
        return
    shown = "  ".join(f"{k}={'default' if v is None else v}" for k, v in row.items() if k != "tenant")
    settings.out.print(f"{row['tenant']}  {shown}", markup=False, highlight=False)


if __name__ == "__main__":
    main()
