"""The custom search attributes operators filter cases by in the Temporal UI.

Registered on the dev server at start (devstack, tests) and on a real cluster by the setup step.
"""
from temporalio.common import SearchAttributeKey

CASE_KIND = SearchAttributeKey.for_keyword("CaseKind")
CASE_STAGE = SearchAttributeKey.for_keyword("CaseStage")
ORDER_ID = SearchAttributeKey.for_keyword("OrderId")
SELLER_ID = SearchAttributeKey.for_keyword("SellerId")
CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")
NEXT_DEADLINE = SearchAttributeKey.for_datetime("NextDeadline")
ESCALATED = SearchAttributeKey.for_bool("Escalated")
REFUND_CENTS = SearchAttributeKey.for_int("RefundAmountCents")
LEGAL_REFUND_DUE = SearchAttributeKey.for_datetime("LegalRefundDue")  # withdrawals, once known (L221-24)

ALL = [CASE_KIND, CASE_STAGE, ORDER_ID, SELLER_ID, CUSTOMER_ID, NEXT_DEADLINE, ESCALATED, REFUND_CENTS,
       LEGAL_REFUND_DUE]

# Names and CLI types for `temporal server start-dev --search-attribute Name=Type` and
# `temporal operator search-attribute create`.
CLI_TYPES = {
    "KEYWORD": "Keyword", "DATETIME": "Datetime", "BOOL": "Bool", "INT": "Int",
}


def cli_definitions() -> list[str]:
    return [f"{key.name}={CLI_TYPES[key.indexed_value_type.name]}" for key in ALL]
