"""The after-sales case workflow: one per case, from "Get help" to closed.

The case owns its stage: it upserts the search attributes, the Temporal UI details and the read model
(through activities) at every transition, including those its children report (return shipment,
refund). Customers, sellers and care agents act through Updates whose validators refuse, without
touching history, what the actor may not do (Forbidden), what does not fit the stage (WrongStage) or
an invalid request (InvalidAction). The case forwards an accepted action to the child that waits for it.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError, ChildWorkflowError, FailureError

with workflow.unsafe.imports_passed_through():
    from activities.cases import CaseActivities
    from activities.wallet import WalletActivities
    from domain.models import (
        ActionAnswer,
        Actor,
        CancellationDecision,
        CareRequest,
        CareResolution,
        CarrierEvent,
        CaseInput,
        CaseKind,
        CaseState,
        ClaimDecision,
        DecisionRequest,
        LabelRequest,
        Money,
        OrderStatus,
        OrderStatusChange,
        Outcome,
        RefundChildInput,
        RefundOutcome,
        RefundRequest,
        ReturnInput,
        ReturnOutcome,
        Role,
        ShipmentRequest,
        SimpleAction,
        Stage,
        StageReport,
        TimelineEvent,
        WalletCredit,
    )
    from workflows import search_attributes as sa
    from workflows.common import REPORT_SIGNAL, Deadline, euros, fmt, send
    from workflows.options import RECORD_ACTIVITY
    from workflows.refund import RefundWorkflow
    from workflows.return_shipment import ReturnShipmentWorkflow

FORBIDDEN = "Forbidden"
WRONG_STAGE = "WrongStage"
INVALID = "InvalidAction"

KIND_TITLES = {
    CaseKind.cancellation: "Cancellation",
    CaseKind.defect: "Defect claim",
    CaseKind.withdrawal: "Withdrawal (return)",
    CaseKind.warranty: "Warranty claim",
}
ALLOWED_DECISIONS = {
    CaseKind.cancellation: {d.value for d in CancellationDecision},
    CaseKind.defect: {d.value for d in ClaimDecision},
    # Warranty: exchange or repair only, never a refund (care decides when both are impossible).
    CaseKind.warranty: {ClaimDecision.exchange.value, ClaimDecision.repair.value},
}
# Before money moves, a customer may withdraw the request and care may close the case.
STOPPABLE = {Stage.opening, Stage.awaiting_photos, Stage.awaiting_seller_decision, Stage.awaiting_return_label, Stage.awaiting_shipment,
             Stage.awaiting_outbound_shipment, Stage.awaiting_care}
CARD_CLOSED_REASONS = {"expired_or_canceled_card", "lost_or_stolen_card", "card_closed"}


class CaseStopped(Exception):
    """The customer withdrew the request or care closed the case while it waited."""


@workflow.defn
class CaseWorkflow:
    def __init__(self) -> None:
        self.inp: CaseInput | None = None
        self.state: CaseState | None = None
        self.deadline = Deadline()
        self._seq = 0
        self._decision: DecisionRequest | None = None
        self._care: CareRequest | None = None
        self._stop: tuple[Outcome, str] | None = None
        self._reports: list[StageReport] = []
        self._child = None  # handle of the running child workflow
        self._child_owns_deadline = False
        self._children = 0
        self._outbound: ShipmentRequest | None = None
        self._outbound_delivered = False
        self._impossible: SimpleAction | None = None
        self._acting: set[str] = set()

    # ================================================================ run
    @workflow.run
    async def run(self, inp: CaseInput) -> CaseState:
        self.inp = inp
        order = inp.order
        self.state = CaseState(
            case_id=inp.case_id, kind=inp.kind, order_id=order.order_id, customer_id=order.customer_id,
            seller_id=order.seller_id, currency=order.currency,
        )
        await self._transition(Stage.opening, "case_opened", detail={
            "opened_by": inp.opened_by.model_dump(), "category": inp.category, "description": inp.description})
        await self._notify_customer("opened", f"We received your {KIND_TITLES[inp.kind].lower()} request",
                                    f"Your request on order {order.order_id} is open as case {inp.case_id}.")
        try:
            if inp.kind == CaseKind.cancellation:
                await self._cancellation()
            elif inp.kind == CaseKind.withdrawal:
                await self._return_then_refund("withdrawal: item returned", seller_pays_label=False)
            else:
                await self._claim()
        except CaseStopped:
            outcome, reason = self._stop
            await self._close(outcome, reason)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.state

    # ================================================================ cancellation
    async def _cancellation(self) -> None:
        status = self.inp.order.status
        if status == OrderStatus.paid:
            # Compare-and-set: a seller validating at this very moment makes it fail, and the case
            # continues as the cancellation of a validated order.
            result = await self._set_order_status([OrderStatus.paid], OrderStatus.cancelled)
            if result.applied:
                await self._record("order_cancelled", {"from": "paid"})
                return await self._refund_in_full_and_close("order cancelled before validation")
            status = result.status
        if status == OrderStatus.validated:
            return await self._cancellation_needs_seller()
        await self._close(Outcome.refused, reason=(
            f"The order is already {status.value}: it can no longer be cancelled. Once it is delivered, "
            "you can return it within the withdrawal period."))

    async def _cancellation_needs_seller(self) -> None:
        order_id = self.inp.order.order_id
        decision = await self._seller_decision(
            self.inp.policy.cancellation_answer_deadline(workflow.now()), "cancellation.requested",
            f"Cancellation requested on order {order_id}",
            f"The customer asks to cancel order {order_id}. Accept or refuse")
        if decision is None:
            return await self._care_takes_over()
        if decision.decision == CancellationDecision.accept:
            result = await self._set_order_status([OrderStatus.validated], OrderStatus.cancelled)
            if result.applied:
                await self._record("order_cancelled", {"from": "validated", "by": decision.actor.id})
                return await self._refund_in_full_and_close("cancellation accepted by the seller")
        await self._close(Outcome.refused, reason=(
            (decision.reason or "The seller has already shipped the order.")
            + " Once the order is delivered, you can return it within the withdrawal period."))

    # ================================================================ claims (defect, warranty)
    async def _claim(self) -> None:
        inp = self.inp
        if inp.kind == CaseKind.defect and not await self._photos():
            return await self._close(Outcome.expired, "No photos of the defect were added in time.")
        what = f"{KIND_TITLES[inp.kind]} on order {inp.order.order_id}"
        choices = ", ".join(sorted(ALLOWED_DECISIONS[inp.kind]))
        decision = await self._seller_decision(
            inp.policy.claim_answer_deadline(workflow.now()), f"{inp.kind.value}.opened", what,
            f"{what}: {inp.category.value if inp.category else 'other'} — {inp.description or ''}\n"
            f"Photos: {self.state.attachments}. Answer with one of: {choices}")
        if decision is None:
            return await self._care_takes_over()
        d = ClaimDecision(decision.decision)
        if d == ClaimDecision.partial_refund:
            return await self._partial_refund_and_close(decision.partial_amount_cents, decision.reason)
        if d == ClaimDecision.refund:
            return await self._return_then_refund("defect claim: item returned", seller_pays_label=True)
        # Exchange or repair: the item comes back, then the seller sends a replacement / the repaired item.
        outcome = await self._return(seller_pays_label=True)
        if outcome is None:
            return
        await self._outbound_shipment(d)

    async def _photos(self) -> bool:
        """A defect claim needs photos before the seller is asked. False when none came in time."""
        if self.state.attachments:
            return True
        policy = self.inp.policy
        self.deadline.set(policy.photos_deadline(workflow.now()))
        await self._transition(Stage.awaiting_photos, "photos_requested", waiting_for="customer",
                               deadline=self.deadline.at, deadline_name="photos")
        body = (f"Please add photos of the defect to case {self.inp.case_id} before {fmt(self.deadline.at)} "
                "(Europe/Paris), so the seller can assess it.")
        await self._notify_customer("photos-asked", "Add photos to your claim", body)

        async def remind():
            await self._notify_customer("photos-reminder", "Reminder: add photos to your claim", body)
            await self._record("reminder_sent", {"to": "customer", "deadline": self.deadline.at.isoformat()})

        got = await self.deadline.wait(lambda: self.state.attachments > 0 or self._stop is not None,
                                       reminder_before=policy.reminder_before, remind=remind)
        self._raise_if_stopped()
        return got

    @workflow.signal
    def attachments_added(self, count: int) -> None:
        """The API stored photos (count = photos on the case now)."""
        if self.state is not None:
            self.state.attachments = max(self.state.attachments, count)

    async def _seller_decision(self, deadline: datetime, event: str, subject: str, ask: str) -> DecisionRequest | None:
        """Asks the seller and waits until the deadline (reminder before). None: silence, escalated."""
        self.deadline.set(deadline)
        await self._transition(Stage.awaiting_seller_decision, "seller_asked", waiting_for="seller",
                               deadline=deadline, deadline_name="seller_answer")
        body = f"{ask} before {fmt(deadline)} (Europe/Paris), otherwise customer care takes over."
        await self._notify_seller("decision-asked", event, subject, body)

        async def remind():
            await self._notify_seller("decision-reminder", event, f"Reminder: {subject}", body)
            await self._record("reminder_sent", {"to": "seller", "deadline": self.deadline.at.isoformat()})

        answered = await self.deadline.wait(lambda: self._decision is not None or self._stop is not None,
                                            reminder_before=self.inp.policy.reminder_before, remind=remind)
        self._raise_if_stopped()
        if not answered:
            await self._escalate("seller did not answer in time")
            return None
        self.state.decision = self._decision.decision
        await self._record("seller_decided", {"decision": self._decision.decision, "reason": self._decision.reason,
                                              "by": self._decision.actor.id})
        return self._decision

    async def _care_takes_over(self) -> None:
        """Customer care decides: force the refund or close with a reason (extensions don't apply here)."""
        await self._transition(Stage.awaiting_care, "waiting_for_care", waiting_for="care")
        await workflow.wait_condition(lambda: self._care is not None or self._stop is not None)
        self._raise_if_stopped()
        care = self._care
        if self.inp.kind == CaseKind.cancellation:
            await self._set_order_status([OrderStatus.paid, OrderStatus.validated], OrderStatus.cancelled)
        await self._refund_in_full_and_close(f"refund granted by customer care: {care.reason}")

    # ================================================================ returns
    async def _return(self, seller_pays_label: bool) -> ReturnOutcome | None:
        """The return shipment child. None when it expired (the case is then closed)."""
        inp = self.inp
        outcome: ReturnOutcome = await self._run_child(
            ReturnShipmentWorkflow.run,
            ReturnInput(case_id=inp.case_id, parent_workflow_id=workflow.info().workflow_id, policy=inp.policy,
                        customer_id=self.state.customer_id, seller_id=self.state.seller_id,
                        order_id=inp.order.order_id, seller_pays_label=seller_pays_label),
            "return", f"Return shipment · order {inp.order.order_id}")
        if outcome.expired:
            await self._close(Outcome.expired, "The item was not shipped back within the return period.")
            return None
        return outcome

    async def _return_then_refund(self, why: str, seller_pays_label: bool) -> None:
        outcome = await self._return(seller_pays_label)
        if outcome is not None:
            await self._refund_in_full_and_close(why, received_at=outcome.received_at)

    async def _outbound_shipment(self, d: ClaimDecision) -> None:
        """The seller ships the replacement or the repaired item; the case closes on its delivery."""
        policy = self.inp.policy
        what = "replacement" if d == ClaimDecision.exchange else "repaired item"
        deadline = policy.outbound_shipment_deadline(workflow.now())
        self.deadline.set(deadline)
        await self._transition(Stage.awaiting_outbound_shipment, "outbound_requested", waiting_for="seller",
                               deadline=deadline, deadline_name="outbound_shipment")
        body = (f"The returned item of order {self.inp.order.order_id} arrived. Ship the {what} before "
                f"{fmt(deadline)} (Europe/Paris), or declare exchange and repair impossible.")
        await self._notify_seller("outbound-asked", "outbound.requested", f"Ship the {what}", body)

        async def remind():
            await self._notify_seller("outbound-reminder", "outbound.reminder", f"Reminder: ship the {what}", body)
            await self._record("reminder_sent", {"to": "seller", "deadline": self.deadline.at.isoformat()})

        def acted() -> bool:
            return self._outbound is not None or self._impossible is not None or self._stop is not None

        if not await self.deadline.wait(acted, reminder_before=policy.reminder_before, remind=remind):
            await self._escalate(f"seller did not ship the {what} in time")
            await workflow.wait_condition(acted)
        self._raise_if_stopped()
        if self._impossible is not None:
            await self._escalate(f"seller declared exchange and repair impossible: {self._impossible.note or ''}")
            return await self._care_takes_over()
        out = self._outbound
        self.state.tracking_numbers.append(out.tracking_number)
        await self._transition(Stage.outbound_in_transit, "outbound_shipped", waiting_for="carrier",
                               detail={"carrier": out.carrier, "tracking_number": out.tracking_number})
        await self._notify_customer("outbound-shipped", f"Your {what} is on its way",
                                    f"Carrier {out.carrier}, tracking number {out.tracking_number}.")
        await workflow.wait_condition(lambda: self._outbound_delivered)
        await self._close(Outcome.exchanged if d == ClaimDecision.exchange else Outcome.repaired,
                          f"The {what} was delivered.")

    # ================================================================ money
    async def _refund_in_full_and_close(self, why: str, received_at: datetime | None = None) -> None:
        """Total refund to the card (items + original delivery fee); a card the gateway refuses for good
        falls back to the wallet."""
        total = self.inp.order.total_cents
        result = await self._refund(total, why, require_activation=received_at is not None, received_at=received_at)
        if result.settled:
            return await self._close(Outcome.refunded, why)
        if result.failed_reason in CARD_CLOSED_REASONS or (result.failed_reason or "").startswith("gateway refused"):
            await self._credit_wallet("card-fallback", total,
                                      f"card refund refused ({result.failed_reason}): credited to your wallet")
            return await self._close(Outcome.refunded_to_wallet, (
                f"Your card could not be refunded ({result.failed_reason}), so {euros(total, self.state.currency)} "
                "was credited to your wallet. You can transfer it to your bank account at any time."))
        await self._escalate(f"card refund failed: {result.failed_reason}")
        await self._care_takes_over()

    async def _refund(self, cents: int, why: str, *, require_activation: bool = False,
                      received_at: datetime | None = None) -> RefundOutcome:
        order = self.inp.order
        self.state.refund_cents = cents
        child_id = f"{self.inp.case_id}-refund-{self._children + 1}"
        req = RefundRequest(
            idempotency_key=f"{self.inp.case_id}:refund:{self._children + 1}", case_id=self.inp.case_id,
            workflow_id=child_id, order_id=order.order_id, customer_id=order.customer_id,
            payment_intent=order.payment_intent, amount=Money(cents=cents, currency=order.currency), reason=why,
        )
        result: RefundOutcome = await self._run_child(
            RefundWorkflow.run,
            RefundChildInput(refund=req, policy=self.inp.policy, parent_workflow_id=workflow.info().workflow_id,
                             seller_id=order.seller_id, require_activation=require_activation,
                             received_at=received_at),
            "refund", f"Refund {euros(cents, order.currency)} · case {self.inp.case_id}")
        if result.settled:
            self.state.refunded_cents += cents
        return result

    async def _partial_refund_and_close(self, cents: int, reason: str | None) -> None:
        """The customer keeps the item; the partial amount goes to the wallet at once."""
        money = euros(cents, self.state.currency)
        await self._credit_wallet("partial-refund", cents, reason or "partial refund agreed by the seller")
        await self._close(Outcome.partially_refunded,
                          f"You keep the item and {money} was credited to your wallet. {reason or ''}".strip())

    async def _credit_wallet(self, key: str, cents: int, reason: str) -> None:
        order = self.inp.order
        await workflow.execute_activity_method(
            WalletActivities.credit_wallet,
            WalletCredit(idempotency_key=f"{self.inp.case_id}:{key}", customer_id=order.customer_id,
                         case_id=self.inp.case_id, order_id=order.order_id,
                         amount=Money(cents=cents, currency=order.currency), reason=reason),
            summary=f"wallet credit {euros(cents, order.currency)}", **RECORD_ACTIVITY)
        self.state.wallet_credited_cents += cents
        await self._record("wallet_credited", {"amount_cents": cents, "reason": reason})

    # ================================================================ children
    async def _run_child(self, run_fn, arg, name: str, summary: str):
        """Starts a child and applies its stage reports until it ends. A stop (withdrawal, care close)
        cancels it and raises CaseStopped."""
        self._children += 1
        self._reports.clear()
        handle = await workflow.start_child_workflow(
            run_fn, arg, id=f"{self.inp.case_id}-{name}-{self._children}" if name == "refund"
            else f"{self.inp.case_id}-{name}", static_summary=summary)
        self._child = handle
        try:
            while True:
                await workflow.wait_condition(lambda: bool(self._reports) or handle.done() or self._stop is not None)
                while self._reports:
                    await self._apply_report(self._reports.pop(0))
                if self._stop is not None and not handle.done():
                    handle.cancel()
                    try:
                        await handle
                    except ChildWorkflowError:
                        pass
                    raise CaseStopped()
                if handle.done():
                    while self._reports:  # reports sent just before the child ended
                        await self._apply_report(self._reports.pop(0))
                    return handle.result()
        finally:
            self._child = None
            self._child_owns_deadline = False

    @workflow.signal(name=REPORT_SIGNAL)
    def child_report(self, report: StageReport) -> None:
        self._reports.append(report)

    async def _apply_report(self, r: StageReport) -> None:
        if "tracking_number" in r.detail and r.detail["tracking_number"] not in self.state.tracking_numbers:
            self.state.tracking_numbers.append(r.detail["tracking_number"])
        if r.detail.get("label_url"):
            self.state.return_label_url = r.detail["label_url"]
        if r.stage is not None:
            self._child_owns_deadline = r.deadline is not None
            await self._transition(r.stage, r.event, waiting_for=r.waiting_for, deadline=r.deadline,
                                   deadline_name=r.deadline_name, detail=r.detail)
        else:
            if r.waiting_for != "nobody":
                self.state.waiting_for = r.waiting_for
            await self._record(r.event, r.detail)
        if r.escalate:
            await self._escalate(r.escalate)

    async def _forward(self, signal, arg=None) -> None:
        if self._child is None:
            raise ApplicationError("no step is waiting for this", {"stage": self.state.stage.value}, type=WRONG_STAGE)
        try:
            await (self._child.signal(signal) if arg is None else self._child.signal(signal, arg))
        except FailureError:  # the child ended between the validator and the signal
            raise ApplicationError("that step has just ended", {"stage": self.state.stage.value}, type=WRONG_STAGE)

    # ================================================================ updates
    async def _act(self, name: str, stage: Stage, apply) -> ActionAnswer:
        """Runs an accepted action and answers once the case has left the stage it was taken in."""
        self._acting.add(name)
        try:
            await apply()
            await workflow.wait_condition(lambda: self.state.stage != stage)
            return self._answer()
        finally:
            self._acting.discard(name)

    @workflow.update
    async def decide(self, req: DecisionRequest) -> ActionAnswer:
        async def apply():
            self._decision = req
        return await self._act("decide", Stage.awaiting_seller_decision, apply)

    @decide.validator
    def _validate_decide(self, req: DecisionRequest) -> None:
        self._check(req.actor, {Role.seller}, {Stage.awaiting_seller_decision}, "decide")
        if self._decision is not None:
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
    async def issue_return_label(self, req: LabelRequest) -> ActionAnswer:
        return await self._act("label", Stage.awaiting_return_label,
                               lambda: self._forward(ReturnShipmentWorkflow.label_issued, req))

    @issue_return_label.validator
    def _validate_label(self, req: LabelRequest) -> None:
        self._check(req.actor, {Role.seller}, {Stage.awaiting_return_label}, "label")

    @workflow.update
    async def report_label_missing(self, req: SimpleAction) -> ActionAnswer:
        await self._forward(ReturnShipmentWorkflow.label_missing)
        return self._answer()

    @report_label_missing.validator
    def _validate_label_missing(self, req: SimpleAction) -> None:
        self._check(req.actor, {Role.customer}, {Stage.awaiting_return_label})

    @workflow.update
    async def report_shipment(self, req: ShipmentRequest) -> ActionAnswer:
        return await self._act("shipment", Stage.awaiting_shipment,
                               lambda: self._forward(ReturnShipmentWorkflow.shipped, req))

    @report_shipment.validator
    def _validate_shipment(self, req: ShipmentRequest) -> None:
        self._check(req.actor, {Role.customer}, {Stage.awaiting_shipment}, "shipment")

    @workflow.update
    async def confirm_receipt(self, req: SimpleAction) -> ActionAnswer:
        return await self._act("receipt", Stage.in_transit,
                               lambda: self._forward(ReturnShipmentWorkflow.receipt_confirmed))

    @confirm_receipt.validator
    def _validate_receipt(self, req: SimpleAction) -> None:
        self._check(req.actor, {Role.seller}, {Stage.in_transit}, "receipt")

    @workflow.update
    async def activate_refund(self, req: SimpleAction) -> ActionAnswer:
        return await self._act("activation", Stage.awaiting_refund_activation,
                               lambda: self._forward(RefundWorkflow.activate))

    @activate_refund.validator
    def _validate_activation(self, req: SimpleAction) -> None:
        self._check(req.actor, {Role.seller}, {Stage.awaiting_refund_activation}, "activation")

    @workflow.update
    async def ship_outbound(self, req: ShipmentRequest) -> ActionAnswer:
        async def apply():
            self._outbound = req
        return await self._act("outbound", Stage.awaiting_outbound_shipment, apply)

    @ship_outbound.validator
    def _validate_outbound(self, req: ShipmentRequest) -> None:
        self._check(req.actor, {Role.seller}, {Stage.awaiting_outbound_shipment}, "outbound")

    @workflow.update
    async def declare_impossible(self, req: SimpleAction) -> ActionAnswer:
        async def apply():
            self._impossible = req
        return await self._act("outbound", Stage.awaiting_outbound_shipment, apply)

    @declare_impossible.validator
    def _validate_impossible(self, req: SimpleAction) -> None:
        self._check(req.actor, {Role.seller}, {Stage.awaiting_outbound_shipment}, "outbound")

    @workflow.update
    async def withdraw(self, req: SimpleAction) -> ActionAnswer:
        async def apply():
            self._stop = (Outcome.withdrawn, f"The customer withdrew the request. {req.note or ''}".strip())
        return await self._act("stop", self.state.stage, apply)

    @withdraw.validator
    def _validate_withdraw(self, req: SimpleAction) -> None:
        self._check(req.actor, {Role.customer}, STOPPABLE, "stop")

    @workflow.update
    async def care_resolve(self, req: CareRequest) -> ActionAnswer:
        if req.resolution == CareResolution.extend_deadline:
            hours = req.extend_hours
            if self._child_owns_deadline:
                await self._child.signal("extend_deadline", hours)
            else:
                self.deadline.extend(timedelta(hours=hours))
            self.state.deadline = self.state.deadline + timedelta(hours=hours)
            self._publish()
            await self._record("deadline_extended", {"by": req.actor.id, "reason": req.reason, "hours": hours,
                                                     "deadline": self.state.deadline.isoformat()})
            return self._answer()
        if req.resolution == CareResolution.close:
            async def stop():
                self._stop = (Outcome.closed_by_care, req.reason)
            return await self._act("stop", self.state.stage, stop)
        # force_refund
        if self.state.stage == Stage.awaiting_refund_activation:
            await self._record("refund_forced", {"by": req.actor.id, "reason": req.reason})
            return await self._act("activation", Stage.awaiting_refund_activation,
                                   lambda: self._forward(RefundWorkflow.activate))

        async def force():
            self._care = req
        return await self._act("care", Stage.awaiting_care, force)

    @care_resolve.validator
    def _validate_care(self, req: CareRequest) -> None:
        open_stages = {s for s in Stage if s != Stage.closed}
        if req.resolution == CareResolution.extend_deadline:
            if req.extend_hours is None:
                raise ApplicationError("extend_hours is required", {"field": "extend_hours"}, type=INVALID)
            self._check(req.actor, {Role.agent}, open_stages)
            if self.state.deadline is None:
                raise ApplicationError("this stage has no deadline", {"stage": self.state.stage.value},
                                       type=WRONG_STAGE)
        elif req.resolution == CareResolution.close:
            self._check(req.actor, {Role.agent}, STOPPABLE, "stop")
        else:
            self._check(req.actor, {Role.agent}, {Stage.awaiting_care, Stage.awaiting_refund_activation}, "care")

    @workflow.signal
    async def carrier_event(self, ev: CarrierEvent) -> None:
        """Parcel events from the carrier webhook (duplicates and unknown parcels are ignored)."""
        if self.state is None or ev.tracking_number not in self.state.tracking_numbers:
            return
        if self._outbound is not None and ev.tracking_number == self._outbound.tracking_number:
            self._outbound_delivered = self._outbound_delivered or ev.status == "delivered"
        elif self.state.stage == Stage.in_transit and self._child is not None:
            try:
                await self._child.signal(ReturnShipmentWorkflow.carrier_event, ev)
            except FailureError:  # the return just ended (a duplicate "delivered"): nothing to do
                pass

    @workflow.query
    def get_state(self) -> CaseState:
        return self.state

    def _check(self, actor: Actor, roles: set[Role], stages: set[Stage], action: str | None = None) -> None:
        if self.state is None:
            raise ApplicationError("the case is starting", {"stage": Stage.opening.value}, type=WRONG_STAGE)
        if actor.role not in roles:
            raise ApplicationError(f"a {actor.role.value} may not do this", type=FORBIDDEN)
        if actor.role == Role.seller and actor.id != self.state.seller_id:
            raise ApplicationError("this case is on another seller's order", type=FORBIDDEN)
        if actor.role == Role.customer and actor.id != self.state.customer_id:
            raise ApplicationError("this case is on another customer's order", type=FORBIDDEN)
        if self.state.stage not in stages or self._stop is not None:
            raise ApplicationError(f"not possible in stage {self.state.stage.value}",
                                   {"stage": self.state.stage.value}, type=WRONG_STAGE)
        if action is not None and action in self._acting:
            raise ApplicationError("this action is already being applied", {"stage": self.state.stage.value},
                                   type=WRONG_STAGE)

    def _answer(self) -> ActionAnswer:
        return ActionAnswer(case_id=self.state.case_id, stage=self.state.stage, outcome=self.state.outcome)

    def _raise_if_stopped(self) -> None:
        if self._stop is not None:
            raise CaseStopped()

    # ================================================================ transitions and records
    async def _transition(self, stage: Stage, event: str, *, waiting_for: str = "nobody",
                          deadline: datetime | None = None, deadline_name: str | None = None,
                          detail: dict | None = None) -> None:
        s = self.state
        s.stage, s.waiting_for, s.deadline = stage, waiting_for, deadline
        if deadline is not None and deadline_name:
            s.deadlines[deadline_name] = deadline
        self._publish()
        await self._record(event, detail or {})

    def _publish(self) -> None:
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
        ])
        lines = [f"**{KIND_TITLES[s.kind]}** · order `{s.order_id}` · seller `{s.seller_id}`",
                 f"- stage: **{s.stage.value}**" + (f" ({s.outcome.value})" if s.outcome else ""),
                 f"- waiting for: {s.waiting_for}"]
        if s.deadline:
            lines.append(f"- deadline: {fmt(s.deadline)} Europe/Paris")
        if s.escalated:
            lines.append(f"- escalated: {s.escalation_reason}")
        if s.refund_cents:
            lines.append(f"- refund: {euros(s.refund_cents, s.currency)} (settled {euros(s.refunded_cents, s.currency)})")
        workflow.set_current_details("\n".join(lines))

    async def _record(self, event: str, detail: dict | None = None) -> None:
        self._seq += 1
        ev = TimelineEvent(case_id=self.inp.case_id, seq=self._seq, at=workflow.now(), event=event,
                           detail=detail or {}, state=self.state.model_copy(deep=True))
        await workflow.execute_activity_method(CaseActivities.record_case_event, ev, summary=event,
                                               **RECORD_ACTIVITY)

    async def _escalate(self, reason: str) -> None:
        self.state.escalated = True
        self.state.escalation_reason = reason
        self._publish()
        await self._record("escalated", {"reason": reason})
        await self._notify_care(f"escalated-{self._seq}", f"Case {self.inp.case_id} escalated", reason)

    async def _close(self, outcome: Outcome, reason: str) -> None:
        self.state.outcome = outcome
        self.state.closed_reason = reason
        self.deadline.set(None)
        await self._transition(Stage.closed, "case_closed", detail={"outcome": outcome.value, "reason": reason})
        await self._notify_customer("closed", f"Your case {self.inp.case_id} is closed ({outcome.value})", reason)
        await self._notify_seller("closed", "case.closed", f"Case {self.inp.case_id} closed ({outcome.value})", reason)

    async def _set_order_status(self, expected: list[OrderStatus], new: OrderStatus):
        return await workflow.execute_activity_method(
            CaseActivities.set_order_status,
            OrderStatusChange(order_id=self.inp.order.order_id, expected=expected, new=new),
            summary=f"order → {new.value}", **RECORD_ACTIVITY)

    # ================================================================ messages
    async def _send(self, key: str, role: Role, recipient: str, subject: str, body: str, event: str | None) -> None:
        if not await send(self.inp.case_id, key, role, recipient, subject, body, event):
            await self._record("notification_failed", {"message_key": f"{self.inp.case_id}:{key}"})

    async def _notify_customer(self, key: str, subject: str, body: str) -> None:
        await self._send(key, Role.customer, self.state.customer_id, subject, body, None)

    async def _notify_seller(self, key: str, event: str, subject: str, body: str) -> None:
        await self._send(key, Role.seller, self.state.seller_id, subject, body, event)

    async def _notify_care(self, key: str, subject: str, body: str) -> None:
        await self._send(key, Role.agent, "care", subject, body, "case.escalated")
