"""Encryption of personal data: every payload Temporal stores, and the bank details PostgreSQL stores.

AES-256-GCM (cryptography's AESGCM), a random 96-bit nonce per message. Keys come from settings
(`CODEC_KEYS="kid:base64key,kid2:base64key"`): the FIRST encrypts, all decrypt, so a key is rotated by
putting a new one first and dropping the old one once nothing encrypted with it is kept any more
(closed histories leave with the namespace retention). Each ciphertext names its key id.

Two uses, told apart by the associated data, so a ciphertext of one cannot be decrypted as the other
(a bank column pasted into the codec server decodes nothing):
- `EncryptionCodec`: Temporal payloads (inputs, results, signals, Updates, queries, activity arguments,
  memo, the UI's summaries and details, failure messages). Search attributes are never encoded.
- `KeyRing.seal` / `KeyRing.open`: a column value, bound to its table, column and row.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import os
from typing import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes, PayloadCodec

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
PAYLOAD_AAD = b"temporal-payload"
SEALED_PREFIX = "enc:"
NONCE_BYTES = 12


class CodecError(ValueError):
    """A ciphertext that cannot be decrypted: unknown key id, tampered or truncated."""


class KeyRing:
    """Named AES-256 keys; the first one encrypts."""

    def __init__(self, keys: Sequence[tuple[str, bytes]]):
        if not keys:
            raise ValueError("no encryption key: set CODEC_KEYS (`make run` generates dev keys into .data/)")
        for kid, key in keys:
            if not kid or ":" in kid or "," in kid:
                raise ValueError(f"bad key id {kid!r}")
            if len(key) != 32:
                raise ValueError(f"key {kid!r} is {len(key)} bytes, AES-256 needs 32")
        self.current = keys[0][0]
        self._aead = {kid: AESGCM(key) for kid, key in keys}

    @classmethod
    def parse(cls, text: str) -> KeyRing:
        """From `kid:base64key,kid2:base64key` (the CODEC_KEYS setting)."""
        keys = []
        for item in filter(None, (part.strip() for part in text.split(","))):
            kid, _, b64 = item.partition(":")
            try:
                keys.append((kid, base64.b64decode(b64, validate=True)))
            except binascii.Error:
                raise ValueError(f"key {kid!r} is not base64") from None
        return cls(keys)

    @property
    def key_ids(self) -> list[str]:
        return list(self._aead)

    def encrypt(self, data: bytes, aad: bytes) -> tuple[str, bytes]:
        nonce = os.urandom(NONCE_BYTES)
        return self.current, nonce + self._aead[self.current].encrypt(nonce, data, aad)

    def decrypt(self, kid: str, blob: bytes, aad: bytes) -> bytes:
        aead = self._aead.get(kid)
        if aead is None:
            raise CodecError(f"unknown encryption key id {kid!r}")
        if len(blob) < NONCE_BYTES + 16:
            raise CodecError("ciphertext too short")
        try:
            return aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
        except InvalidTag:
            raise CodecError(f"ciphertext does not decrypt with key {kid!r} (tampered, or another purpose)") from None

    # ------------------------------------------------------------ column values (PostgreSQL)
    def seal(self, text: str, context: str) -> str:
        """`enc:<kid>:<base64(nonce + ciphertext)>`; `context` (table.column:row id) is authenticated."""
        kid, blob = self.encrypt(text.encode(), context.encode())
        return f"{SEALED_PREFIX}{kid}:{base64.b64encode(blob).decode()}"

    def open(self, sealed: str, context: str) -> str:
        if not sealed.startswith(SEALED_PREFIX):
            raise CodecError("not a sealed value")
        kid, _, b64 = sealed[len(SEALED_PREFIX):].partition(":")
        try:
            blob = base64.b64decode(b64, validate=True)
        except binascii.Error:
            raise CodecError("sealed value is not base64") from None
        return self.decrypt(kid, blob, context.encode()).decode()


def generate_keys(kid: str) -> str:
    """A fresh CODEC_KEYS value with one random key (dev stacks, benchmarks)."""
    return f"{kid}:{base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()}"


class EncryptionCodec(PayloadCodec):
    """Each payload becomes `binary/encrypted` with the key id in its metadata. Payloads without that
    encoding go through `decode` unchanged: histories recorded in clear before the codec still replay."""

    def __init__(self, keys: KeyRing):
        self.keys = keys

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encode_one(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decode_one(p) for p in payloads]

    def encode_one(self, p: Payload) -> Payload:
        kid, blob = self.keys.encrypt(p.SerializeToString(), PAYLOAD_AAD)
        return Payload(metadata={"encoding": ENCODING, KEY_ID: kid.encode()}, data=blob)

    def decode_one(self, p: Payload) -> Payload:
        if p.metadata.get("encoding") != ENCODING:
            return p
        kid = p.metadata.get(KEY_ID, b"").decode(errors="replace")
        clear = Payload()
        clear.ParseFromString(self.keys.decrypt(kid, p.data, PAYLOAD_AAD))  # authenticated: ours
        return clear


def keyring(codec_keys: str | None = None) -> KeyRing:
    """The key ring of the settings (CODEC_KEYS) or of the given text."""
    if codec_keys is None:
        from config import settings

        codec_keys = settings().codec_keys
    return KeyRing.parse(codec_keys)


def data_converter(codec_keys: str | None = None) -> DataConverter:
    """THE data converter of every Temporal client, worker and replayer of the project: pydantic v2
    payloads, encrypted; failure messages and stack traces moved into the (encrypted) payload too."""
    from temporalio.contrib.pydantic import pydantic_data_converter

    return dataclasses.replace(pydantic_data_converter, payload_codec=EncryptionCodec(keyring(codec_keys)),
                               failure_converter_class=DefaultFailureConverterWithEncodedAttributes)
