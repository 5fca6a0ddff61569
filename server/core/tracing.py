"""Optional OpenTelemetry tracing: a trace starts at the gRPC call and continues through the Taskiq task.

DATAMILL_TRACING picks the exporter: `off` (the default), `otlp` (OTLP over gRPC, configured by the standard
OTEL_EXPORTER_OTLP_* variables) or `file` (one JSON object per span appended to DATAMILL_TRACING_FILE, for tests
and debugging). Off, datamill loads nothing of OpenTelemetry (redis-py may import its API), installs no
interceptor, and every hook below is one `is None` test.

The server's `TracingInterceptor` opens a span per RPC, continuing the caller's W3C `traceparent` when it sends one.
`TaskiqDispatcher` copies the current context into the task's labels (`inject`), and the worker opens the job's
span as a child of it (`job_span`), so one trace holds the call, the queue hand-off and the work.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.core.settings import Settings

#: The tracer when tracing is on; None when off.
_tracer: Any = None


def configure(settings: Settings, service: str) -> bool:
    """Set up tracing for this process (`datamill-server` or `datamill-worker`); return whether it is on."""
    global _tracer  # noqa: PLW0603 - one tracer per process, set once at start-up
    if settings.tracing == "off":
        _tracer = None
        return False
    from opentelemetry import trace  # noqa: PLC0415  # optional: the `tracing` extra
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor  # noqa: PLC0415

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if settings.tracing == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter  # noqa: PLC0415

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        assert settings.tracing_file is not None  # checked by Settings
        provider.add_span_processor(SimpleSpanProcessor(_file_exporter(settings.tracing_file)))
    trace.set_tracer_provider(provider)
    _tracer = trace.get_tracer("datamill")
    return True


def enabled() -> bool:
    return _tracer is not None


def inject(labels: dict[str, str]) -> dict[str, str]:
    """`labels` plus the current trace context (`traceparent`), for a task sent from inside a span."""
    if _tracer is None:
        return labels
    from opentelemetry.propagate import inject as propagate  # noqa: PLC0415

    propagate(labels)
    return labels


@contextlib.contextmanager
def span(name: str, carrier: Mapping[str, str] | None = None, **attributes: Any) -> Iterator[Any]:
    """A span named `name`, child of the context in `carrier` (metadata or task labels) if any; None when off."""
    if _tracer is None:
        yield None
        return
    from opentelemetry.propagate import extract  # noqa: PLC0415

    context = extract(dict(carrier)) if carrier else None
    with _tracer.start_as_current_span(name, context=context, attributes=attributes) as current:
        yield current


def _file_exporter(path: Path) -> Any:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult  # noqa: PLC0415

    class JsonLinesExporter(SpanExporter):
        """Each span as one JSON line, appended with O_APPEND: several processes may share the file."""

        def __init__(self) -> None:
            self._lock = threading.Lock()

        def export(self, spans: Any) -> Any:
            lines = "".join(json.dumps(_span_json(s)) + "\n" for s in spans).encode()
            with self._lock:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, lines)
                finally:
                    os.close(fd)
            return SpanExportResult.SUCCESS

    return JsonLinesExporter()


def _span_json(s: Any) -> dict[str, Any]:
    context, parent = s.get_span_context(), s.parent
    return {
        "name": s.name,
        "service": s.resource.attributes.get("service.name"),
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": f"{parent.span_id:016x}" if parent is not None else None,
        "attributes": dict(s.attributes or {}),
        "status": s.status.status_code.name,
        "start_ns": s.start_time,
        "end_ns": s.end_time,
    }
