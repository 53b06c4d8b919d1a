"""Wallet payout workflow: the amount is already held (by the API, under a lock) when it starts.

bank transfer (exactly once) → awaiting_bank_settlement for 5 business days (signed gateway event) →
settled: debit the hold; rejected: release the hold, the customer is told; no event by the deadline:
the transfer is looked up, then (still pending) care is alerted, again at each care deadline (2 business
days), and it is looked up again every day until the bank answers.
"""
from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.wallet import TRANSFER_REJECTED, PayoutActivities
    from domain.models import (
        GatewayEvent,
        PayoutInput,
        PayoutStage,
        PayoutState,
        PayoutStep,
        Role,
        TransferRequest,
    )
    from workflows import search_attributes as sa
    from workflows.common import Deadline, euros, fmt, send
    from workflows.options import MONEY_ACTIVITY, RECORD_ACTIVITY


@workflow.defn
class PayoutWorkflow:
    def __init__(self) -> None:
        self.state: PayoutState | None = None
        self._event: GatewayEvent | None = None
        self.deadline = Deadline()

    @workflow.signal
    def gateway_event(self, event: GatewayEvent) -> None:
        if self._event is None:
            self._event = event

    @workflow.query
    def get_state(self) -> PayoutState:
        return self.state

    @workflow.run
    async def run(self, inp: PayoutInput) -> PayoutState:
        self.inp = inp
        money = euros(inp.amount.cents, inp.amount.currency)
        self.state = PayoutState(payout_id=inp.payout_id, customer_id=inp.customer_id, amount=inp.amount,
                                 iban_masked=inp.iban_masked)
        await self._step(PayoutStage.sending)
        try:
            transfer_id = await workflow.execute_activity_method(
                PayoutActivities.send_transfer,
                TransferRequest(idempotency_key=f"{inp.payout_id}:transfer", payout_id=inp.payout_id,
                                workflow_id=workflow.info().workflow_id, amount=inp.amount),
                summary=f"SEPA transfer {money}", **MONEY_ACTIVITY)
        except ActivityError as e:
            if isinstance(e.cause, ApplicationError) and e.cause.type == TRANSFER_REJECTED:
                return await self._rejected(e.cause.message)
            raise
        self.state.transfer_id = transfer_id
        self.deadline.set(inp.policy.payout_settlement_deadline(workflow.now()))
        self.state.expected_by = self.deadline.at
        await self._step(PayoutStage.awaiting_bank_settlement)
        await send(inp.payout_id, "sent", Role.customer, inp.customer_id, f"Your transfer of {money} is on its way",
                   f"{money} is on its way to your account {self.state.iban_masked}; it should arrive by "
                   f"{fmt(self.deadline.at)}.")
        async def reconcile() -> None:
            """The settlement event is late: ask the bank-transfer port how the transfer stands."""
            status = await workflow.execute_activity_method(PayoutActivities.lookup_transfer, transfer_id,
                                                            summary="transfer look-up", **MONEY_ACTIVITY)
            if status in ("settled", "rejected") and self._event is None:
                self._event = GatewayEvent(object_id=transfer_id, status="succeeded" if status == "settled" else "failed",
                                           failure_reason=None if status == "settled" else "rejected by the bank")

        overdue = 0
        every = timedelta(hours=inp.policy.reconcile_every_hours)
        while not await self.deadline.wait(lambda: self._event is not None, every=every if overdue else None,
                                           on_every=reconcile):
            await reconcile()
            if self._event is not None:
                break
            # Overdue: care is told, then again at each care deadline, so the payout never waits on nobody.
            overdue += 1
            self.state.escalated = True
            await send(inp.payout_id, "overdue" if overdue == 1 else f"overdue-{overdue}", Role.agent, "care",
                       f"Payout {inp.payout_id} not settled",
                       f"The transfer {transfer_id} of {money} to {self.state.iban_masked} has not been settled "
                       f"by the bank by {fmt(self.deadline.at)}.", "payout.overdue")
            self.deadline.set(inp.policy.care_deadline(workflow.now()))
            self._publish()
        if self._event.status == "succeeded":
            await self._step(PayoutStage.settled)
            return self.state
        return await self._rejected(self._event.failure_reason or "rejected by the bank")

    async def _rejected(self, reason: str) -> PayoutState:
        inp = self.inp
        self.state.failure_reason = reason
        await self._step(PayoutStage.rejected)
        money = euros(inp.amount.cents, inp.amount.currency)
        await send(inp.payout_id, "rejected", Role.customer, inp.customer_id, f"Your transfer of {money} was rejected",
                   f"The bank rejected the transfer to {self.state.iban_masked} ({reason}). The {money} are back "
                   "in your wallet.")
        return self.state

    async def _step(self, stage: PayoutStage) -> None:
        s = self.state
        s.stage = stage
        self._publish()
        await workflow.execute_activity_method(
            PayoutActivities.record_payout_step,
            PayoutStep(payout_id=s.payout_id, customer_id=s.customer_id, stage=stage, amount=s.amount,
                       transfer_id=s.transfer_id, expected_by=s.expected_by, failure_reason=s.failure_reason),
            summary=f"payout → {stage.value}", **RECORD_ACTIVITY)

    def _publish(self) -> None:
        s = self.state
        workflow.upsert_search_attributes([
            sa.CASE_KIND.value_set("payout"),
            sa.CASE_STAGE.value_set(s.stage.value),
            sa.CUSTOMER_ID.value_set(s.customer_id),
            sa.ESCALATED.value_set(s.escalated),
            sa.REFUND_CENTS.value_set(s.amount.cents),
            # The bank's date, then (overdue) care's deadline.
            sa.NEXT_DEADLINE.value_set(self.deadline.at) if self.deadline.at and s.stage == PayoutStage.awaiting_bank_settlement
            else sa.NEXT_DEADLINE.value_unset(),
        ])
        workflow.set_current_details(
            f"**Wallet payout** {euros(s.amount.cents, s.amount.currency)} → {s.iban_masked}\n"
            f"- stage: **{s.stage.value}**\n- expected by: {fmt(s.expected_by)} Europe/Paris"
            + ("\n- escalated: settlement overdue" if s.escalated else ""))
