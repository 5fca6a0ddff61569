"""Tracing off costs nothing: the OpenTelemetry SDK is not loaded, and the hooks pass through."""

from __future__ import annotations

import subprocess
import sys

import pytest

from server.core import tracing
from server.core.settings import load_settings
from tests.unit.test_settings import BASE


def test_with_tracing_off_the_server_and_worker_never_load_the_sdk() -> None:
    # redis-py imports parts of opentelemetry when installed; datamill loads neither its tracer SDK nor propagators.
    code = (
        "import sys, server.app, worker.broker, worker.runner, server.core.tracing as t;"
        "assert not t.enabled();"
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk.trace', 'opentelemetry.propagate'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_off_hooks_pass_through() -> None:
    labels = {"a": "b"}
    assert tracing.inject(labels) is labels and labels == {"a": "b"}
    with tracing.span("x", {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}) as span:
        assert span is None


def test_file_tracing_needs_its_file(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for key, value in {**BASE, "DATAMILL_TRACING": "file"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("DATAMILL_TRACING_FILE", raising=False)
    with pytest.raises(SystemExit):
        load_settings()
    assert "DATAMILL_TRACING=file needs DATAMILL_TRACING_FILE" in capsys.readouterr().err
