"""Small helpers shared by the end-to-end tests: raw stubs and a bidirectional watch driver."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from datamill.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

SCHEMA: dict[str, Any] = {
    "seed": 7,
    "fields": [
        {"name": "seq", "type": "sequence"},
        {"name": "id", "type": "uuid4"},
        {"name": "qty", "type": "integer", "params": {"min": 1, "max": 100}},
        {"name": "price", "type": "float", "params": {"min": 0, "max": 1000}},
        {"name": "status", "type": "choice", "params": {"values": ["a", "b", "c"]}},
        {"name": "note", "type": "sentence", "null_rate": 0.1},
        {"name": "at", "type": "timestamp"},
    ],
}

TERMINAL = {job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED}


def schema(rows: int) -> dict[str, Any]:
    return {**SCHEMA, "rows": rows}


class RawWatch:
    """One WatchJob stream driven by hand: send subscribe/unsubscribe, read responses with timeouts."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.insecure_channel(target)
        self.stub = job_service_pb2_grpc.JobServiceStub(self.channel)
        self._requests: queue.Queue[job_service_pb2.WatchJobRequest | None] = queue.Queue()
        self._responses: queue.Queue[job_service_pb2.WatchJobResponse | BaseException] = queue.Queue()
        self.call = self.stub.WatchJob(self._iter_requests())
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _iter_requests(self) -> Iterator[job_service_pb2.WatchJobRequest]:
        while True:
            item = self._requests.get()
            if item is None:
                return
            yield item

    def _read(self) -> None:
        try:
            for response in self.call:
                self._responses.put(response)
        except BaseException as exc:  # handed to the test thread
            self._responses.put(exc)

    def subscribe(self, job_id: str, after_sequence: int | None = None) -> None:
        sub = job_service_pb2.WatchSubscribe(job_id=job_id)
        if after_sequence is not None:
            sub.after_sequence = after_sequence
        self._requests.put(job_service_pb2.WatchJobRequest(subscribe=sub))

    def unsubscribe(self, job_id: str) -> None:
        self._requests.put(job_service_pb2.WatchJobRequest(unsubscribe=job_service_pb2.WatchUnsubscribe(job_id=job_id)))

    def next(self, timeout: float = 30.0) -> job_service_pb2.WatchJobResponse:
        item = self._responses.get(timeout=timeout)
        if isinstance(item, BaseException):
            raise item
        return item

    def next_event(self, timeout: float = 30.0) -> job_pb2.JobEvent:
        deadline = time.monotonic() + timeout
        while True:
            response = self.next(max(deadline - time.monotonic(), 0.01))
            if response.HasField("event"):
                return response.event

    def close(self) -> None:
        self._requests.put(None)
        self.call.cancel()
        self.channel.close()


def wait_for(predicate: Any, *, timeout: float = 30.0, interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def status_bytes(pid: int, field: str) -> int:
    """A /proc/PID/status memory field (VmRSS, VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def reset_peak_rss(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def process_children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.extend(int(c) for c in (task / "children").read_text().split())
    return found
