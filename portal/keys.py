"""The Vault's keys and ciphertexts: AES-256-GCM (cryptography), keys by id.

A ciphertext is "v1:<key id>:<base64(nonce + ciphertext)>", bound by its associated data to
what it belongs to, so a ciphertext copied elsewhere does not open. Keys come from
PORTAL_VAULT_KEYS, "id:base64key,id:base64key", the first one active; older keys stay
listed until `flask --app wsgi vault rotate` has re-encrypted everything under the active
one. Used by the Vault (portal/vault.py) and by job configuration secrets
(portal/configsecrets.py).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from flask import current_app

from portal.models.types import utcnow

FORMAT = "v1"


class VaultError(Exception):
    """A Vault operation cannot be done; the message says why, in words a user can act on,
    and never contains a secret."""


class KeyUnavailable(VaultError):
    """The stored credentials cannot be decrypted (key missing, wrong or data damaged)."""


class Keyring:
    """The Vault's keys by id; the first is the one new ciphertexts use."""

    def __init__(self, spec: str):
        self.keys: dict[str, bytes] = {}
        for part in (piece.strip() for piece in spec.split(",")):
            if not part:
                continue
            key_id, sep, encoded = part.partition(":")
            if not sep or not key_id:
                raise ValueError("PORTAL_VAULT_KEYS: each key is written id:base64key, "
                                 "keys separated by commas.")
            try:
                key = base64.b64decode(encoded, validate=True)
            except binascii.Error:
                raise ValueError(f"PORTAL_VAULT_KEYS: key {key_id!r} is not base64.") from None
            if len(key) != 32:
                raise ValueError(f"PORTAL_VAULT_KEYS: key {key_id!r} must be 32 bytes "
                                 f"(AES-256), not {len(key)}.")
            if key_id in self.keys:
                raise ValueError(f"PORTAL_VAULT_KEYS: key id {key_id!r} appears twice.")
            self.keys[key_id] = key
        if not self.keys:
            raise ValueError("PORTAL_VAULT_KEYS holds no key.")
        self.active_id = next(iter(self.keys))

    def seal(self, data: dict[str, Any], associated: bytes) -> str:
        nonce = os.urandom(12)
        sealed = AESGCM(self.keys[self.active_id]).encrypt(
            nonce, json.dumps(data, sort_keys=True).encode(), associated)
        return f"{FORMAT}:{self.active_id}:{base64.b64encode(nonce + sealed).decode()}"

    def open(self, token: str, associated: bytes) -> dict[str, Any]:
        """Raises KeyError (unknown key id) or ValueError (damaged or wrong key)."""
        form, key_id, encoded = split(token)
        if form != FORMAT:
            raise ValueError(f"unknown format {form!r}")
        key = self.keys[key_id]
        try:
            raw = base64.b64decode(encoded, validate=True)
            plain = AESGCM(key).decrypt(raw[:12], raw[12:], associated)
        except (binascii.Error, InvalidTag, ValueError):
            raise ValueError("damaged or sealed with another key") from None
        return json.loads(plain)


def split(token: str) -> tuple[str, str, str]:
    parts = token.split(":", 2)
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else ("", "", "")


def new_key() -> str:
    """A fresh key line for PORTAL_VAULT_KEYS."""
    return f"k{utcnow():%Y%m%d}:{base64.b64encode(os.urandom(32)).decode()}"


def keyring() -> Keyring:
    """The app's keyring, parsed once (create_app parses it at start to fail early)."""
    ring = current_app.extensions.get("portal_keyring")
    if ring is None:
        ring = current_app.extensions["portal_keyring"] = Keyring(
            current_app.config["PORTAL_VAULT_KEYS"])
    return ring
