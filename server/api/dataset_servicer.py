"""DatasetService: parse, delegate to the core, build the reply."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc

from datamill.v1 import dataset_service_pb2 as pb
from datamill.v1 import dataset_service_pb2_grpc
from server.api import convert
from server.api.context import tenant_of
from server.api.errors import stream, unary
from server.core.exports import ExportDomain
from server.core.jobs import JobDomain

Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]


class DatasetServicer(dataset_service_pb2_grpc.DatasetServiceServicer):
    def __init__(self, domain: JobDomain, exports: ExportDomain) -> None:
        self._domain = domain
        self._exports = exports

    @unary
    async def GetDataset(self, request: pb.GetDatasetRequest, context: Ctx) -> pb.GetDatasetResponse:
        row = await self._domain.get_dataset(tenant_of(context), request.dataset)
        return pb.GetDatasetResponse(dataset=convert.dataset(row))

    @unary
    async def ListDatasets(self, request: pb.ListDatasetsRequest, context: Ctx) -> pb.ListDatasetsResponse:
        page = await self._domain.list_datasets(
            tenant_of(context), page_size=request.page_size, page_token=request.page_token
        )
        return pb.ListDatasetsResponse(
            datasets=[convert.dataset(d) for d in page.items], next_page_token=page.next_page_token
        )

    @unary
    async def DeleteDataset(self, request: pb.DeleteDatasetRequest, context: Ctx) -> pb.DeleteDatasetResponse:
        await self._domain.delete_dataset(tenant_of(context), request.dataset)
        return pb.DeleteDatasetResponse()

    @stream
    async def ReadObject(self, request: pb.ReadObjectRequest, context: Ctx) -> AsyncIterator[pb.ReadObjectResponse]:
        stored, chunks = await self._exports.read_object(
            tenant_of(context), request.object_key, offset=request.offset, limit=request.limit
        )
        position = request.offset
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                yield pb.ReadObjectResponse(offset=position, data=chunk, size_bytes=stored.size)
                position += len(chunk)
