"""Resolve foreign keys: fill each foreign_key field's `target` from the dataset it names.

The target carries what a worker needs to remake the referenced column's
values at any row number (the referenced job's normalized schema, with its
seed, and its row count), so a worker never reads the referenced table, its
memory does not grow with it, and the job stays reproducible even if that
dataset is deleted later.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from server.core.errors import FieldViolation, NotFound
from server.core.models import JobKind
from server.core.schema import FieldSpec, SchemaSpec
from server.core.store import JobStore

# Types whose values are distinct by construction, so referable without `unique: true`.
DISTINCT_BY_CONSTRUCTION = frozenset({"sequence", "uuid4", "uuid7", "ulid"})


async def resolve_references(
    store: JobStore, tenant: str, schema: SchemaSpec, *, path: str = "schema"
) -> tuple[SchemaSpec, list[FieldViolation]]:
    """The schema with every foreign key's target filled in, and the violations found doing so."""
    violations: list[FieldViolation] = []
    fields: list[FieldSpec] = []
    for index, field in enumerate(schema.fields):
        if field.type != "foreign_key" or not isinstance(field.params, Mapping):
            fields.append(field)
            continue
        params = {k: v for k, v in field.params.items() if k != "target"}  # only the server sets it
        where = f"{path}.fields[{index}].params"
        dataset, column = params.get("dataset"), params.get("column")
        if isinstance(dataset, str) and isinstance(column, str):
            target = await _target(store, tenant, dataset, column, where=where, violations=violations)
            if target is not None:
                params["target"] = target
        fields.append(replace(field, params=params))
    return replace(schema, fields=tuple(fields)), violations


async def _target(
    store: JobStore, tenant: str, dataset: str, column: str, *, where: str, violations: list[FieldViolation]
) -> dict[str, Any] | None:
    try:
        found = await store.get_dataset(tenant, dataset)
    except NotFound:
        violations.append(FieldViolation(f"{where}.dataset", f"there is no dataset named {dataset!r}"))
        return None
    if not found.ready:
        violations.append(FieldViolation(f"{where}.dataset", f"dataset {dataset!r} is not complete yet"))
        return None
    job = await store.get_job(tenant, found.job_id)
    if job.kind is not JobKind.GENERATE or job.spec is None:
        violations.append(FieldViolation(f"{where}.dataset", f"dataset {dataset!r} was not made by Generate"))
        return None
    target_schema = SchemaSpec.from_json(job.spec["schema"])
    target_field = next((f for f in target_schema.fields if f.name == column), None)
    stored = next((c for c in found.columns if c["name"] == column), None)
    if target_field is None or stored is None:
        names = ", ".join(c["name"] for c in found.columns)
        violations.append(FieldViolation(f"{where}.column", f"dataset {dataset!r} has no column {column!r}: {names}"))
        return None
    if target_field.null_rate > 0 or not (target_field.unique or target_field.type in DISTINCT_BY_CONSTRUCTION):
        violations.append(
            FieldViolation(f"{where}.column", f"column {column!r} of {dataset!r} must be unique and never NULL")
        )
        return None
    return {
        "rows": found.row_count,
        "schema": job.spec["schema"],
        "field": column,
        "column": {"type": stored["type"], "pg_type": stored["pg_type"]},
    }
