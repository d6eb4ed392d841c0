"""CSV the portal writes, with no cell a spreadsheet would run as a formula.

Text in a download comes from outside (a provider's error, an uploaded file's name), and
Excel, LibreOffice and Google Sheets read a cell that starts with = + - @ (or a tab or a
line break before one) as a formula. Following OWASP's advice on CSV injection, such a
cell gets a leading single quote, which the spreadsheet shows as text. Every CSV writer
of the portal goes through `SafeDictWriter` (or `neutralize`), so none can forget it.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from typing import Any

# OWASP's list (= + - @ tab carriage return), plus line feed: a cell can start with a
# line break as well as with a carriage return, and some spreadsheets drop it before
# reading the rest as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")


def neutralize(value: Any) -> Any:
    """The cell as text a spreadsheet will not evaluate; numbers and other values as they
    are (a negative count is a number, not a formula)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class SafeDictWriter(csv.DictWriter):
    """csv.DictWriter whose every cell (header included) goes through `neutralize`."""

    def writerow(self, rowdict: Mapping[str, Any]) -> Any:
        return super().writerow({key: neutralize(value) for key, value in rowdict.items()})

    def writerows(self, rowdicts: Iterable[Mapping[str, Any]]) -> None:
        for row in rowdicts:
            self.writerow(row)
