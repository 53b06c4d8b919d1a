"""Personal data (issue 16): Temporal stores ciphertext only, PostgreSQL stores the bank details sealed.

The history test reads the raw histories of the server through a client WITHOUT the codec after a
payout and a case of each kind, and looks for the customer's email, name, free texts, the IBAN and
its digits; decoded with the codec the same histories read back whole."""
from __future__ import annotations

import base64
import json
from datetime import timedelta

import httpx
import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload
from temporalio.client import Client

from codec import ENCODING, KEY_ID, CodecError, EncryptionCodec, KeyRing, data_converter, generate_keys
from domain.models import CaseKind, DefectCategory, GatewayEvent, PayoutInput, PayoutStage, SimpleAction, Stage
from tests.helpers.cases import (
    customer,
    deliver,
    issue_label,
    open_case,
    settle_refund,
    ship,
    start_case,
    wait_stage,
)
from tests.helpers.data import make_order
from tests.helpers.keys import OTHER_TEST_CODEC_KEYS, TEST_CODEC_KEYS, TEST_KEY_ID
from tests.test_wallet import IBAN_FR, credit, payout, wait_payout
from workflows.case import CaseWorkflow
from workflows.payout import PayoutWorkflow


# ----------------------------------------------------------------------------- the codec itself
async def test_payloads_round_trip_and_keys_rotate():
    old = EncryptionCodec(KeyRing.parse(TEST_CODEC_KEYS))
    clear = Payload(metadata={"encoding": b"json/plain"}, data=b'{"name": "Alice"}')
    [sealed] = await old.encode([clear])
    assert sealed.metadata["encoding"] == ENCODING and sealed.metadata[KEY_ID] == TEST_KEY_ID.encode()
    assert b"Alice" not in sealed.SerializeToString()
    assert (await old.encode([clear]))[0].data != sealed.data  # a fresh nonce each time

    # Rotation: a new key first encrypts, the old one still decrypts what it sealed.
    rotated = EncryptionCodec(KeyRing.parse(f"{OTHER_TEST_CODEC_KEYS},{TEST_CODEC_KEYS}"))
    assert await rotated.decode([sealed]) == [clear]
    [new] = await rotated.encode([clear])
    assert new.metadata[KEY_ID] == b"test-only-2"
    with pytest.raises(CodecError, match="unknown encryption key id"):
        await old.decode([new])  # the old ring alone does not know the new key

    # Clear payloads (histories recorded before the codec) pass through unchanged.
    assert await old.decode([clear]) == [clear]


async def test_tampered_or_foreign_ciphertext_is_refused():
    ring = KeyRing.parse(TEST_CODEC_KEYS)
    codec = EncryptionCodec(ring)
    [sealed] = await codec.encode([Payload(metadata={"encoding": b"json/plain"}, data=b"1")])
    tampered = Payload(metadata=dict(sealed.metadata), data=sealed.data[:-1] + bytes([sealed.data[-1] ^ 1]))
    with pytest.raises(CodecError):
        await codec.decode([tampered])
    # A sealed column is bound to its column and row, and is no payload.
    column = ring.seal("FR1420041010050500013M02606", "payouts.iban:po_1")
    assert ring.open(column, "payouts.iban:po_1") == "FR1420041010050500013M02606"
    with pytest.raises(CodecError):
        ring.open(column, "payouts.iban:po_2")
    kid, _, b64 = column.removeprefix("enc:").partition(":")
    as_payload = Payload(metadata={"encoding": ENCODING, KEY_ID: kid.encode()}, data=base64.b64decode(b64))
    with pytest.raises(CodecError):
        await codec.decode([as_payload])


def test_keys_from_settings_are_checked():
    assert KeyRing.parse(generate_keys("k1") + "," + TEST_CODEC_KEYS).key_ids == ["k1", TEST_KEY_ID]
    for bad in ("", "k1:" + base64.b64encode(b"short").decode(), "k1:not base64!"):
        with pytest.raises(ValueError):
            KeyRing.parse(bad)


# ----------------------------------------------------------------------------- histories on the server
NAME = "Zélie Quarantotto"
DESCRIPTION = "Screen cracked in the box, my neighbour Bérénice saw the parcel arrive open."
NOTE = "Please call me back on +33 6 12 34 56 78 before noon."


def payloads_of(node, found: list) -> list:
    """Every Temporal Payload (JSON form) in a history but search attributes (clear by design: ids only)."""
    if isinstance(node, dict):
        if set(node) >= {"metadata", "data"} and isinstance(node["metadata"], dict):
            found.append(node)
        for key, value in node.items():
            if key != "searchAttributes":
                payloads_of(value, found)
    elif isinstance(node, list):
        for value in node:
            payloads_of(value, found)
    return found


def sdk_marker_payload(p: dict) -> bool:
    """The SDK's own marker data: workflow.patched's {"id", "deprecated"}, a local activity's
    {"seq", "attempt", "activity_id", "activity_type", ...}, in clear JSON."""
    if base64.b64decode(p["metadata"].get("encoding", "")) != b"json/plain":
        return False
    data = json.loads(base64.b64decode(p.get("data", "")))
    return isinstance(data, dict) and (set(data) == {"id", "deprecated"} or {"seq", "attempt", "activity_type"} <= set(data))


def search_attribute_payloads(node, found: list) -> list:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "searchAttributes":
                found.extend(value.get("indexedFields", {}).values())
            else:
                search_attribute_payloads(value, found)
    elif isinstance(node, list):
        for value in node:
            search_attribute_payloads(value, found)
    return found


async def test_raw_histories_hold_no_personal_data_and_decode_whole(ts_env, pool, case_worker, gateway_sandbox,
                                                                     party, task_queue):
    await pool.execute("UPDATE customers SET name = $2 WHERE customer_id = $1", party["customer_id"], NAME)
    ids = []
    # A cancellation, refunded and closed.
    order_id = await make_order(pool, party, "paid")
    h = await start_case(ts_env, pool, task_queue, order_id)
    await wait_stage(h, Stage.awaiting_bank_settlement)
    await settle_refund(ts_env, gateway_sandbox.url, h.id, f"pi_{order_id}")
    await h.result()
    ids.append(h.id)
    # A defect claim with a description, withdrawn with a note (an Update).
    h, _ = await open_case(ts_env, pool, task_queue, party, CaseKind.defect, description=DESCRIPTION)
    await wait_stage(h, Stage.awaiting_photos)
    await h.execute_update(CaseWorkflow.withdraw, SimpleAction(actor=customer(party), note=NOTE))
    ids.append(h.id)
    # A withdrawal through label, shipment (Updates) and the carrier's delivery (a signal).
    h, _ = await open_case(ts_env, pool, task_queue, party, CaseKind.withdrawal)
    await wait_stage(h, Stage.awaiting_return_label)
    await issue_label(h, party)
    await wait_stage(h, Stage.awaiting_shipment)
    await ship(h, party)
    await wait_stage(h, Stage.in_transit)
    await deliver(ts_env, h)
    await wait_stage(h, Stage.awaiting_refund_activation)
    ids.append(h.id)
    # A warranty claim, after the withdrawal period.
    delivered = await make_order(pool, party, "delivered", delivered_at=await ts_env.get_current_time() - timedelta(days=40))
    h = await start_case(ts_env, pool, task_queue, delivered, CaseKind.warranty, category=DefectCategory.battery,
                         description=DESCRIPTION)
    await wait_stage(h, Stage.awaiting_seller_decision)
    ids.append(h.id)
    # A wallet payout to an IBAN, settled.
    await credit(pool, party["customer_id"], 3000, f"{party['customer_id']}:pd")
    view, _ = await payout(ts_env, pool, task_queue, party, 2500, key="pd", bic="PSSTFRPP")
    s = await wait_payout(ts_env, view["payout_id"], PayoutStage.awaiting_bank_settlement)
    handle = ts_env.client.get_workflow_handle_for(PayoutWorkflow.run, view["payout_id"])
    await handle.signal(PayoutWorkflow.gateway_event, GatewayEvent(object_id=s.transfer_id, status="succeeded"))
    assert (await handle.result()).stage == PayoutStage.settled  # the codec's client reads the result
    ids.append(view["payout_id"])

    raw_client = Client(ts_env.client.service_client, namespace=ts_env.client.namespace)  # no codec
    codec = ts_env.client.data_converter.payload_codec
    forbidden = [party["customer_email"], party["seller_email"], "@example.com", NAME, "Zélie", "Quarantotto",
                 "Alice Martin", DESCRIPTION, "Bérénice", NOTE, "12 34 56", IBAN_FR, IBAN_FR[4:], "20041010050500013",
                 "PSSTFRPP", "Colissimo"]
    decoded_all = ""
    for wid in ids:
        raw = (await raw_client.get_workflow_handle(wid).fetch_history()).to_json()
        payloads = payloads_of(json.loads(raw), [])
        # What anyone reading the server's store sees: the history, its payloads' bytes (base64 in JSON)
        # and every search attribute's value.
        every = payloads + search_attribute_payloads(json.loads(raw), [])
        seen = raw + "".join(base64.b64decode(p.get("data", "")).decode(errors="replace") for p in every)
        leaks = [text for text in forbidden if text in seen or json.dumps(text)[1:-1] in seen]
        assert not leaks, f"{wid}: {leaks} in the raw history"
        # Every payload of ours is ciphertext; the SDK's own marker bookkeeping (a patch's id, a local
        # activity's type, attempt and times) is not ours to encode, and the leak check above covers it.
        ours = [p for p in payloads if not sdk_marker_payload(p)]
        assert ours and all(base64.b64decode(p["metadata"]["encoding"]) == ENCODING for p in ours), wid
        clear = [await codec.decode([json_format.ParseDict(p, Payload())]) for p in payloads]
        decoded = "\n".join(c[0].data.decode() for c in clear)
        decoded_all += decoded
        assert IBAN_FR not in decoded and "20041010050500013" not in decoded  # not even encrypted: never there
    # Decoded, the same histories read back whole: the inputs, the Update's note, the UI's summaries.
    for text in (DESCRIPTION, NOTE, "RET123456", "Wallet payout 25.00 EUR", "SEPA transfer 25.00 EUR", "2606"):
        assert text in decoded_all, text
    # The payout's input carries the masked IBAN only.
    first = (await ts_env.client.get_workflow_handle(view["payout_id"]).fetch_history()).events[0]
    [inp] = await data_converter(TEST_CODEC_KEYS).decode(
        first.workflow_execution_started_event_attributes.input.payloads, [PayoutInput])
    assert inp.iban_masked.endswith("2606") and set(inp.iban_masked[:-4]) == {"•"}

    # PostgreSQL: the bank details sealed, only the masked forms readable; the activity opened them.
    row = await pool.fetchrow("SELECT * FROM payouts WHERE payout_id = $1", view["payout_id"])
    assert all(row[c].startswith("enc:") for c in ("iban", "bic", "account_holder"))
    assert IBAN_FR not in str(dict(row)) and "Alice Martin" not in str(dict(row))
    assert (view["iban"], view["account_holder"]) == (row["iban_masked"], "A•••• M•••••")
    async with httpx.AsyncClient() as http:
        transfers = (await http.get(f"{gateway_sandbox.url}/_sandbox/state")).json()["transfers"]
    [sent] = [t for t in transfers if t["metadata"].get("payout_id") == view["payout_id"]]
    assert (sent["iban"], sent["account_holder"], sent["bic"]) == (IBAN_FR, "Alice Martin", "PSSTFRPP")
