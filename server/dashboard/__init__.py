"""The web dashboard (`datamill-server --dashboard`): jobs, live progress, event history, datasets, throughput.

An aiohttp app in the server's own event loop. It is a thin gateway: every `/api/` call becomes a gRPC call to this
same server over loopback, carrying the browser's `Authorization` header as metadata, so the dashboard has exactly
the RPCs' authentication, roles, tenants, rate limits and audit log, and no rules of its own. The one read that no RPC
offers, a dataset's first rows, happens only after the caller's own GetDataset call has found the dataset.

    GET  /                              the page (static/index.html)
    GET  /api/jobs?state=&kind=         ListJobs
    POST /api/jobs                      Generate: {"dataset_name", "schema"}
    GET  /api/jobs/{id}                 GetJob
    GET  /api/jobs/{id}/watch           WatchJob, as NDJSON: one event per line until the job ends
    GET  /api/datasets                  ListDatasets
    GET  /api/datasets/{name}/preview   GetDataset, then its first rows (at most 100)
"""

from __future__ import annotations

import json
from importlib import resources
from typing import TYPE_CHECKING, Any

import grpc
import structlog
from aiohttp import web
from google.protobuf import json_format
from psycopg import sql

from datamill.v1 import dataset_service_pb2 as dpb
from datamill.v1 import dataset_service_pb2_grpc, job_service_pb2_grpc, schema_pb2
from datamill.v1 import job_service_pb2 as jpb
from server.core.models import DATASET_SCHEMA

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

log = structlog.get_logger(__name__)

PREVIEW_ROWS = 100
_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
}


def _json(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _metadata(request: web.Request) -> tuple[tuple[str, str], ...]:
    header = request.headers.get("Authorization", "")
    return (("authorization", header),) if header else ()


@web.middleware
async def _grpc_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)  # type: ignore[no-any-return]
    except grpc.aio.AioRpcError as exc:
        status = _HTTP_STATUS.get(exc.code(), 502)
        return web.json_response({"code": exc.code().name, "message": exc.details() or ""}, status=status)


class Dashboard:
    def __init__(self, target: str, pool: AsyncConnectionPool) -> None:
        self._channel = grpc.aio.insecure_channel(target)
        self._jobs = job_service_pb2_grpc.JobServiceStub(self._channel)
        self._datasets = dataset_service_pb2_grpc.DatasetServiceStub(self._channel)
        self._pool = pool
        self._page = resources.files(__name__).joinpath("static", "index.html").read_bytes()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_grpc_errors])
        app.router.add_get("/", self.index)
        app.router.add_get("/api/jobs", self.list_jobs)
        app.router.add_post("/api/jobs", self.generate)
        app.router.add_get("/api/jobs/{id}", self.get_job)
        app.router.add_get("/api/jobs/{id}/watch", self.watch)
        app.router.add_get("/api/datasets", self.list_datasets)
        app.router.add_get("/api/datasets/{name}/preview", self.preview)
        return app

    async def close(self) -> None:
        await self._channel.close()

    async def index(self, request: web.Request) -> web.Response:
        return web.Response(body=self._page, content_type="text/html", charset="utf-8")

    async def list_jobs(self, request: web.Request) -> web.Response:
        query = request.query
        listed = jpb.ListJobsRequest(
            page_size=int(query.get("page_size", "50")), page_token=query.get("page_token", "")
        )
        try:
            if query.get("state"):
                listed.state = query["state"]  # type: ignore[assignment]
            if query.get("kind"):
                listed.kind = query["kind"]  # type: ignore[assignment]
        except ValueError:
            raise web.HTTPBadRequest(text="unknown state or kind") from None
        response = await self._jobs.ListJobs(listed, metadata=_metadata(request), timeout=10)
        return web.json_response(_json(response))

    async def generate(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            schema = json_format.ParseDict(body.get("schema", {}), schema_pb2.Schema())
        except (ValueError, json_format.ParseError) as exc:
            raise web.HTTPBadRequest(text=f"bad request body: {exc}") from None
        generated = jpb.GenerateRequest(dataset_name=str(body.get("dataset_name", "")), schema=schema)
        response = await self._jobs.Generate(generated, metadata=_metadata(request), timeout=10)
        return web.json_response(_json(response.job))

    async def get_job(self, request: web.Request) -> web.Response:
        got = jpb.GetJobRequest(job_id=request.match_info["id"])
        response = await self._jobs.GetJob(got, metadata=_metadata(request), timeout=10)
        return web.json_response(_json(response.job))

    async def watch(self, request: web.Request) -> web.StreamResponse:
        job_id = request.match_info["id"]

        async def requests() -> Any:
            yield jpb.WatchJobRequest(subscribe=jpb.WatchSubscribe(job_id=job_id))

        call = self._jobs.WatchJob(requests(), metadata=_metadata(request))
        first: Any = await call.read()  # an auth or argument error surfaces here, before the 200
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-store"})
        await response.prepare(request)
        try:
            message: Any = first
            while message is not grpc.aio.EOF:
                kind = message.WhichOneof("message")
                if kind == "event":
                    await response.write((json.dumps(_json(message.event)) + "\n").encode())
                elif kind == "ended":
                    await response.write((json.dumps({"ended": _json(message.ended)}) + "\n").encode())
                    break
                message = await call.read()
        finally:
            call.cancel()
        await response.write_eof()
        return response

    async def list_datasets(self, request: web.Request) -> web.Response:
        listed = dpb.ListDatasetsRequest(page_size=100, page_token=request.query.get("page_token", ""))
        response = await self._datasets.ListDatasets(listed, metadata=_metadata(request), timeout=10)
        return web.json_response(_json(response))

    async def preview(self, request: web.Request) -> web.Response:
        found = await self._datasets.GetDataset(
            dpb.GetDatasetRequest(dataset=request.match_info["name"]), metadata=_metadata(request), timeout=10
        )
        dataset = found.dataset
        limit = max(1, min(PREVIEW_ROWS, int(request.query.get("limit", "20"))))
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT table_name FROM datasets WHERE id = %s AND ready", (dataset.id,))
            row: Any = await cur.fetchone()
            rows: list[Any] = []
            if row is not None:
                table = sql.Identifier(DATASET_SCHEMA, row["table_name"])
                cur = await conn.execute(sql.SQL("SELECT * FROM {} LIMIT %s").format(table), (limit,))
                rows = await cur.fetchall()
        columns = [c.name for c in dataset.columns]
        return web.json_response(
            {"dataset": _json(dataset), "columns": columns, "rows": [[_cell(r.get(c)) for c in columns] for r in rows]}
        )


def _cell(value: Any) -> Any:
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


async def start(listen: str, target: str, pool: AsyncConnectionPool) -> tuple[web.AppRunner, Dashboard]:
    """Serve the dashboard on `listen` (host:port), calling the gRPC server at `target`."""
    dashboard = Dashboard(target, pool)
    runner = web.AppRunner(dashboard.app(), access_log=None)
    await runner.setup()
    host, _, port = listen.rpartition(":")
    await web.TCPSite(runner, host.strip("[]"), int(port)).start()
    log.info("dashboard_listening", listen=listen)
    return runner, dashboard
