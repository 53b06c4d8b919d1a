"""The codec server under /codec: only care agents decode, CORS for the UI's origin, a session for the
dev UI, and no 5xx whatever the body (hypothesis)."""
from __future__ import annotations

import asyncio
import base64

import httpx
import pytest
import requests
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.api.common.v1 import Payload

from codec import data_converter
from starter.api import create_app
from starter.auth import create_token
from tests.helpers.data import make_party
from tests.helpers.keys import OTHER_TEST_CODEC_KEYS
from tests.helpers.servers import ServedApp

UI = "http://127.0.0.1:8233"


@pytest.fixture(scope="module")
async def codec_api(pool, test_settings):
    served = await ServedApp(create_app(test_settings, temporal_client=object()), name="API (codec)").start()
    party = await make_party(pool)
    async with pool.acquire() as conn:
        agent = await create_token(conn, "agent", "care_codec")
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as http:
        http.tokens = {"agent": agent, "customer": party["customer_token"], "seller": party["seller_token"]}
        yield http
    await served.stop()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


async def sealed(value) -> dict:
    """A payload as the worker stores it (pydantic JSON, encrypted), in the UI's JSON form."""
    [p] = await data_converter().encode([value])
    return json_format.MessageToDict(p)


async def test_only_a_care_agent_decodes(codec_api):
    body = {"payloads": [await sealed({"description": "my screen, my name"})]}
    for path in ("/codec/decode", "/codec/encode"):
        assert (await codec_api.post(path, json=body)).status_code == 401
        assert (await codec_api.post(path, json=body, headers=bearer("not-a-token"))).status_code == 401
        for role in ("customer", "seller"):
            r = await codec_api.post(path, json=body, headers=bearer(codec_api.tokens[role]))
            assert r.status_code == 403, r.text
        r = await codec_api.post(path, json=body, headers={**bearer(codec_api.tokens["agent"]),
                                                           "X-Namespace": "another"})
        assert r.status_code == 403 and "namespace" in r.text

    r = await codec_api.post("/codec/decode", json=body, headers={**bearer(codec_api.tokens["agent"]),
                                                                  "X-Namespace": "default"})
    assert r.status_code == 200, r.text
    [clear] = r.json()["payloads"]
    assert base64.b64decode(clear["metadata"]["encoding"]) == b"json/plain"
    assert base64.b64decode(clear["data"]) == b'{"description":"my screen, my name"}'
    # Encode, then decode: the same payload back; a payload sealed with an unknown key is a 422.
    r = await codec_api.post("/codec/encode", json={"payloads": [clear]}, headers=bearer(codec_api.tokens["agent"]))
    assert r.status_code == 200 and r.json()["payloads"][0]["data"] != clear["data"]
    r = await codec_api.post("/codec/decode", json=r.json(), headers=bearer(codec_api.tokens["agent"]))
    assert r.json()["payloads"] == [clear]
    [foreign] = await data_converter(OTHER_TEST_CODEC_KEYS).encode(["x"])
    r = await codec_api.post("/codec/decode", json={"payloads": [json_format.MessageToDict(foreign)]},
                             headers=bearer(codec_api.tokens["agent"]))
    assert r.status_code == 422 and r.json()["field"] == "payloads"


async def test_cors_lets_the_ui_origin_call_the_codec_only(codec_api):
    preflight = {"Origin": UI, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type,x-namespace,authorization"}
    r = await codec_api.options("/codec/decode", headers=preflight)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == UI
    assert r.headers["access-control-allow-credentials"] == "true"
    r = await codec_api.options("/codec/decode", headers={**preflight, "Origin": "http://evil.example"})
    assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
    r = await codec_api.get("/healthz", headers={"Origin": UI})
    assert "access-control-allow-origin" not in r.headers  # the /v1 API is not opened to browsers


async def test_a_session_cookie_lets_the_dev_ui_decode(codec_api):
    body = {"payloads": [await sealed("Alice's description")]}
    r = await codec_api.post("/codec/session", data={"token": codec_api.tokens["customer"]})
    assert r.status_code == 403 and "codec_session" not in r.headers.get("set-cookie", "")
    r = await codec_api.post("/codec/session", data={"token": codec_api.tokens["agent"], "next": "http://evil.example/x"})
    assert r.status_code == 200 and "care_codec" in r.text  # no redirect outside the UI
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/codec" in cookie
    r = await codec_api.post("/codec/session", data={"token": codec_api.tokens["agent"], "next": f"{UI}/namespaces"})
    assert r.status_code == 303 and r.headers["location"] == f"{UI}/namespaces"
    async with httpx.AsyncClient(base_url=codec_api.base_url, cookies={"codec_session": codec_api.tokens["agent"]}) as ui:
        r = await ui.post("/codec/decode", json=body, headers={"Origin": UI})
        assert r.status_code == 200 and base64.b64decode(r.json()["payloads"][0]["data"]) == b"\"Alice's description\""
        assert r.headers["access-control-allow-origin"] == UI
        r = await ui.post("/codec/logout")
        assert 'codec_session=""' in r.headers["set-cookie"]


b64 = st.binary(max_size=80).map(lambda b: base64.b64encode(b).decode())
text_or_b64 = st.text(max_size=40) | b64
bodies = st.one_of(
    st.fixed_dictionaries({"payloads": st.lists(st.fixed_dictionaries({}, optional={
        "metadata": st.dictionaries(st.sampled_from(["encoding", "encryption-key-id", "type"]) | st.text(max_size=8),
                                    text_or_b64 | st.sampled_from(["YmluYXJ5L2VuY3J5cHRlZA==", "dGVzdC1vbmx5LTE="]),
                                    max_size=3),
        "data": text_or_b64 | st.integers()}), max_size=4)}),
    st.dictionaries(st.text(max_size=10), st.none() | st.integers() | st.text(max_size=10), max_size=3),
    st.lists(st.integers(), max_size=3), st.text(max_size=20))


def fuzz(base_url: str, token: str, real: dict) -> None:
    with requests.Session() as session:
        @settings(max_examples=150, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(body=bodies | st.just({"payloads": [real]}), path=st.sampled_from(["/codec/decode", "/codec/encode"]),
               flip=st.integers(0, 200), auth=st.sampled_from(["agent", "agent", "agent", "none", "garbage"]))
        def run(body, path, flip, auth):
            if body == {"payloads": [real]} and flip:  # a real ciphertext with one byte changed
                data = bytearray(base64.b64decode(real["data"]))
                data[flip % len(data)] ^= 0x01
                body = {"payloads": [{**real, "data": base64.b64encode(bytes(data)).decode()}]}
            headers = {"agent": bearer(token), "none": {}, "garbage": {"Authorization": "Bearer \x7f\u00e9"}}[auth]
            r = session.post(base_url + path, json=body, headers=headers, timeout=30)
            assert r.status_code < 500, (body, r.status_code, r.text)
            if auth == "agent" and path == "/codec/decode" and r.status_code == 200:
                assert len(r.json()["payloads"]) == len(body["payloads"])

        run()


async def test_fuzzed_codec_requests_never_get_a_server_error(codec_api):
    real = await sealed({"case_id": "case_1", "description": "text"})
    await asyncio.to_thread(fuzz, str(codec_api.base_url), codec_api.tokens["agent"], real)
