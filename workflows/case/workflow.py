"""The after-sales case: ONE workflow per case, from "Get help" to closed.

Its stages run as plain async functions over this one case state (cancellation.py, claim.py,
returns.py, refund.py). Every waiting stage is entered through `wait_in`, which takes the stage's
owner, deadline, reminder and timeout action from the stage table (stages.py). Customers, sellers and
care agents act through Updates whose validators refuse, without touching history, what the actor may
not do (Forbidden), what does not fit the stage (WrongStage) or an invalid request (InvalidAction); an
action a validator accepted always takes effect. A stop (the customer withdraws, care closes or forces
a refund, a parcel is declared lost) is observed by every wait at once: it raises `Interrupted` out of
the wait, and `run` applies it.
"""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Awaitable, Callable

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.cases import CaseActivities
    from domain.models import (
        ActionAnswer,
        Actor,
        CareRequest,
        CareResolution,
        CarrierEvent,
        CaseInput,
        CaseKind,
        CaseState,
        ClaimDecision,
        DecisionRequest,
        GatewayEvent,
        LabelRequest,
        OfferAnswer,
        OrderStatus,
        OrderStatusChange,
        OrderStatusResult,
        Outcome,
        Role,
        ShipmentRequest,
        SimpleAction,
        Stage,
        TimelineEvent,
    )
    from workflows import search_attributes as sa
    from workflows.case import cancellation, claim, refund
    from workflows.case.legal_refund import LegalRefund
    from workflows.case.base import (
        ALLOWED_DECISIONS,
        FORBIDDEN,
        INVALID,
        KIND_TITLES,
        WRONG_STAGE,
        Interrupted,
        Msg,
        MsgAt,
        Stop,
        text,
    )
    from workflows.case.stages import (
        LOSABLE_PARCEL_STAGES,
        MONEY_IN_FLIGHT,
        PARCEL_STAGES,
        STAGES,
        WITHDRAWABLE,
        AtDeadline,
        Owner,
    )
    from workflows.common import Deadline, euros, fmt, message_key, send_text
    from workflows.options import RECORD_ACTIVITY

LOCAL_WRITES = "local-writes"
# The emails that ask a party to act or remind them, and the closing emails, are sent beside the case, not
# in its way (send_beside): a stage's deadline is armed, and the party's action taken, while the email
# asking for it is in flight. Sent in line, an SMTP outage held a case in its stage, its deadline unarmed,
# for up to an email's day of retries. Cases started before this send them in line, as recorded.
MAIL_BESIDE = "mail-beside"


@workflow.defn
class CaseWorkflow:
    def __init__(self) -> None:
        self.inp: CaseInput | None = None
        self.state: CaseState | None = None
        self.deadline = Deadline()
        self._seq = 0
        self._unwritten: list[TimelineEvent] = []  # timeline events written with the next record
        # The stage whose wait is open: actions for it are accepted only then (set before the stage
        # is entered, cleared the instant its wait ends, before anything else runs).
        self.waiting_in: Stage | None = None
        self.care_from: Stage | None = None  # awaiting_care: the stage care took over from
        self.stop: Stop | None = None
        self._care_extension: int | None = None  # hours, while awaiting_care
        self._acting: set[str] = set()
        self._mail: list[asyncio.Task] = []  # the emails sent beside the case, awaited before it ends
        # Why the customer can no longer withdraw (money or goods left their hands), once it happened.
        self.committed: str | None = None
        self.money_in_flight = False
        # Actions and events, set by the handlers and read by the stage functions.
        self.decision: DecisionRequest | None = None
        self.offer_answer: OfferAnswer | None = None
        self.label: LabelRequest | None = None
        self.label_missing_reports = 0
        self.shipment: ShipmentRequest | None = None
        self.shipment_at: datetime | None = None  # the first proof of shipment (customer's or carrier's)
        self.parcel_seen_by_carrier = False
        self.received: tuple[str, datetime] | None = None  # (by whom, when) the return arrived
        self.activated = False
        self.activated_at: datetime | None = None
        self.legal = LegalRefund(self)  # withdrawals: the law's refund deadline (legal_refund.py)
        self.outbound: ShipmentRequest | None = None
        self.outbound_delivered = False
        self.impossible: SimpleAction | None = None
        self.gateway_events: dict[str, GatewayEvent] = {}
        self.settled_by_care: str | None = None
        self.refunds = 0

    # ================================================================ run
    @workflow.run
    async def run(self, inp: CaseInput) -> CaseState:
        self.inp = inp
        # The read-model writes and the order's compare-and-set run as local activities (a marker in
        # history instead of three events and a workflow task each). Cases started before keep the
        # regular activities they were recorded with.
        self.local_writes = workflow.patched(LOCAL_WRITES)
        self.mail_beside = workflow.patched(MAIL_BESIDE)
        order = inp.order
        self.state = CaseState(
            case_id=inp.case_id, kind=inp.kind, order_id=order.order_id, customer_id=order.customer_id,
            seller_id=order.seller_id, currency=order.currency,
        )
        await self.transition(Stage.opening, "case_opened", detail={
            "opened_by": inp.opened_by.model_dump(), "category": inp.category, "description": inp.description})
        await self.notify_customer("opened", "mail.case_opened", kind=inp.kind.value, order_id=order.order_id,
                                   case_id=inp.case_id)
        step: Callable[[], Awaitable] = (
            (lambda: cancellation.run(self)) if inp.kind == CaseKind.cancellation else (lambda: claim.run(self)))
        while True:
            try:
                await step()
                break
            except Interrupted:
                stop, self.stop = self.stop, None
                step = (lambda s=stop: self._apply_stop(s))
        self.legal.stop()
        await workflow.wait_condition(workflow.all_handlers_finished)
        await asyncio.gather(*self._mail)  # every email sent, or given up and recorded, before the case ends
        return self.state

    async def _apply_stop(self, stop: Stop) -> None:
        await self.record("stopped", {"kind": stop.kind, "by": stop.by, "reason": stop.reason}, with_next=True)
        if stop.kind == "withdrawn":
            return await self.close(Outcome.withdrawn, text("reason.withdrawn", note=stop.reason))
        if stop.kind == "care_close":
            return await self.close(Outcome.closed_by_care, text("reason.closed_by_care", note=stop.reason))
        why = text("reason.refund_by_care" if stop.kind == "force_refund" else "reason.parcel_lost", note=stop.reason)
        if self.inp.kind == CaseKind.cancellation:
            result = await self.set_order_status([OrderStatus.paid, OrderStatus.validated], OrderStatus.cancelled)
            if not result.applied:
                return await self.close(Outcome.refused, text("reason.order_already", status=result.status.value))
            self.commit("order cancelled")
        await refund.refund_in_full_and_close(self, why)

    def commit(self, why: str) -> None:
        """Money or goods left the customer's or the marketplace's hands: no withdrawal any more."""
        self.committed = self.committed or why

    # ================================================================ waiting stages
    async def wait_in(self, stage: Stage, done: Callable[[], bool], *, event: str, since: datetime | None = None,
                      detail: dict | None = None, ask: MsgAt | None = None, remind: MsgAt | None = None,
                      reconcile: Callable[[], Awaitable[None]] | None = None,
                      not_after: datetime | None = None) -> bool:
        """Enters a waiting stage (owner, deadline and timeout action from the stage table) and waits
        until `done()`. True when done; False only for stages whose deadline expires the case or acts on
        the seller's behalf. A stop raises Interrupted. Escalations and care's decisions (extend, mark
        received / settled) happen in here; `ask` is sent on entering, `remind` before the deadline;
        `reconcile` (look the outside world up) runs when the deadline passes, then periodically;
        `not_after` caps the deadline (the law's refund deadline caps the seller's activation)."""
        rule = STAGES[stage]
        policy = self.inp.policy
        self.waiting_in = stage
        at = rule.deadline(policy, since or workflow.now(), self.inp.kind)
        self.deadline.set(min(at, not_after) if not_after is not None else at)
        await self.transition(stage, event, waiting_for=rule.owner, deadline=self.deadline.at,
                              deadline_name=rule.deadline_name, detail=detail)
        if ask is not None:
            await self.send_beside(ask(self.deadline.at))
        reminder = None if remind is None else (lambda: self._remind(remind))
        every = timedelta(hours=policy.reconcile_every_hours) if reconcile else None
        escalated = False
        try:
            while True:
                reached = await self.deadline.wait(lambda: done() or self.stop is not None,
                                                   reminder_before=rule.reminder_before(policy), remind=reminder,
                                                   every=every if escalated else None, on_every=reconcile)
                if self.stop is not None:
                    raise Interrupted()
                if not reached and reconcile is not None:
                    await reconcile()
                    reached = done()
                if reached:
                    return True
                action = rule.at_deadline
                if action == AtDeadline.on_seller_behalf and not policy.marketplace_refunds_on_seller_behalf:
                    action = AtDeadline.escalate
                if action in (AtDeadline.expire, AtDeadline.on_seller_behalf):
                    self.waiting_in = None
                    if action == AtDeadline.on_seller_behalf:
                        await self.escalate(f"{rule.escalation}: the marketplace acts on the seller's behalf")
                    return False
                if action == AtDeadline.escalate and not escalated:
                    # The owner may still act; care has until its own deadline to step in.
                    escalated, reminder = True, None
                    await self.escalate(rule.escalation)
                    self._set_deadline(policy.care_deadline(workflow.now()), "care")
                    continue
                # Customer care decides: extend (back to this stage), mark done, or a stop.
                self.waiting_in = None
                why = rule.escalation if action == AtDeadline.care else \
                    f"{rule.escalation}; nobody acted by the care deadline"
                extension = await self.care_decides(why, from_stage=stage, done=done, reconcile=reconcile)
                if extension is None:
                    return True
                self.waiting_in, escalated = stage, False
                self.deadline.set(workflow.now() + timedelta(hours=extension))
                await self.transition(stage, "stage_resumed", waiting_for=rule.owner, deadline=self.deadline.at,
                                      deadline_name=rule.deadline_name, detail={"extended_hours": extension})
        finally:
            if self.waiting_in == stage:
                self.waiting_in = None

    async def care_decides(self, reason: str, *, from_stage: Stage | None = None,
                           done: Callable[[], bool] = lambda: False,
                           reconcile: Callable[[], Awaitable[None]] | None = None) -> int | None:
        """awaiting_care: escalates and waits for customer care, under care's own deadline (reminder,
        then a second-level escalation and a new deadline). Returns the hours of an extension (back to
        `from_stage`), None when `done()` became true meanwhile (a parcel arrived, the bank settled);
        raises Interrupted for a stop (force refund, close, lost parcel, withdrawal)."""
        policy = self.inp.policy
        self.waiting_in, self.care_from = Stage.awaiting_care, from_stage
        self.state.escalated, self.state.escalation_reason = True, reason  # shown with the stage change
        self.deadline.set(policy.care_deadline(workflow.now()))
        await self.transition(Stage.awaiting_care, "waiting_for_care", waiting_for=Owner.care,
                              deadline=self.deadline.at, deadline_name="care",
                              detail={"reason": reason, "from": from_stage.value if from_stage else None})
        await self.escalate(reason)
        level = 1
        try:
            while True:
                reached = await self.deadline.wait(
                    lambda: done() or self.stop is not None or self._care_extension is not None,
                    reminder_before=policy.reminder_before, remind=lambda: self._remind_care(level),
                    every=timedelta(hours=policy.reconcile_every_hours) if reconcile else None, on_every=reconcile)
                if self.stop is not None:
                    raise Interrupted()
                if self._care_extension is not None:
                    hours, self._care_extension = self._care_extension, None
                    return hours
                if reached:
                    return None
                level += 1
                await self.escalate(f"second-level escalation ({level}): customer care has not decided the "
                                    f"case by {fmt(self.deadline.at)}: {reason}", lead=True)
                self._set_deadline(policy.care_deadline(workflow.now()), "care")
        finally:
            self.waiting_in, self.care_from = None, None

    def _set_deadline(self, at: datetime, name: str) -> None:
        self.deadline.set(at)
        self.state.deadline = at
        self.state.deadlines[name] = at
        self.publish()

    async def _remind(self, remind: MsgAt) -> None:
        await self.send_beside(remind(self.deadline.at))
        await self.record("reminder_sent", {"to": STAGES[self.state.stage].owner.value,
                                            "deadline": self.deadline.at.isoformat()})

    async def _remind_care(self, level: int) -> None:
        await self.send_beside(Msg(Role.agent, f"care-reminder-{self._seq}", "mail.care_reminder", {
            "case_id": self.inp.case_id, "due_at": self.deadline.at.isoformat(),
            "reason": self.state.escalation_reason or ""}))
        await self.record("reminder_sent", {"to": "care", "deadline": self.deadline.at.isoformat(), "level": level})

    # ================================================================ signals
    @workflow.signal
    def attachments_added(self, count: int) -> None:
        """The API stored photos (count = photos on the case now)."""
        if self.state is not None:
            self.state.attachments = max(self.state.attachments, count)

    @workflow.signal
    def carrier_event(self, ev: CarrierEvent) -> None:
        """Parcel events from the carrier webhook (duplicates and unknown parcels change nothing)."""
        if self.state is None or ev.tracking_number not in self.state.tracking_numbers:
            return
        if self.outbound is not None and ev.tracking_number == self.outbound.tracking_number:
            self.outbound_delivered = self.outbound_delivered or ev.status == "delivered"
            return
        # The return parcel: the carrier has it (even if the customer never clicked "shipped").
        if ev.status in ("in_transit", "delivered"):
            self.parcel_seen_by_carrier = True
            self.shipment_at = self.shipment_at or workflow.now()
            self.commit("the parcel is with the carrier")
        if ev.status == "delivered" and self.received is None:
            self.received = ("carrier", workflow.now())

    @workflow.signal
    def gateway_event(self, event: GatewayEvent) -> None:
        """Settlement or failure of a card refund (the gateway's webhook). The first final status of a
        refund wins; duplicates and late deliveries change nothing."""
        self.gateway_events.setdefault(event.object_id, event)

    @workflow.query
    def get_state(self) -> CaseState:
        return self.state

    @workflow.query
    def is_waiting(self) -> bool:
        """True when the case waits in a stage for somebody (its timer armed) and no handler runs:
        nothing of the case is in flight (tests look then). Not while the gateway call runs."""
        return (self.deadline.parked and self.waiting_in not in (None, Stage.refunding)
                and workflow.all_handlers_finished() and all(t.done() for t in self._mail))

    # ================================================================ updates
    async def _act(self, name: str, apply: Callable[[], None], record: tuple[str, dict] | None = None) -> ActionAnswer:
        """Applies an accepted action at once (before anything else can run, so it lands in the stage
        the validator saw) and answers once the case has left that stage."""
        stage = self.state.stage
        self._acting.add(name)
        try:
            apply()
            if record is not None:
                await self.record(*record)
            await workflow.wait_condition(lambda: self.state.stage != stage)
            return self.answer()
        finally:
            self._acting.discard(name)

    @workflow.update
    async def decide(self, req: DecisionRequest) -> ActionAnswer:
        return await self._act("decide", lambda: setattr(self, "decision", req))

    @decide.validator
    def _validate_decide(self, req: DecisionRequest) -> None:
        self.check(req.actor, {Role.seller}, {Stage.awaiting_seller_decision}, "decide")
        if self.decision is not None:
            raise ApplicationError("the seller has already decided", {"stage": self.state.stage.value}, type=WRONG_STAGE)
        allowed = ALLOWED_DECISIONS[self.inp.kind]
        if req.decision not in allowed:
            raise ApplicationError(f"decision must be one of: {', '.join(sorted(allowed))}", {"field": "decision"},
                                   type=INVALID)
        if req.decision == ClaimDecision.partial_refund:
            left = self.inp.order.total_cents - self.state.refunded_cents - self.state.wallet_credited_cents
            if not req.partial_amount_cents:
                raise ApplicationError("partial_amount_cents is required", {"field": "partial_amount_cents"},
                                       type=INVALID)
            if req.partial_amount_cents >= self.inp.order.total_cents or req.partial_amount_cents > left:
                raise ApplicationError(f"a partial refund is less than what was paid (at most {left - 1} cents)",
                                       {"field": "partial_amount_cents"}, type=INVALID)

    @workflow.update
    async def answer_offer(self, req: OfferAnswer) -> ActionAnswer:
        return await self._act("offer", lambda: setattr(self, "offer_answer", req))

    @answer_offer.validator
    def _validate_offer(self, req: OfferAnswer) -> None:
        self.check(req.actor, {Role.customer}, {Stage.awaiting_customer_answer}, "offer")

    @workflow.update
    async def issue_return_label(self, req: LabelRequest) -> ActionAnswer:
        return await self._act("label", lambda: setattr(self, "label", req))

    @issue_return_label.validator
    def _validate_label(self, req: LabelRequest) -> None:
        self.check(req.actor, {Role.seller}, {Stage.awaiting_return_label}, "label")

    @workflow.update
    async def report_label_missing(self, req: SimpleAction) -> ActionAnswer:
        """Re-notifies the seller; the second report escalates. The label wait goes on meanwhile."""
        self.label_missing_reports += 1
        n, policy = self.label_missing_reports, self.inp.policy
        await self.notify_seller(f"label-missing-{n}", "return.label_missing", "mail.label_missing",
                                 order_id=self.inp.order.order_id,
                                 due_at=self.state.deadline.isoformat() if self.state.deadline else None)
        await self.record("label_missing_reported", {"reports": n})
        if n == policy.label_missing_reports_before_escalation and not self.state.escalated:
            await self.escalate(f"customer reported the return label missing {n} times")
        return self.answer()

    @report_label_missing.validator
    def _validate_label_missing(self, req: SimpleAction) -> None:
        self.check(req.actor, {Role.customer}, {Stage.awaiting_return_label})

    @workflow.update
    async def report_shipment(self, req: ShipmentRequest) -> ActionAnswer:
        def apply():
            self.shipment = req
            self.shipment_at = self.shipment_at or workflow.now()
            self.commit("the item was shipped back")
        return await self._act("shipment", apply)

    @report_shipment.validator
    def _validate_shipment(self, req: ShipmentRequest) -> None:
        self.check(req.actor, {Role.customer}, {Stage.awaiting_shipment}, "shipment")

    @workflow.update
    async def confirm_receipt(self, req: SimpleAction) -> ActionAnswer:
        def apply():
            self.received = self.received or ("seller", workflow.now())
            self.commit("the seller has the item")
        return await self._act("receipt", apply)

    @confirm_receipt.validator
    def _validate_receipt(self, req: SimpleAction) -> None:
        self.check(req.actor, {Role.seller}, {Stage.awaiting_shipment, Stage.in_transit}, "receipt")

    @workflow.update
    async def activate_refund(self, req: SimpleAction) -> ActionAnswer:
        def apply():
            self.activated, self.activated_at = True, workflow.now()
        return await self._act("activation", apply)

    @activate_refund.validator
    def _validate_activation(self, req: SimpleAction) -> None:
        self.check(req.actor, {Role.seller}, {Stage.awaiting_refund_activation}, "activation")

    @workflow.update
    async def ship_outbound(self, req: ShipmentRequest) -> ActionAnswer:
        return await self._act("outbound", lambda: setattr(self, "outbound", req))

    @ship_outbound.validator
    def _validate_outbound(self, req: ShipmentRequest) -> None:
        self.check(req.actor, {Role.seller}, {Stage.awaiting_outbound_shipment}, "outbound")

    @workflow.update
    async def declare_impossible(self, req: SimpleAction) -> ActionAnswer:
        return await self._act("outbound", lambda: setattr(self, "impossible", req))

    @declare_impossible.validator
    def _validate_impossible(self, req: SimpleAction) -> None:
        self.check(req.actor, {Role.seller}, {Stage.awaiting_outbound_shipment}, "outbound")

    @workflow.update
    async def withdraw(self, req: SimpleAction) -> ActionAnswer:
        return await self._act("stop", lambda: setattr(self, "stop", Stop("withdrawn", req.note or "", req.actor.id)))

    @withdraw.validator
    def _validate_withdraw(self, req: SimpleAction) -> None:
        self.check(req.actor, {Role.customer}, WITHDRAWABLE, "stop")
        if self.committed or self.money_in_flight or self._money_out():
            raise ApplicationError(f"too late to withdraw: {self.committed or 'money was refunded'}",
                                   {"stage": self.state.stage.value}, type=WRONG_STAGE)

    @workflow.update
    async def care_resolve(self, req: CareRequest) -> ActionAnswer:
        r = req.resolution
        if r == CareResolution.extend_deadline:
            if self.waiting_in == Stage.awaiting_care:
                return await self._act("care", lambda: setattr(self, "_care_extension", req.extend_hours))
            # Re-arms the stage's timer, also when its deadline has already passed.
            at = max(self.deadline.at, workflow.now()) + timedelta(hours=req.extend_hours)
            self._set_deadline(at, STAGES[self.state.stage].deadline_name)
            await self.record("deadline_extended", {"by": req.actor.id, "reason": req.reason,
                                                    "hours": req.extend_hours, "deadline": at.isoformat()})
            return self.answer()
        decided = ("care_decided", {"by": req.actor.id, "resolution": r.value, "reason": req.reason})
        if r == CareResolution.mark_received:
            def apply():
                if self._care_stage() == Stage.outbound_in_transit:
                    self.outbound_delivered = True
                else:
                    self.received = self.received or ("care", workflow.now())
                    self.commit("the seller has the item")
            return await self._act("care", apply, decided)
        if r == CareResolution.mark_settled:
            return await self._act("care", lambda: setattr(self, "settled_by_care", req.reason), decided)
        kind = {CareResolution.close: "care_close", CareResolution.force_refund: "force_refund",
                CareResolution.mark_lost: "parcel_lost"}[r]
        return await self._act("care", lambda: setattr(self, "stop", Stop(kind, req.reason, req.actor.id)), decided)

    @care_resolve.validator
    def _validate_care(self, req: CareRequest) -> None:
        self.check(req.actor, {Role.agent}, set(STAGES) - {Stage.closed}, "care")
        stage, r = self._care_stage(), req.resolution
        def refuse(why: str):
            raise ApplicationError(f"not possible in stage {self.state.stage.value}: {why}",
                                   {"stage": self.state.stage.value}, type=WRONG_STAGE)

        if r == CareResolution.extend_deadline:
            if req.extend_hours is None:
                raise ApplicationError("extend_hours is required", {"field": "extend_hours"}, type=INVALID)
            if self.waiting_in == Stage.awaiting_care and self.care_from is None:
                refuse("nobody else can act here: force a refund or close the case")
        elif r in (CareResolution.close, CareResolution.force_refund):
            if stage in MONEY_IN_FLIGHT or self.money_in_flight:
                refuse("a refund is under way (mark it settled once the bank has paid)")
            if r == CareResolution.force_refund and self._money_out():
                refuse("money was already refunded on this case")
        elif r == CareResolution.mark_received:
            if stage not in PARCEL_STAGES:
                refuse("no parcel is on its way")
        elif r == CareResolution.mark_lost:
            if stage not in LOSABLE_PARCEL_STAGES:
                refuse("no parcel is in transit")
            if self._money_out():
                refuse("money was already refunded on this case")
        elif r == CareResolution.mark_settled and stage != Stage.awaiting_bank_settlement:
            refuse("no refund is awaiting settlement")

    def _care_stage(self) -> Stage | None:
        """The stage care acts on: the one it took over from while awaiting_care."""
        return self.care_from if self.waiting_in == Stage.awaiting_care and self.care_from else self.waiting_in

    def _money_out(self) -> int:
        return self.state.refunded_cents + self.state.wallet_credited_cents

    def check(self, actor: Actor, roles: set[Role], stages: set[Stage], action: str | None = None) -> None:
        if self.state is None:
            raise ApplicationError("the case is starting", {"stage": Stage.opening.value}, type=WRONG_STAGE)
        if actor.role not in roles:
            raise ApplicationError(f"a {actor.role.value} may not do this", type=FORBIDDEN)
        if actor.role == Role.seller and actor.id != self.state.seller_id:
            raise ApplicationError("this case is on another seller's order", type=FORBIDDEN)
        if actor.role == Role.customer and actor.id != self.state.customer_id:
            raise ApplicationError("this case is on another customer's order", type=FORBIDDEN)
        if self.waiting_in not in stages or self.stop is not None:
            raise ApplicationError(f"not possible in stage {self.state.stage.value}",
                                   {"stage": self.state.stage.value}, type=WRONG_STAGE)
        if action is not None and action in self._acting:
            raise ApplicationError("this action is already being applied", {"stage": self.state.stage.value},
                                   type=WRONG_STAGE)

    def answer(self) -> ActionAnswer:
        return ActionAnswer(case_id=self.state.case_id, stage=self.state.stage, outcome=self.state.outcome)

    # ================================================================ transitions and records
    async def transition(self, stage: Stage, event: str, *, waiting_for: Owner = Owner.nobody,
                         deadline: datetime | None = None, deadline_name: str | None = None,
                         detail: dict | None = None) -> None:
        s = self.state
        s.stage, s.waiting_for, s.deadline = stage, waiting_for.value, deadline
        if deadline is not None and deadline_name:
            s.deadlines[deadline_name] = deadline
        self.publish()
        await self.record(event, detail or {})

    def publish(self) -> None:
        """Search attributes and the Temporal UI's current details, from the state."""
        s = self.state
        workflow.upsert_search_attributes([
            sa.CASE_KIND.value_set(s.kind.value),
            sa.CASE_STAGE.value_set(s.stage.value),
            sa.ORDER_ID.value_set(s.order_id),
            sa.SELLER_ID.value_set(s.seller_id),
            sa.CUSTOMER_ID.value_set(s.customer_id),
            sa.ESCALATED.value_set(s.escalated),
            sa.REFUND_CENTS.value_set(s.refund_cents),
            sa.NEXT_DEADLINE.value_set(s.deadline) if s.deadline else sa.NEXT_DEADLINE.value_unset(),
            *([sa.LEGAL_REFUND_DUE.value_set(s.legal_refund_due)] if s.legal_refund_due else []),
        ])
        lines = [f"**{KIND_TITLES[s.kind]}** · order `{s.order_id}` · seller `{s.seller_id}`",
                 f"- stage: **{s.stage.value}**" + (f" ({s.outcome.value})" if s.outcome else ""),
                 f"- waiting for: {s.waiting_for}"]
        if s.deadline:
            lines.append(f"- deadline: {fmt(s.deadline)} Europe/Paris")
        if s.legal_refund_due:
            lines.append(f"- legal refund due: {fmt(s.legal_refund_due)} Europe/Paris (L221-24)")
        if s.late_refund:
            lines.append(f"- refunded {s.late_refund.days_late} days late ({s.late_refund.late_party}): "
                         f"increase {euros(s.late_refund.increase_cents, s.currency)}")
        if s.escalated:
            lines.append(f"- escalated: {s.escalation_reason}")
        if s.refund_cents:
            lines.append(f"- refund: {euros(s.refund_cents, s.currency)} (settled {euros(s.refunded_cents, s.currency)})")
        workflow.set_current_details("\n".join(lines))

    async def record(self, event: str, detail: dict | None = None, *, with_next: bool = False) -> None:
        """A timeline event and the read model after it. `with_next`: written together with the next
        record (always a stage change that follows at once), one activity for both."""
        self._seq += 1
        self._unwritten.append(TimelineEvent(case_id=self.inp.case_id, seq=self._seq, at=workflow.now(), event=event,
                                             detail=detail or {}, state=self.state.model_copy(deep=True)))
        if with_next:
            return
        events, self._unwritten = self._unwritten, []
        await self.write(CaseActivities.record_case_events, events, " + ".join(e.event for e in events))

    async def escalate(self, reason: str, lead: bool = False) -> None:
        self.state.escalated = True
        self.state.escalation_reason = reason
        self.publish()
        await self.record("escalated", {"reason": reason, **({"level": "lead"} if lead else {})})
        await self.notify_care(f"escalated-{self._seq}", "mail.care_escalated_lead" if lead else "mail.care_escalated",
                               case_id=self.inp.case_id, reason=reason)

    async def close(self, outcome: Outcome, reason: dict) -> None:
        """Closes the case; `reason` is a keyed text (base.text), read in each reader's locale."""
        self.state.outcome = outcome
        self.state.closed_reason_key, self.state.closed_reason_params = reason["text"], reason["params"]
        self.deadline.set(None)
        await self.transition(Stage.closed, "case_closed", detail={"outcome": outcome.value, "reason": reason})
        params = {"case_id": self.inp.case_id, "outcome": outcome.value, "reason": reason}
        # Both at once, beside the case (awaited before it ends). The seller's has its own key: under the
        # customer's ("closed") it was taken for a repeat and never sent.
        await self.send_beside(Msg(Role.customer, "closed", "mail.case_closed", params))
        await self.send_beside(Msg(Role.seller, "closed-seller", "mail.case_closed_seller", params, "case.closed"))

    async def set_order_status(self, expected: list[OrderStatus], new: OrderStatus) -> OrderStatusResult:
        return await self.write(CaseActivities.set_order_status,
                                OrderStatusChange(order_id=self.inp.order.order_id, expected=expected, new=new),
                                f"order → {new.value}")

    async def write(self, activity, arg, summary: str):
        """A PostgreSQL step of the case (read model, order status, ledger read): short, idempotent,
        retried until the database is back."""
        if self.local_writes:
            return await workflow.execute_local_activity_method(activity, arg, summary=summary, **RECORD_ACTIVITY)
        return await workflow.execute_activity_method(activity, arg, summary=summary, **RECORD_ACTIVITY)

    # ================================================================ messages
    async def message(self, m: Msg) -> None:
        recipient = {Role.customer: self.state.customer_id, Role.seller: self.state.seller_id}.get(m.to, "care")
        event = m.event if m.to == Role.seller else ("case.escalated" if m.to == Role.agent else None)
        if not await send_text(self.inp.case_id, m.key, m.to, recipient, m.text, m.params, event):
            await self.record("notification_failed", {"message_key": message_key(self.inp.case_id, m.key)})

    async def send_beside(self, m: Msg) -> None:
        """Sends `m` without holding the case (MAIL_BESIDE): the case goes on at once and awaits its emails
        before it ends; one undeliverable for a day is recorded then (message). A case started before
        MAIL_BESIDE sends it in line."""
        if self.mail_beside:
            self._mail.append(asyncio.ensure_future(self.message(m)))
        else:
            await self.message(m)

    async def notify_customer(self, key: str, text_key: str, **params) -> None:
        await self.message(Msg(Role.customer, key, text_key, params))

    async def notify_seller(self, key: str, event: str, text_key: str, **params) -> None:
        await self.message(Msg(Role.seller, key, text_key, params, event))

    async def notify_care(self, key: str, text_key: str, **params) -> None:
        await self.message(Msg(Role.agent, key, text_key, params))
