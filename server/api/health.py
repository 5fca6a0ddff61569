"""The standard grpc.health.v1 service, driven by real dependency checks.

Overall ("") and per-service status are NOT_SERVING until PostgreSQL, Redis
and the event listener all answer, follow them while running, and go
NOT_SERVING for good once draining starts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import structlog
from grpc_health.v1 import health, health_pb2

log = structlog.get_logger(__name__)

SERVICES = ("", "datamill.v1.JobService", "datamill.v1.DatasetService")

Check = Callable[[], Awaitable[None]]


class HealthReporter:
    def __init__(self, checks: Sequence[tuple[str, Check]], *, interval: float, timeout: float = 2.0) -> None:
        self.servicer = health.aio.HealthServicer()
        self._checks = checks
        self._interval = interval
        self._timeout = timeout
        self._serving: bool | None = None
        self._draining = False

    async def set_all(self, *, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in SERVICES:
            await self.servicer.set(name, status)

    async def check_once(self) -> bool:
        failing = []
        for name, check in self._checks:
            try:
                await asyncio.wait_for(check(), self._timeout)
            except Exception as exc:  # noqa: BLE001  # any failure means not ready
                failing.append(f"{name}: {type(exc).__name__}")
        serving = not failing
        if serving != self._serving and not self._draining:
            await self.set_all(serving=serving)
            log.info("health_changed", serving=serving, failing=failing)
            self._serving = serving
        return serving

    async def run(self) -> None:
        while True:
            await self.check_once()
            await asyncio.sleep(self._interval)

    async def drain(self) -> None:
        self._draining = True
        await self.servicer.enter_graceful_shutdown()
        log.info("health_changed", serving=False, failing=["draining"])
