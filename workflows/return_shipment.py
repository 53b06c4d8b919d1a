"""Return shipment child workflow, reused by defect claims, withdrawals and warranty claims.

awaiting_return_label (seller, 1 business day; "label missing" re-notifies, the second report escalates;
deadline missed → escalation, the wait goes on) → awaiting_shipment (customer, 14 days, reminder;
missed → expired) → in_transit (carrier events) → received (carrier "delivered" or seller's receipt).
Actions arrive as signals from the case, which validated them; stages are reported back to the case.
"""
from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from domain.models import CarrierEvent, LabelRequest, ReturnInput, ReturnOutcome, Role, ShipmentRequest, Stage
    from workflows.common import ChildReporter, Deadline, fmt, send


@workflow.defn
class ReturnShipmentWorkflow:
    def __init__(self) -> None:
        self.label: LabelRequest | None = None
        self.shipment: ShipmentRequest | None = None
        self.received_by_seller = False
        self.carrier_delivered: CarrierEvent | None = None
        self.label_missing_reports = 0
        self._handled_missing_reports = 0
        self.deadline = Deadline()

    @workflow.signal
    def label_issued(self, req: LabelRequest) -> None:
        self.label = self.label or req

    @workflow.signal
    def label_missing(self) -> None:
        self.label_missing_reports += 1

    @workflow.signal
    def shipped(self, req: ShipmentRequest) -> None:
        self.shipment = self.shipment or req

    @workflow.signal
    def receipt_confirmed(self) -> None:
        self.received_by_seller = True

    @workflow.signal
    def carrier_event(self, ev: CarrierEvent) -> None:
        if ev.status == "delivered" and self.carrier_delivered is None:
            self.carrier_delivered = ev

    @workflow.signal
    def extend_deadline(self, hours: int) -> None:
        if self.deadline.at is not None:
            self.deadline.extend(timedelta(hours=hours))

    @workflow.run
    async def run(self, inp: ReturnInput) -> ReturnOutcome:
        self.inp = inp
        self.case = ChildReporter(inp.parent_workflow_id)
        await self._await_label()
        if not await self._await_shipment():
            return ReturnOutcome(received=False, expired=True)
        await self.case.report("return_shipped", stage=Stage.in_transit, waiting_for="carrier",
                               detail={"carrier": self.shipment.carrier,
                                       "tracking_number": self.shipment.tracking_number})
        await workflow.wait_condition(lambda: self.received_by_seller or self.carrier_delivered is not None)
        how = "carrier" if self.carrier_delivered is not None and not self.received_by_seller else "seller"
        received_at = workflow.now()
        await self.case.report("return_received", detail={"confirmed_by": how})
        return ReturnOutcome(received=True, received_at=received_at, tracking_number=self.shipment.tracking_number)

    # -------------------------------------------------------------- label
    async def _await_label(self) -> None:
        inp = self.inp
        self.deadline.set(inp.policy.return_label_deadline(workflow.now()))
        cost = "at your cost (the reason is a defect)" if inp.seller_pays_label else "at the customer's cost"
        await self.case.report("return_label_requested", stage=Stage.awaiting_return_label, waiting_for="seller",
                               deadline=self.deadline.at, deadline_name="return_label",
                               detail={"seller_pays_label": inp.seller_pays_label})
        ask = (f"Issue a prepaid return label {cost} for order {inp.order_id} before "
               f"{fmt(self.deadline.at)} (Europe/Paris).")
        await send(inp.case_id, "label-asked", Role.seller, inp.seller_id,
                   f"Return label needed for order {inp.order_id}", ask, "return.label_requested")

        reminded = False

        async def remind():
            nonlocal reminded
            reminded = True
            await send(inp.case_id, "label-reminder", Role.seller, inp.seller_id,
                       f"Reminder: return label for order {inp.order_id}", ask, "return.label_reminder")
            await self.case.report("reminder_sent", detail={"to": "seller", "deadline": self.deadline.at.isoformat()})

        def new_missing_report() -> bool:
            return self.label_missing_reports > self._handled_missing_reports

        def label_or_report() -> bool:
            return self.label is not None or new_missing_report()

        escalated = False
        while self.label is None:
            if workflow.now() < self.deadline.at:
                on_time = await self.deadline.wait(label_or_report, reminder_before=inp.policy.reminder_before,
                                                   remind=None if reminded else remind)
                if not on_time and not escalated:
                    escalated = True
                    await self.case.report("return_label_overdue", waiting_for="seller",
                                           escalate="seller did not issue the return label in time")
            else:  # overdue: care knows; keep waiting for the label or the customer's reports
                await workflow.wait_condition(label_or_report)
            if self.label is None and new_missing_report():
                self._handled_missing_reports = self.label_missing_reports
                escalated = await self._on_label_missing(ask, escalated)
        await self.case.report("return_label_issued", detail={
            "carrier": self.label.carrier, "tracking_number": self.label.tracking_number, "label_url": self.label.label_url})

    async def _on_label_missing(self, ask: str, already_escalated: bool) -> bool:
        """Re-notifies the seller; the second report escalates. Returns whether the case is escalated."""
        inp, n = self.inp, self.label_missing_reports
        await send(inp.case_id, f"label-missing-{n}", Role.seller, inp.seller_id,
                   f"The customer has no return label for order {inp.order_id}", ask, "return.label_missing")
        escalate = None
        if n >= inp.policy.label_missing_reports_before_escalation and not already_escalated:
            escalate = f"customer reported the return label missing {n} times"
        await self.case.report("label_missing_reported", detail={"reports": n}, escalate=escalate,
                               waiting_for="seller")
        return already_escalated or escalate is not None

    # -------------------------------------------------------------- shipment
    async def _await_shipment(self) -> bool:
        inp = self.inp
        self.deadline.set(inp.policy.shipment_deadline(workflow.now()))
        await self.case.report("awaiting_customer_shipment", stage=Stage.awaiting_shipment, waiting_for="customer",
                               deadline=self.deadline.at, deadline_name="customer_shipment")
        body = (f"Your prepaid return label ({self.label.carrier}, {self.label.tracking_number}): "
                f"{self.label.label_url}\nPlease ship the item before {fmt(self.deadline.at)} (Europe/Paris) "
                "and tell us the tracking number.")
        await send(inp.case_id, "label-to-customer", Role.customer, inp.customer_id,
                   f"Your return label for order {inp.order_id}", body)

        async def remind():
            await send(inp.case_id, "ship-reminder", Role.customer, inp.customer_id,
                       f"Reminder: ship your return for order {inp.order_id}", body)
            await self.case.report("reminder_sent", detail={"to": "customer", "deadline": self.deadline.at.isoformat()})

        shipped = await self.deadline.wait(lambda: self.shipment is not None,
                                           reminder_before=inp.policy.customer_reminder_before, remind=remind)
        if not shipped:
            await send(inp.case_id, "return-expired", Role.customer, inp.customer_id,
                       f"Your return for order {inp.order_id} has expired",
                       "We did not receive a shipment within the return period, so the return request has "
                       "expired. Contact customer care if you shipped it.")
            await self.case.report("return_expired", detail={"deadline": self.deadline.at.isoformat()})
        return shipped
