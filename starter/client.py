"""Python client for the marketplace's backend: open, read and act on cases without going through HTTP.

    from starter.client import CaseClient
    async with CaseClient.connect() as cases:
        case, created = await cases.open(Actor(role="customer", id="cust_alice"), "ord_alice_paid", "cancellation")

CLI:  python -m starter.client open ORDER_ID --kind cancellation --as customer:cust_alice
      python -m starter.client show CASE_ID --as agent:care
      python -m starter.client decide CASE_ID accept --as seller:seller_refurbco
"""
from __future__ import annotations

import argparse
import asyncio
import json

from activities import db
from workflows.case import CaseWorkflow
from config import settings
from domain.models import ActionAnswer, Actor, CaseKind, DecisionRequest
from domain.policy import load_policy
from starter.service import CaseService, ServiceError


class CaseClient:
    def __init__(self, service: CaseService, pool):
        self.service = service
        self._pool = pool

    @classmethod
    async def create(cls) -> "CaseClient":
        from worker import connect

        s = settings()
        pool = await db.create_pool(s.database_url or None, max_size=4)
        temporal = await connect(s)
        return cls(CaseService(pool, temporal, s.task_queue, load_policy()), pool)

    @classmethod
    def connect(cls):
        return _Connected(cls)

    async def close(self) -> None:
        await self._pool.close()

    async def open(self, actor: Actor, order_id: str, kind: CaseKind | str, **details) -> tuple[dict, bool]:
        return await self.service.open_case(actor, order_id, CaseKind(kind), **details)

    async def get(self, actor: Actor, case_id: str) -> dict:
        return await self.service.get_case(actor, case_id)

    async def decide(self, actor: Actor, case_id: str, decision: str, reason: str | None = None) -> ActionAnswer:
        return await self.service.act(actor, case_id, CaseWorkflow.decide,
                                      DecisionRequest(actor=actor, decision=decision, reason=reason))


class _Connected:
    def __init__(self, cls):
        self.cls = cls

    async def __aenter__(self) -> CaseClient:
        self.client = await self.cls.create()
        return self.client

    async def __aexit__(self, *exc) -> None:
        await self.client.close()


def _actor(text: str) -> Actor:
    role, _, ident = text.partition(":")
    return Actor(role=role, id=ident)


async def _main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m starter.client")
    sub = p.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("open")
    o.add_argument("order_id")
    o.add_argument("--kind", required=True, choices=[k.value for k in CaseKind])
    s = sub.add_parser("show")
    s.add_argument("case_id")
    d = sub.add_parser("decide")
    d.add_argument("case_id")
    d.add_argument("decision")
    d.add_argument("--reason")
    for sp in (o, s, d):
        sp.add_argument("--as", dest="actor", required=True, help="role:id, e.g. customer:cust_alice")
    args = p.parse_args(argv)
    async with CaseClient.connect() as cases:
        try:
            actor = _actor(args.actor)
            if args.cmd == "open":
                result = (await cases.open(actor, args.order_id, args.kind))[0]
            elif args.cmd == "show":
                result = await cases.get(actor, args.case_id)
            else:
                result = (await cases.decide(actor, args.case_id, args.decision, args.reason)).model_dump(mode="json")
        except ServiceError as e:
            print(json.dumps({"error": e.message, "status": e.status, **e.extra}))
            return 1
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(_main()))
