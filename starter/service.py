"""The web backend's side of cases, shared by the HTTP API and the Python client.

Raises ServiceError subclasses that the API maps onto 404/403/409/422; nothing is half-applied:
checks come first, then one insert guarded by the one-open-case-per-order index, then an idempotent
workflow start.
"""
from __future__ import annotations

import asyncio
import json
import secrets
from datetime import datetime, timezone

import asyncpg
from temporalio.client import Client, WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError

from domain.models import (
    ActionAnswer,
    Actor,
    CaseInput,
    CaseKind,
    CaseState,
    DefectCategory,
    Order,
    OrderStatus,
    Role,
    Stage,
)
from activities import ledger
from domain import legal
from domain.policy import Policy
from workflows import search_attributes as sa
from workflows.case import FORBIDDEN, INVALID, KIND_TITLES, WRONG_STAGE, CaseWorkflow

# A case's read view (GET /v1/cases/{id} and the lists): the SQL function case_view, the one place for
# its shape (migrations/008_case_view_json.sql); each row also keeps it as text (view_json) for the lists.
CASE_VIEW = "case_view(cases)"
# What the service reads of a case beside its view (not `*`: the state would be decoded twice).
CASE_ROW = f"SELECT case_id, customer_id, seller_id, input, {CASE_VIEW} AS view FROM cases"
# An order as "Get help" reads it: the order, its open case (at most one, a unique index) and its money out.
ORDER_FOR_HELP = f"""SELECT o.*, ({ledger.MONEY_OUT.format(order="o.order_id", kinds="$2")}) AS money_out,
    (SELECT jsonb_build_object('case_id', case_id, 'input', input, 'view', {CASE_VIEW}) FROM cases
     WHERE cases.order_id = o.order_id AND closed_at IS NULL) AS open_case
    FROM orders o WHERE o.order_id = $1"""


class ServiceError(Exception):
    status = 400

    def __init__(self, message: str, **extra):
        super().__init__(message)
        self.message = message
        self.extra = extra


class Accepted(ServiceError):
    """Not an error: the action was taken but its result is not known yet."""
    status = 202


ACTION_ANSWER_TIMEOUT_SECONDS = 15


class NotFound(ServiceError):
    status = 404


class Forbidden(ServiceError):
    status = 403


class Conflict(ServiceError):
    status = 409


class Invalid(ServiceError):
    status = 422


MONEY_ONLY_KINDS = {CaseKind.cancellation, CaseKind.withdrawal}


def order_from_row(row: asyncpg.Record) -> Order:
    return Order(
        order_id=row["order_id"], customer_id=row["customer_id"], seller_id=row["seller_id"],
        status=row["status"], currency=row["currency"], lines=row["lines"],
        delivery_fee_cents=row["delivery_fee_cents"], payment_intent=row["payment_intent"],
        created_at=row["created_at"], delivered_at=row["delivered_at"],
    )


def may_see(actor: Actor, customer_id: str, seller_id: str) -> bool:
    return (actor.role == Role.agent
            or (actor.role == Role.customer and actor.id == customer_id)
            or (actor.role == Role.seller and actor.id == seller_id))


UNREAD = object()  # CaseService.act: the case's row not read yet


class CaseService:
    def __init__(self, pool: asyncpg.Pool, temporal: Client, task_queue: str, policy: Policy):
        self.pool = pool
        self.temporal = temporal
        self.task_queue = task_queue
        self.policy = policy

    # ------------------------------------------------------------ opening
    async def open_case(self, actor: Actor, order_id: str, kind: CaseKind, *,
                        category=None, description: str | None = None,
                        now: datetime | None = None) -> tuple[dict, bool]:
        """Opens a case on an order, or returns the order's open case (a double click opens one)."""
        order, existing, money_out = await self._customers_order(actor, order_id)
        if existing is not None:
            return await self._ensure_started(existing), False
        now = now or datetime.now(timezone.utc)
        basis = self.check_opening(order, kind, now, category, description)
        self.check_money_left(order, kind, now, money_out)
        case_id = f"case_{secrets.token_hex(6)}"
        inp = CaseInput(case_id=case_id, kind=kind, order=order, opened_at=now, opened_by=actor,
                        policy=self.policy, category=category, description=description, basis=basis)
        state = CaseState(case_id=case_id, kind=kind, order_id=order_id, customer_id=order.customer_id,
                          seller_id=order.seller_id, currency=order.currency)
        try:
            row = await self.pool.fetchrow(
                f"""INSERT INTO cases (case_id, order_id, kind, customer_id, seller_id, stage, state, input, opened_at)
                    VALUES ($1, $2, $3, $4, $5, 'opening', $6, $7, $8) RETURNING {CASE_VIEW} AS view""",
                case_id, order_id, kind.value, order.customer_id, order.seller_id,
                state.model_dump(mode="json"), inp.model_dump(mode="json"), now)
        except asyncpg.UniqueViolationError:  # a concurrent request opened it first
            existing = await self._open_case_row(order_id)
            return await self._ensure_started(existing), False
        await self._start(inp)
        return row["view"], True

    async def _customers_order(self, actor: Actor, order_id: str) -> tuple[Order, dict | None, int]:
        """The order, for its own customer only: only they ask for help on it (docs/rules.md, section 1),
        not its seller, not care. With its open case (case_id, input, view) if any and the money out of its
        ledger: what opening a case checks, in one read."""
        row = await self.pool.fetchrow(ORDER_FOR_HELP, order_id, list(ledger.COUNTS_AGAINST_PAID))
        if row is None:
            raise NotFound(f"order {order_id} not found")
        order = order_from_row(row)
        if actor.role != Role.customer or actor.id != order.customer_id:
            raise Forbidden("you may only ask for help on your own orders")
        return order, row["open_case"], row["money_out"]

    async def help_options(self, actor: Actor, order_id: str, now: datetime | None = None) -> dict:
        """What the order's "Get help" page offers: its open case if any, and for each kind whether it
        may be opened now, until when, or why not (the same checks as open_case, nothing opened)."""
        order, open_case, money_out = await self._customers_order(actor, order_id)
        now = now or datetime.now(timezone.utc)
        p, delivered = self.policy, order.delivered_at
        until = {CaseKind.cancellation: None, CaseKind.defect: delivered and p.defect_window_end(delivered),
                 CaseKind.withdrawal: delivered and p.withdrawal_window_end(delivered),
                 CaseKind.warranty: delivered and p.warranty_end(delivered)}
        kinds = []
        for kind in CaseKind:
            option = {"kind": kind.value, "allowed": True, "until": until[kind], "reason": None, "error": None}
            try:
                if kind == CaseKind.cancellation and order.status in (OrderStatus.shipped, OrderStatus.delivered):
                    # The case would open and close at once, refused (docs/rules.md, section 1).
                    raise Conflict("the order has already shipped", reason="order_shipped")
                self.check_opening(order, kind, now, DefectCategory.other, "checking what is still possible")
                self.check_money_left(order, kind, now, money_out)
            except ServiceError as e:
                option.update(allowed=False, reason=e.extra.get("reason"), error=e.message,
                              closed_at=e.extra.get("closed_at"), opens_after=e.extra.get("window_opens_after"))
            kinds.append(option)
        return {"order": order, "open_case_id": open_case["case_id"] if open_case else None, "kinds": kinds}

    def check_money_left(self, order: Order, kind: CaseKind, now: datetime, money_out: int) -> None:
        """A kind whose outcome can only be money (a cancellation, a withdrawal) on an order with nothing
        left to refund is refused; a claim may still end in an exchange or a repair (docs/rules.md, 4).
        `money_out`: what the order's ledger counts against the paid (read with the order)."""
        if kind not in MONEY_ONLY_KINDS:
            return
        if ledger.left(order.total_cents, money_out) > 0:
            return
        possible = []
        for other in (CaseKind.defect, CaseKind.warranty):
            try:
                self.check_opening(order, other, now, DefectCategory.other, "checking what is still possible")
                possible.append(other.value)
            except ServiceError:
                pass
        raise Invalid(f"order {order.order_id} was already refunded in full: there is nothing left to refund",
                      field="kind", reason="already_refunded", still_possible=possible)

    def check_opening(self, order: Order, kind: CaseKind, now: datetime, category=None,
                      description: str | None = None) -> str | None:
        """Which kinds the order allows now (docs/rules.md, section 1). A refusal names the reason, the date
        the window closed and what is still possible. Cancellations are decided by the workflow itself
        (it must compare-and-set the order status), so only an already cancelled order is refused here.
        Returns a warranty claim's basis: the commercial warranty (12 months), then the legal
        conformity guarantee (24 months, domain/legal.py), under which the customer shows the defect."""
        p = self.policy
        if kind == CaseKind.cancellation:
            if order.status == OrderStatus.cancelled:
                raise Conflict("the order is already cancelled", stage="closed", reason="order_cancelled")
            return
        if order.status != OrderStatus.delivered or order.delivered_at is None:
            raise Invalid(f"a {kind.value} request needs a delivered order (this one is {order.status.value})",
                          field="kind", reason="order_not_delivered",
                          still_possible=["cancellation"] if order.status in (OrderStatus.paid, OrderStatus.validated) else [])
        delivered = order.delivered_at
        withdrawal_end = p.withdrawal_window_end(delivered)
        warranty_end = p.warranty_end(delivered)
        guarantee_end = legal.legal_guarantee_end(delivered, p.legal_guarantee_months)
        possible = [k for k, ok in (("defect", now <= p.defect_window_end(delivered)),
                                    ("withdrawal", now <= withdrawal_end),
                                    ("warranty", withdrawal_end < now <= guarantee_end)) if ok]
        window_end = {CaseKind.defect: p.defect_window_end(delivered), CaseKind.withdrawal: withdrawal_end,
                      CaseKind.warranty: guarantee_end}[kind]
        if kind == CaseKind.warranty and now <= withdrawal_end:
            raise Invalid("the warranty starts after the withdrawal period: return the item instead",
                          field="kind", reason="withdrawal_still_open", still_possible=possible,
                          window_opens_after=withdrawal_end.isoformat())
        if now > window_end:
            note = ""
            if "warranty" in possible:
                under = ("the commercial warranty" if now <= warranty_end else "the legal conformity guarantee")
                note = (f" A warranty claim is still possible under {under} until "
                        f"{(warranty_end if now <= warranty_end else guarantee_end).isoformat()}.")
            elif kind == CaseKind.warranty:
                note = " The legal conformity guarantee (24 months after delivery) has ended too."
            raise Invalid(f"the {kind.value} window closed on {window_end.isoformat()}.{note}", field="kind",
                          reason=f"{kind.value}_window_closed", closed_at=window_end.isoformat(),
                          still_possible=possible)
        basis = None
        if kind == CaseKind.warranty:
            basis = "commercial_warranty" if now <= warranty_end else "legal_guarantee"
        # A defect claim, and a claim no longer presumed to be a defect at delivery (used goods, after
        # 12 months: the customer shows it), need a description (and photos, asked by the case).
        needs_evidence = kind == CaseKind.defect or (
            kind == CaseKind.warranty and not legal.used_goods_defect_presumed(delivered, now))
        if kind == CaseKind.defect and category is None:
            raise Invalid("a defect claim needs a category", field="category", reason="missing")
        if needs_evidence and (not description or len(description.strip()) < 15 or " " not in description.strip()):
            raise Invalid("describe the defect in at least a sentence" + (
                "" if kind == CaseKind.defect else ": after 12 months the legal conformity guarantee asks you to "
                "show it (a description, then photos)"), field="description", reason="too_short")
        return basis

    async def _open_case_row(self, order_id: str):
        return await self.pool.fetchrow(
            f"{CASE_ROW} WHERE order_id = $1 AND closed_at IS NULL", order_id)

    async def _ensure_started(self, row) -> dict:
        """Starts the workflow of a case row (its view returned); harmless when it already runs."""
        await self._start(CaseInput.model_validate(row["input"]))
        return row["view"]

    async def _start(self, inp: CaseInput) -> None:
        """Starts the case's workflow; harmless when it already runs (same id, USE_EXISTING)."""
        o = inp.order
        await self.temporal.start_workflow(
            CaseWorkflow.run, inp, id=inp.case_id, task_queue=self.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            search_attributes=TypedSearchAttributes([
                SearchAttributePair(sa.CASE_KIND, inp.kind.value),
                SearchAttributePair(sa.CASE_STAGE, Stage.opening.value),
                SearchAttributePair(sa.ORDER_ID, o.order_id),
                SearchAttributePair(sa.SELLER_ID, o.seller_id),
                SearchAttributePair(sa.CUSTOMER_ID, o.customer_id),
                SearchAttributePair(sa.ESCALATED, False),
            ]),
            static_summary=f"{KIND_TITLES[inp.kind]} · order {o.order_id} · seller {o.seller_id}",
            static_details=f"Customer `{o.customer_id}` · opened {inp.opened_at.isoformat()} · "
                           f"order total {o.total_cents / 100:.2f} {o.currency}",
        )

    # ------------------------------------------------------------ reading
    async def get_case(self, actor: Actor, case_id: str) -> dict:
        row = await self.pool.fetchrow(f"{CASE_ROW} WHERE case_id = $1", case_id)
        if row is None:
            raise NotFound(f"case {case_id} not found")
        if not may_see(actor, row["customer_id"], row["seller_id"]):
            raise Forbidden("this case is not yours")
        view = row["view"]
        view["category"], view["description"] = row["input"].get("category"), row["input"].get("description")
        view["attachments"] = await list_attachments(self.pool, case_id)
        view["timeline"] = [
            {"seq": t["seq"], "at": t["at"].isoformat(), "event": t["event"], "detail": t["detail"]}
            for t in await self.pool.fetch(
                "SELECT * FROM case_timeline WHERE case_id = $1 ORDER BY seq", case_id)
        ]
        return view

    async def get_attachment(self, actor: Actor, attachment_id: str):
        """A photo's row, for whoever may see its case."""
        row = await self.pool.fetchrow(
            """SELECT a.*, c.customer_id, c.seller_id FROM attachments a JOIN cases c USING (case_id)
               WHERE a.attachment_id = $1""", attachment_id)
        if row is None:
            raise NotFound(f"attachment {attachment_id} not found")
        if not may_see(actor, row["customer_id"], row["seller_id"]):
            raise Forbidden("this case is not yours")
        return row

    async def list_escalations(self) -> list[dict]:
        rows = await self.pool.fetch(
            f"""SELECT {CASE_VIEW} AS view FROM cases WHERE closed_at IS NULL AND (state->>'escalated')::boolean
                ORDER BY updated_at""")
        return [r["view"] for r in rows]

    async def case_for_parcel(self, tracking_number: str) -> str | None:
        return await self.pool.fetchval(
            """SELECT case_id FROM cases WHERE closed_at IS NULL AND state->'tracking_numbers' ? $1
               ORDER BY opened_at DESC LIMIT 1""", tracking_number)

    async def list_cases_json(self, actor: Actor, limit: int = 100) -> str:
        """The newest cases the actor may see, as a JSON array of views: PostgreSQL writes it, so the
        API sends it on without decoding and encoding 100 states (BENCHMARKS.md, waiting cases)."""
        if actor.role == Role.agent:
            where, args = "", [limit]
        else:
            where = f"WHERE {'customer_id' if actor.role == Role.customer else 'seller_id'} = $2"
            args = [limit, actor.id]
        # The views as each row keeps them, joined as text: nothing for PostgreSQL to build.
        return await self.pool.fetchval(
            f"""SELECT '[' || coalesce(string_agg(view_json, ',' ORDER BY opened_at DESC), '') || ']' FROM (
                    SELECT opened_at, view_json FROM cases {where}
                    ORDER BY opened_at DESC LIMIT $1) newest""", *args)

    async def list_cases(self, actor: Actor, limit: int = 100) -> list[dict]:
        return json.loads(await self.list_cases_json(actor, limit))

    async def list_open_cases(self, seller_id: str) -> list[dict]:
        """Every open case of a seller (their inbox), however many."""
        rows = await self.pool.fetch(
            f"SELECT {CASE_VIEW} AS view FROM cases WHERE seller_id = $1 AND closed_at IS NULL ORDER BY opened_at",
            seller_id)
        return [r["view"] for r in rows]

    # ------------------------------------------------------------ acting
    async def act(self, actor: Actor, case_id: str, update, payload, row=UNREAD) -> ActionAnswer:
        """Runs an Update (a CaseWorkflow method, e.g. CaseWorkflow.decide) on the case after the cheap
        checks; the workflow's validator has the last word. `row`: the case's customer_id, seller_id and
        stage (None: no such case) when the caller already read them, with its token."""
        if row is UNREAD:
            row = await self.pool.fetchrow("SELECT customer_id, seller_id, stage FROM cases WHERE case_id = $1",
                                           case_id)
        if row is None:
            raise NotFound(f"case {case_id} not found")
        if not may_see(actor, row["customer_id"], row["seller_id"]):
            raise Forbidden("this case is not yours")
        if row["stage"] == Stage.closed.value:
            raise Conflict("the case is closed", stage=Stage.closed.value)
        handle = self.temporal.get_workflow_handle(case_id)
        try:
            # The answer comes once the case has moved on; a case slow to do so (an outage of the
            # database or the gateway) must not hold the HTTP request: 202, the action goes on.
            return await asyncio.wait_for(handle.execute_update(update, payload),
                                          ACTION_ANSWER_TIMEOUT_SECONDS)
        except WorkflowUpdateFailedError as e:
            raise _service_error(e.cause) from e
        except (asyncio.TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            raise Accepted("accepted: the case is applying it; GET the case for its stage", stage=row["stage"])


def _service_error(cause: BaseException | None) -> ServiceError:
    if isinstance(cause, ApplicationError):
        details = cause.details[0] if cause.details else {}
        if cause.type == FORBIDDEN:
            return Forbidden(cause.message)
        if cause.type == WRONG_STAGE:
            return Conflict(cause.message, **details)
        if cause.type == INVALID:
            return Invalid(cause.message, **details)
    return Conflict(str(cause) if cause else "the case refused the action")


# ---------------------------------------------------------------- attachments (defect photos)
IMAGE_SIGNATURES = (
    (b"\xff\xd8\xff", "image/jpeg", "jpg"),
    (b"\x89PNG\r\n\x1a\n", "image/png", "png"),
)


def sniff_image(content: bytes) -> tuple[str, str] | None:
    """(content type, extension) from the bytes themselves, never from the file name."""
    for magic, ctype, ext in IMAGE_SIGNATURES:
        if content.startswith(magic):
            return ctype, ext
    if len(content) >= 12 and content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "image/webp", "webp"
    return None


def safe_filename(name: str | None) -> str:
    """A display name only (storage uses the checksum): no path, no control characters."""
    base = (name or "photo").replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(c for c in base if c.isalnum() or c in "._- ")[:100].strip(". ")
    return cleaned or "photo"


PHOTO_STAGES = {Stage.opening.value, Stage.awaiting_photos.value, Stage.awaiting_seller_decision.value}


async def add_attachment(svc: CaseService, actor: Actor, case_id: str, filename: str | None, content: bytes,
                         storage_dir) -> dict:
    import hashlib
    from pathlib import Path

    row = await svc.pool.fetchrow("SELECT customer_id, seller_id, stage, kind FROM cases WHERE case_id = $1", case_id)
    if row is None:
        raise NotFound(f"case {case_id} not found")
    if actor.role != Role.customer or actor.id != row["customer_id"]:
        raise Forbidden("only the customer who opened the case adds photos")
    if row["kind"] != CaseKind.defect.value:
        raise Conflict("photos are for defect claims", stage=row["stage"])
    if row["stage"] not in PHOTO_STAGES:
        raise Conflict(f"photos can no longer be added in stage {row['stage']}", stage=row["stage"])
    if len(content) > svc.policy.attachment_max_bytes:
        raise TooLarge(f"a photo is at most {svc.policy.attachment_max_bytes} bytes", field="file")
    kind = sniff_image(content)
    if kind is None:
        raise Invalid("the file is not a JPEG, PNG or WebP image", field="file", reason="unsupported_type")
    ctype, ext = kind
    digest = hashlib.sha256(content).hexdigest()
    count = await svc.pool.fetchval("SELECT count(*) FROM attachments WHERE case_id = $1", case_id)
    if count >= svc.policy.attachments_max_count:
        raise Invalid(f"at most {svc.policy.attachments_max_count} photos per case", field="file",
                      reason="too_many")
    path = Path(storage_dir) / case_id / f"{digest}.{ext}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = path.with_suffix(".part")
        tmp.write_bytes(content)
        tmp.replace(path)
    attachment_id = f"att_{digest[:16]}"
    await svc.pool.execute(
        """INSERT INTO attachments (attachment_id, case_id, filename, content_type, size_bytes, sha256, storage_path)
           VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (case_id, sha256) DO NOTHING""",
        f"{attachment_id}_{case_id[-6:]}", case_id, safe_filename(filename), ctype, len(content), digest, str(path))
    count = await svc.pool.fetchval("SELECT count(*) FROM attachments WHERE case_id = $1", case_id)
    await svc.temporal.get_workflow_handle(case_id).signal(CaseWorkflow.attachments_added, count)
    return {"sha256": digest, "content_type": ctype, "size_bytes": len(content), "photos": count}


async def list_attachments(pool, case_id: str) -> list[dict]:
    return [{"attachment_id": r["attachment_id"], "filename": r["filename"], "content_type": r["content_type"], "size_bytes": r["size_bytes"],
             "sha256": r["sha256"], "added_at": r["created_at"].isoformat()}
            for r in await pool.fetch("SELECT * FROM attachments WHERE case_id = $1 ORDER BY created_at", case_id)]


THUMBNAIL_BOX = (320, 320)


async def thumbnail_of(row) -> str:
    """The photo's thumbnail (JPEG, at most THUMBNAIL_BOX), made once beside the photo."""
    from pathlib import Path

    source = Path(row["storage_path"])
    thumb = source.with_name(source.stem + ".thumb.jpg")
    if not thumb.exists():
        await asyncio.to_thread(_make_thumbnail, source, thumb)
    return str(thumb)


def _make_thumbnail(source, thumb) -> None:
    from PIL import Image, ImageOps

    with Image.open(source) as img:
        img.draft("RGB", THUMBNAIL_BOX)  # a JPEG decodes at a fraction of its size: no full-size bitmap
        small = ImageOps.exif_transpose(img).convert("RGB")
        small.thumbnail(THUMBNAIL_BOX)
        tmp = thumb.with_suffix(".part")
        small.save(tmp, "JPEG", quality=80)
        tmp.replace(thumb)


class TooLarge(ServiceError):
    status = 413
