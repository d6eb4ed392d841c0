"""Job configuration from a JSON Schema: turn form text into typed values and check it.

Views hand over the submitted strings; what comes back is the typed config and a
message per field, ready to be shown next to that field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator


def ordered_fields(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, property schema) in the order the schema asks for (x-order), then the rest."""
    properties = schema.get("properties", {})
    order = [name for name in schema.get("x-order", []) if name in properties]
    order += [name for name in properties if name not in order]
    return [(name, properties[name]) for name in order]


def defaults(schema: dict[str, Any]) -> dict[str, Any]:
    return {name: prop["default"] for name, prop in ordered_fields(schema) if "default" in prop}


def prefixed(form: Mapping[str, str], prefix: str) -> dict[str, str]:
    """The fields of a form named `<prefix>-<field>`, by field (sub-forms on one page)."""
    return {key.split("-", 1)[1]: value for key, value in form.items()
            if key.startswith(prefix + "-")}


def coerce(
    schema: dict[str, Any], form: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Typed values from submitted text; a field that is not of its type gets a message."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, prop in ordered_fields(schema):
        kind = prop.get("type")
        raw = form.get(name)
        if kind == "boolean":
            values[name] = raw in ("on", "true", "1", "yes")
            continue
        if raw is None or raw == "":
            if name not in schema.get("required", []) and "default" in prop:
                values[name] = prop["default"]
            continue
        raw = raw.strip() if kind in ("integer", "number") else raw
        try:
            if kind == "integer":
                values[name] = int(raw)
            elif kind == "number":
                values[name] = float(raw)
            else:
                values[name] = raw
        except ValueError:
            errors[name] = "Enter a whole number." if kind == "integer" else "Enter a number."
    return values, errors


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
    time (x-options), such as the columns of an uploaded file.
    """
    properties = schema.get("properties", {})
    errors: dict[str, str] = {}
    for error in Draft202012Validator(schema).iter_errors(config):
        if error.validator == "required":
            name = error.message.split("'")[1]
        elif error.path:
            name = str(error.path[0])
        else:
            name = "__all__"
        errors.setdefault(name, _message(error, properties.get(name, {})))
    for name, prop in properties.items():
        source = prop.get("x-options")
        value = config.get(name)
        if source and value not in (None, "") and name not in errors:
            allowed = (options or {}).get(source, [])
            if value not in allowed:
                errors[name] = "Choose one of the options."
    return errors


NAME_LIMIT, DESCRIPTION_LIMIT = 200, 2000


def name_errors(name: str, description: str, *, field: str = "name",
                missing: str = "Give it a name.") -> dict[str, str]:
    """Messages for the name (1–200 characters) and description (up to 2,000) that jobs
    and authorizations carry."""
    errors = {}
    if not name:
        errors[field] = missing
    elif len(name) > NAME_LIMIT:
        errors[field] = f"Use at most {NAME_LIMIT} characters."
    if len(description) > DESCRIPTION_LIMIT:
        errors["description"] = f"Use at most {DESCRIPTION_LIMIT:,} characters."
    return errors
