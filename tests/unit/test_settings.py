"""Settings validation at start-up: bad values exit with a message naming the variable."""

from __future__ import annotations

import pytest

from server.core.settings import load_settings

BASE = {"DATAMILL_DATABASE_URL": "postgresql://x/y", "DATAMILL_REDIS_URL": "redis://localhost:6379/0"}


@pytest.mark.parametrize(
    ("name", "bad", "message"),
    [
        ("DATAMILL_LISTEN", "50051", "DATAMILL_LISTEN must be host:port"),
        ("DATAMILL_METRICS_LISTEN", "9090", "DATAMILL_METRICS_LISTEN must be host:port"),
        ("DATAMILL_METRICS_LISTEN", "0.0.0.0:99999", "DATAMILL_METRICS_LISTEN must be host:port"),
        ("DATAMILL_METRICS_INTERVAL_SECONDS", "0", "DATAMILL_METRICS_INTERVAL_SECONDS"),
        ("DATAMILL_QUOTA_CONCURRENT_JOBS", "-1", "DATAMILL_QUOTA_CONCURRENT_JOBS"),
        ("DATAMILL_QUOTA_UPLOAD_BYTES", "lots", "DATAMILL_QUOTA_UPLOAD_BYTES"),
        ("DATAMILL_SERVER_PROCESSES", "0", "DATAMILL_SERVER_PROCESSES"),
    ],
)
def test_a_bad_value_exits_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, bad: str, message: str
) -> None:
    for key, value in {**BASE, name: bad}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as exited:
        load_settings()
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_metrics_and_quota_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in BASE.items():
        monkeypatch.setenv(key, value)
    for key in ("DATAMILL_METRICS_LISTEN", "DATAMILL_QUOTA_CONCURRENT_JOBS", "DATAMILL_QUOTA_DATASETS"):
        monkeypatch.delenv(key, raising=False)
    settings = load_settings()
    assert settings.metrics_listen == "" and settings.metrics_interval_seconds == 15.0
    assert (settings.quota_concurrent_jobs, settings.quota_generate_rows) == (1000, 0)
    assert (settings.quota_upload_bytes, settings.quota_datasets) == (0, 10000)
    monkeypatch.setenv("DATAMILL_METRICS_LISTEN", "[::]:9464")
    assert load_settings().metrics_listen == "[::]:9464"


def test_several_server_processes_need_a_fixed_port(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in {**BASE, "DATAMILL_SERVER_PROCESSES": "2", "DATAMILL_LISTEN": "0.0.0.0:0"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit):
        load_settings()
    assert "DATAMILL_SERVER_PROCESSES > 1 needs a fixed port" in capsys.readouterr().err
    monkeypatch.setenv("DATAMILL_LISTEN", "0.0.0.0:50051")
    assert load_settings().server_processes == 2
