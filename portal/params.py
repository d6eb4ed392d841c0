"""The one parser for the ids, numbers and cursors a request carries.

Every id, count, version or keyset position read from a URL path, a query string or a
form goes through here, so junk gets a clear 400 (a malformed value) or 404 (an id that
cannot exist), never a 500 further down. Only ASCII digits count: `str.isdigit()` is
true for "²³", which `int()` refuses, and `int()` takes "١٢٣" and "1_000", which no link
of ours ever carries. Ids stop at 2**63 - 1, the largest integer a database column here
holds (SQLite raises OverflowError beyond it).

Nothing here reads the request itself: views hand over `request.args` or `request.form`,
so domain code may use `parse_int` too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from werkzeug.exceptions import BadRequest
from werkzeug.routing import IntegerConverter, ValidationError

ID_MAX = 2**63 - 1
_INTEGER = re.compile(r"-?[0-9]{1,19}")  # no sign but "-", no spaces, at most 19 digits


def parse_int(raw: Any, *, low: int = 1, high: int = ID_MAX, signed: bool = False
              ) -> int | None:
    """The integer `raw` spells in ASCII digits (or holds, when it is already an int),
    within low..high; None for anything else: other characters, a sign unless `signed`,
    more than 19 digits, a bool, a float."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, str) and _INTEGER.fullmatch(raw) and (signed or raw[0] != "-"):
        value = int(raw)
    else:
        return None
    return value if low <= value <= high else None


def _refuse(name: str, low: int, high: int) -> BadRequest:
    what = "an id" if (low, high) == (1, ID_MAX) else f"from {low:,} to {high:,}"
    return BadRequest(description=f"The value of “{name}” must be a whole number {what}, "
                                  "written in the digits 0–9. Check the link or reload "
                                  "the page.")


def id_arg(source: Mapping[str, str], name: str, *, strict: bool = True) -> int | None:
    """An id from a query string or form: None when absent or blank. A malformed one is
    a 400 naming the parameter, or None where the view ignores what it cannot use
    (`strict=False`: a filter in a shared link that no longer fits)."""
    return int_arg(source, name, default=None, strict=strict)


def int_arg(source: Mapping[str, str], name: str, *, default: Any, low: int = 1,
            high: int = ID_MAX, strict: bool = True) -> Any:
    """A whole number from low to high from a query string or form; `default` when absent
    or blank; when malformed or out of range, a 400 naming the parameter, or `default`
    with `strict=False`."""
    raw = source.get(name)
    if raw is None or raw == "":
        return default
    value = parse_int(raw, low=low, high=high, signed=low < 0)
    if value is None:
        if strict:
            raise _refuse(name, low, high)
        return default
    return value


def ids_of(values: Iterable[str], *, limit: int) -> list[int]:
    """The valid ids among `values` (at most `limit` of them); the rest are passed over,
    as a stale selection or a tampered list has nothing to act on."""
    found = (parse_int(raw) for raw in values)
    return [value for value in found if value is not None][:limit]


class IdConverter(IntegerConverter):
    """Flask's `int` URL converter, bounded: ASCII digits only and at most 2**63 - 1, so a
    path id no row can have is a 404 at routing instead of an overflow in the query."""

    regex = r"[0-9]+"

    def __init__(self, map, fixed_digits: int = 0, min: int | None = None,
                 max: int | None = ID_MAX, signed: bool = False) -> None:
        super().__init__(map, fixed_digits, min, max, signed)

    def to_python(self, value: str) -> Any:
        if len(value.lstrip("-")) > 19:  # before int(): thousands of digits cost time
            raise ValidationError()
        return super().to_python(value)
