"""Job configuration from a JSON Schema: turn form text into typed values and check it.

Views hand over the submitted strings; what comes back is the typed config and a
message per field, ready to be shown next to that field.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from jsonschema import Draft202012Validator

from providers.base import is_destination


def ordered_fields(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, property schema) in the order the schema asks for (x-order), then the rest."""
    properties = schema.get("properties", {})
    order = [name for name in schema.get("x-order", []) if name in properties]
    order += [name for name in properties if name not in order]
    return [(name, properties[name]) for name in order]


def defaults(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema's defaults, nested objects included."""
    found: dict[str, Any] = {}
    for name, prop in ordered_fields(schema):
        if "default" in prop:
            found[name] = prop["default"]
        elif prop.get("type") == "object" and prop.get("properties"):
            found[name] = defaults(prop)
    return found


def prefixed(form: Mapping[str, str], prefix: str) -> dict[str, str]:
    """The fields of a form named `<prefix>-<field>`, by field (sub-forms on one page)."""
    return {key.split("-", 1)[1]: value for key, value in form.items()
            if key.startswith(prefix + "-")}


def _getlist(form: Mapping[str, Any], name: str) -> list[str]:
    if hasattr(form, "getlist"):
        return [value for value in form.getlist(name) if value != ""]
    value = form.get(name)
    return [] if value in (None, "") else [value]


# What a person types into a number box, in ASCII: no "1_000", no "١٢", no "0x1f".
_WHOLE = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NOT_FINITE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)
WHOLE_LIMIT = 2**63 - 1  # what any database column holds; beyond it, no field needs
NOT_A_NUMBER = "Enter a number."


def _scalar(kind: str | None, raw: str) -> Any:
    """The typed value of one form text; ValueError with the field message when it is not
    a whole number (integer) or a finite number (number) written in ASCII."""
    text = raw.strip()
    if kind == "integer":
        if not _WHOLE.fullmatch(text):
            raise ValueError("Enter a whole number.")
        if len(text.lstrip("+-")) > 19 or abs(int(text)) > WHOLE_LIMIT:
            raise ValueError("That number is too large: use at most 18 digits.")
        return int(text)
    if kind == "number":
        if _NOT_FINITE.fullmatch(text):
            raise ValueError("Enter a finite number.")
        if len(text) > 100:
            raise ValueError("That number is too long: use at most 100 characters.")
        if not _DECIMAL.fullmatch(text):
            raise ValueError(NOT_A_NUMBER)
        value = float(text)
        if not math.isfinite(value):  # 1e999 reads as infinity, which JSON cannot hold
            raise ValueError("Enter a finite number.")
        return value
    return raw


def coerce(
    schema: dict[str, Any], form: Mapping[str, Any], path: str = ""
) -> tuple[dict[str, Any], dict[str, str]]:
    """Typed values from submitted text; a field that is not of its type gets a message.

    Nested objects are fields named `parent.child`; an array of choices is a group of
    checkboxes (one value each), any other array a text box with one item per line."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, prop in ordered_fields(schema):
        key = f"{path}{name}"
        kind = prop.get("type")
        if kind == "object" and prop.get("properties"):
            values[name], sub_errors = coerce(prop, form, key + ".")
            errors.update(sub_errors)
            continue
        if kind == "boolean":
            values[name] = form.get(key) in ("on", "true", "1", "yes")
            continue
        if kind == "array":
            items = prop.get("items", {})
            if items.get("enum"):
                raw_items = _getlist(form, key)
            else:
                raw_items = [line.strip() for line in str(form.get(key) or "").splitlines()
                             if line.strip()]
            try:
                values[name] = [_item(items, item, line)
                                for line, item in enumerate(raw_items, start=1)]
            except ValueError as exc:
                errors[key] = str(exc)
            continue
        raw = form.get(key)
        if raw is None or raw == "":
            if name not in schema.get("required", []) and "default" in prop:
                values[name] = prop["default"]
            continue
        try:
            values[name] = _scalar(kind, raw)
            _check_text(prop, raw)
        except ValueError as exc:
            errors[key] = str(exc)
    return values, errors


def _item(items: dict[str, Any], raw: str, line: int) -> Any:
    """One line of a list box, typed; the message says which line is wrong."""
    try:
        value = _scalar(items.get("type"), raw)
        _check_text(items, raw)
    except ValueError as exc:
        if str(exc) in ("Enter a whole number.", NOT_A_NUMBER):
            raise ValueError("Put one number on each line.") from None
        raise ValueError(f"Line {line}: {exc}") from None
    return value


def _check_text(prop: dict[str, Any], text: str) -> None:
    """Typed text holds no hidden character. A secret is never shown, and a choice (enum,
    x-options) is checked against what was offered, such as a file's own column names."""
    if prop.get("type") != "string" or any(prop.get(key) for key in (
            "writeOnly", "enum", "x-options")):
        return
    if problem := text_problem(text):
        raise ValueError(problem)


def _message(error, prop: dict[str, Any]) -> str:
    kind = error.validator
    if kind == "required":
        return "This field is required."
    if kind == "pattern":
        return prop.get("x-pattern-message") or prop.get("description") or "The format is wrong."
    if kind == "enum":
        return "Choose one of the options."
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return f"Must be {kind.replace('exclusive', '').lower()} {error.validator_value}."
    if kind in ("minLength", "maxLength"):
        bound = "at least" if kind == "minLength" else "at most"
        return f"Use {bound} {error.validator_value} characters."
    return error.message


def validate(
    schema: dict[str, Any], config: dict[str, Any], options: Mapping[str, list[str]] | None = None
) -> dict[str, str]:
    """Messages by field name; empty when the config is valid.

    `options` gives the allowed values of fields whose choices are only known at run
    time (x-options), such as the columns of an uploaded file: plain values or (value,
    label) pairs.
    """
    properties = schema.get("properties", {})
    errors: dict[str, str] = {}
    for error in Draft202012Validator(schema).iter_errors(config):
        # The field the error belongs to: `parent.child` inside objects; an array's items
        # report on the array.
        parts: list[str] = []
        prop = schema
        for step in error.path:
            if isinstance(step, int):
                break
            parts.append(str(step))
            prop = prop.get("properties", {}).get(str(step), {})
        if error.validator == "required":
            missing = error.message.split("'")[1]
            parts.append(missing)
            prop = prop.get("properties", {}).get(missing, {})
        name = ".".join(parts) or "__all__"
        errors.setdefault(name, _message(error, prop))
    for name, prop in properties.items():
        source = prop.get("x-options")
        value = config.get(name)
        # Choices that could not be loaded (a provider that did not answer) are not
        # enforced: the person types the value instead.
        if source and value not in (None, "") and name not in errors and (
                options is not None and source in options):
            allowed = [option[0] if isinstance(option, tuple | list) else option
                       for option in options[source]]
            if value not in allowed:
                errors[name] = "Choose one of the options."
    return errors


NAME_LIMIT, DESCRIPTION_LIMIT = 200, 2000

# Zero-width non-joiner and joiner are format characters that Persian and Indic writing
# and emoji sequences need; every other format character is refused in text.
JOINERS = frozenset("\u200c\u200d")
LINE_BREAKS = frozenset("\n\r\t")  # what a multi-line text (a description) may hold
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def unsafe_character(char: str, *, multiline: bool = False) -> bool:
    """Whether a character would hide in text or change how the text around it reads:
    control characters (C0, DEL, C1; a multi-line text keeps newline, return and tab),
    line and paragraph separators in one-line text, lone surrogates, and format
    characters (bidirectional overrides and isolates U+202A–U+202E and U+2066–U+2069,
    marks, zero-width spaces, the BOM, invisible tags) other than the two joiners."""
    if multiline and char in LINE_BREAKS:
        return False
    category = unicodedata.category(char)
    if category in ("Zl", "Zp"):
        return not multiline
    return category in ("Cc", "Cs") or (category == "Cf" and char not in JOINERS)


def describe_character(char: str) -> str:
    """U+202E RIGHT-TO-LEFT OVERRIDE, or U+0007 (a control character)."""
    code = f"U+{ord(char):04X}"
    if name := unicodedata.name(char, ""):
        return f"{code} {name}"
    kinds = {"\n": "a line break", "\r": "a line break", "\t": "a tab"}
    return f"{code} ({kinds.get(char, 'a control character')})"


def text_problem(text: str, *, multiline: bool = False) -> str:
    """The field message for text holding an unsafe character (the first one found), or
    "" when there is none."""
    if text.isascii() and (text.isprintable() or multiline and not _ASCII_CONTROL.search(text)):
        return ""
    for char in text:
        if unsafe_character(char, multiline=multiline):
            return (f"Remove the character {describe_character(char)}: control, invisible "
                    "and text-direction characters are not allowed here, as they can make "
                    "the text read as something else.")
    return ""


def name_errors(name: str, description: str, *, field: str = "name",
                missing: str = "Give it a name.") -> dict[str, str]:
    """Messages for the name (1–200 characters, one line) and description (up to 2,000,
    lines allowed) that jobs, drafts and authorizations carry; neither may hold control,
    invisible or text-direction characters (see `unsafe_character`)."""
    errors = {}
    if not name:
        errors[field] = missing
    elif len(name) > NAME_LIMIT:
        errors[field] = f"Use at most {NAME_LIMIT} characters."
    elif problem := text_problem(name):
        errors[field] = problem
    if len(description) > DESCRIPTION_LIMIT:
        errors["description"] = f"Use at most {DESCRIPTION_LIMIT:,} characters."
    elif problem := text_problem(description, multiline=True):
        errors["description"] = problem
    return errors


def _paths(schema: dict[str, Any], wanted: Callable[[dict[str, Any]], bool],
           prefix: str = "") -> list[str]:
    """The dotted paths of the fields `wanted` picks, nested objects too."""
    paths = []
    for name, prop in (schema.get("properties") or {}).items():
        if wanted(prop):
            paths.append(prefix + name)
        elif prop.get("type") == "object":
            paths += _paths(prop, wanted, f"{prefix}{name}.")
    return paths


def secret_paths(schema: dict[str, Any]) -> list[str]:
    """The dotted paths of the schema's secret (writeOnly) fields, nested objects too."""
    return _paths(schema, lambda prop: bool(prop.get("writeOnly")))


def destination_paths(schema: dict[str, Any]) -> list[str]:
    """The dotted paths of the fields that decide where secrets are sent (x-destination,
    or an address format; see providers.base.is_destination), nested objects too."""
    return _paths(schema, is_destination)


def _title(schema: dict[str, Any], path: str) -> str:
    prop: dict[str, Any] = schema
    for part in path.split("."):
        prop = (prop.get("properties") or {}).get(part, {})
    return str(prop.get("title") or path)


def _comparable(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip() or None  # a blank box is the same as no value
    return value


def moved_destinations(schema: dict[str, Any], paths: Iterable[str], before: dict[str, Any],
                       after: dict[str, Any]) -> list[str]:
    """The titles of the destination fields (`paths`) whose value in `after` is not the
    one in `before` (spaces around text aside; blank is the same as missing)."""
    moved = []
    for path in paths:
        (old, old_name), (new, new_name) = holder_of(before, path), holder_of(after, path)
        if _comparable((old or {}).get(old_name)) != _comparable((new or {}).get(new_name)):
            moved.append(_title(schema, path))
    return moved


def destinations_said(schema: dict[str, Any], paths: Iterable[str] | None = None) -> str:
    """The destination fields' titles for a sentence ("“Endpoint URL”", "“Host” or
    “Port”"); empty when the schema has none."""
    titles = [f"“{_title(schema, path)}”" for path in
              (destination_paths(schema) if paths is None else paths)]
    return " or ".join(titles)


def holder_of(config: Any, path: str) -> tuple[dict[str, Any] | None, str]:
    """The dict holding a dotted path's last part (None when a parent is missing), and
    that part."""
    *parents, last = path.split(".")
    for part in parents:
        config = config.get(part) if isinstance(config, dict) else None
    return (config if isinstance(config, dict) else None), last


def secret_slots(schema: dict[str, Any], config: dict[str, Any]
                 ) -> Iterator[tuple[str, dict[str, Any], str]]:
    """(path, the dict holding it, its key) for each secret field whose parent objects
    are in `config`; the dict may be changed in place."""
    for path in secret_paths(schema):
        holder, name = holder_of(config, path)
        if holder is not None:
            yield path, holder, name


def _number(value: Any) -> str:
    """1,440 or 0.01 (never 1e+06)."""
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.10f}".rstrip("0")


def _range(low: Any, high: Any, unit: str = "") -> str:
    """"From 1 to 10.", "At least 2 characters.", "At most 1 line." (unit in the singular)."""
    def amount(value: Any) -> str:
        return _number(value) + (f" {unit}" if unit else "") + (
            "s" if unit and value != 1 else "")

    if low is not None and high is not None:
        return f"From {_number(low)} to {amount(high)}."
    if low is not None:
        return f"At least {amount(low)}."
    return f"At most {amount(high)}." if high is not None else ""


def constraint_hint(prop: dict[str, Any]) -> str:
    """The schema's limits on a field, said before anyone gets them wrong ("From 1 to 10.",
    "At most 40 characters."); empty when there are none to say."""
    kind = prop.get("type")
    if kind in ("integer", "number"):
        above, below = prop.get("exclusiveMinimum"), prop.get("exclusiveMaximum")
        said = _range(prop.get("minimum"), prop.get("maximum"))
        if above is not None:
            said += f" More than {_number(above)}."
        if below is not None:
            said += f" Less than {_number(below)}."
        return said.strip()
    if kind == "string" and not prop.get("enum") and not prop.get("x-options"):
        shortest = prop.get("minLength")  # 1 only means "not empty": required says that
        return _range(shortest if shortest and shortest > 1 else None, prop.get("maxLength"),
                      "character")
    if kind == "array" and not prop.get("items", {}).get("enum"):
        return _range(prop.get("minItems") or None, prop.get("maxItems"), "line")
    return ""
