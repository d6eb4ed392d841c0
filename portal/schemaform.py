"""Job configuration from a JSON Schema: turn form text into typed values and check it.

Views hand over the submitted strings; what comes back is the typed config and a
message per field, ready to be shown next to that field.
"""

from __future__ import annotations

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


def _scalar(kind: str | None, raw: str) -> Any:
    if kind == "integer":
        return int(raw.strip())
    if kind == "number":
        return float(raw.strip())
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
                values[name] = [_scalar(items.get("type"), item) for item in raw_items]
            except ValueError:
                errors[key] = "Put one number on each line."
            continue
        raw = form.get(key)
        if raw is None or raw == "":
            if name not in schema.get("required", []) and "default" in prop:
                values[name] = prop["default"]
            continue
        try:
            values[name] = _scalar(kind, raw)
        except ValueError:
            errors[key] = "Enter a whole number." if kind == "integer" else "Enter a number."
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
