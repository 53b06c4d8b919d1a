"""Setup step for a Temporal cluster: registers the project's custom search attributes (idempotent).

    python -m starter.setup_cluster        # uses TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE
"""
from __future__ import annotations

import asyncio

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from workflows import search_attributes as sa

_TYPES = {
    "KEYWORD": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "DATETIME": IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
    "BOOL": IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
    "INT": IndexedValueType.INDEXED_VALUE_TYPE_INT,
}


async def register_search_attributes(client: Client, namespace: str = "default") -> list[str]:
    """Adds the attributes the namespace lacks; returns their names."""
    try:
        existing = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
        known = set(existing.custom_attributes) | set(existing.system_attributes)
    except RPCError as e:  # the time-skipping test server cannot list, only add
        if e.status != RPCStatusCode.UNIMPLEMENTED:
            raise
        known = set()
    missing = {k.name: _TYPES[k.indexed_value_type.name] for k in sa.ALL if k.name not in known}
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing))
    return sorted(missing)


async def main() -> None:
    from config import settings

    s = settings()
    client = await Client.connect(s.temporal_address, namespace=s.temporal_namespace)
    added = await register_search_attributes(client, s.temporal_namespace)
    print("registered:", ", ".join(added) if added else "nothing (all present)")


if __name__ == "__main__":
    asyncio.run(main())
