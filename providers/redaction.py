"""Redaction of secrets from text: the one implementation the Vault and the HTTP helper use.

A hostile or careless endpoint rarely echoes a secret as it was sent: it upper-cases it,
base64-encodes it (a Basic header), URL-encodes it (a form body) or prints its bytes in
hex. `redact` replaces every one of these forms:

- the value itself, matched without regard to case (so an upper-cased copy goes too);
- URL-encoded, JSON- and HTML-escaped, each character in any of its forms, so a copy
  escaped only in part, or every character escaped ("%73%6b", "\\u0073\\u006b",
  "&#115;&#x6b;"), goes as well as the forms the standard functions write;
- hex of its UTF-8 bytes, in either case;
- base64 and base64url, with or without padding, also upper- or lower-cased. A secret
  encoded inside a longer value (a Basic header encodes "user:secret") starts at any of
  three byte offsets within a 3-byte group, and each offset gives other characters; for
  each offset only the characters that depend on the secret's bytes alone are matched, so
  the copy goes wherever it sits (what remains of its edges is at most 4 bits either side).

Secrets shorter than `ENCODED_MIN` characters are replaced as exact copies only: the
encodings of two or three characters are too short to tell from ordinary text.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

ENCODED_MIN = 4  # characters a secret needs before its encodings are looked for too
_URLSAFE = str.maketrans("+/", "-_")


def _base64_cores(raw: bytes) -> set[str]:
    """The base64 characters that depend on `raw` alone, for each of the three byte
    offsets it can start at inside a longer encoded value."""
    cores = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode().rstrip("=")
        # The first characters mix in the bytes before; a last partial group mixes in
        # whatever follows.
        start = (0, 2, 3)[offset]
        end = len(encoded) - (1 if (offset + len(raw)) % 3 else 0)
        core = encoded[start:end]
        if core:
            cores.add(core)
    return cores


def _char_forms(char: str) -> str:
    """A pattern for one character of a secret as text may carry it: as it is, or
    URL-encoded (%xx per UTF-8 byte; "+" for a space), JSON-escaped (\\uXXXX, a
    surrogate pair beyond the BMP, or a short escape) or as an HTML character reference
    (named, decimal, hex)."""
    forms = {re.escape(char)}
    encoded = char.encode()
    forms.add("".join(f"%{byte:02x}" for byte in encoded))
    if char == " ":
        forms.add(r"\+")
    utf16 = char.encode("utf-16-be")
    forms.add("".join(re.escape(f"\\u{int.from_bytes(utf16[i:i + 2]):04x}")
                      for i in range(0, len(utf16), 2)))
    forms.add(re.escape(json.dumps(char)[1:-1]))
    forms.add(re.escape(html.escape(char)))
    forms.add(f"&#0*{ord(char)};")
    forms.add(f"&#x0*{ord(char):x};")
    return "(?:" + "|".join(sorted(forms, key=lambda form: (-len(form), form))) + ")"


def escaped_pattern(secret: str) -> str:
    """A pattern for `secret` with each of its characters in any form `_char_forms`
    allows (mixed within one copy, too)."""
    return "".join(_char_forms(char) for char in secret)


def variants(secret: str) -> set[str]:
    """Every form of `secret` to look for (matched without regard to case)."""
    found = {secret}
    if len(secret) < ENCODED_MIN:
        return found
    raw = secret.encode()
    found |= {quote(secret, safe=""), quote(secret), quote_plus(secret),
              json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1],
              html.escape(secret), raw.hex()}
    for core in _base64_cores(raw):
        found |= {core, core.translate(_URLSAFE)}
    return {form for form in found if form}


def pattern(secrets: Iterable[str], *, min_length: int = 1) -> re.Pattern[str] | None:
    """One case-insensitive pattern for every form of every secret of at least
    `min_length` characters (longest first, so a longer form wins), or None."""
    forms: set[str] = set()
    escaped: set[str] = set()
    for secret in {str(s) for s in secrets if s and len(str(s)) >= min_length}:
        forms |= variants(secret)
        if len(secret) >= ENCODED_MIN:
            escaped.add(escaped_pattern(secret))
    if not forms:
        return None
    ordered = sorted(forms, key=lambda form: (-len(form), form))
    # The literal forms first (a longer one wins), then the character-wise escapes.
    alternatives = [re.escape(form) for form in ordered] + sorted(escaped, key=len,
                                                                  reverse=True)
    return re.compile("|".join(alternatives), re.IGNORECASE)


def redact(text: str, secrets: Iterable[str], *, mask: str = "[redacted]",
           min_length: int = 1) -> str:
    """`text` with every secret (of `min_length` characters or more) replaced by `mask`,
    in every form `variants` lists."""
    found = pattern(secrets, min_length=min_length)
    return found.sub(mask, text) if found and text else text
