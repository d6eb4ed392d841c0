"""Secrets in a job's own configuration (and in a wizard draft's).

A job type's config schema may mark fields secret (`"writeOnly": true`). Their values are
stored sealed, as {"$sealed": "v1:<key id>:..."}, bound to the field's path; the worker
opens them for a unit of work only. A blank secret keeps the stored one, except when a
field that decides where secrets go (a destination, e.g. a URL) changed.

No Flask request objects here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select

from portal import audit
from portal.extensions import db
from portal.keys import KeyUnavailable, keyring, split
from portal.models import Draft, Job
from portal.schemaform import destination_paths, holder_of, moved_destinations, secret_slots
from providers import get_job_type


def enter_again(moved: list[str]) -> str:
    """The message on a blank secret that is not kept because a destination changed."""
    return (f"{' and '.join(f'“{title}”' for title in moved)} changed: enter this secret "
            "again. A stored secret is never sent to a new address.")



SEALED = "$sealed"


def _config_aad(path: str) -> bytes:
    return f"portal-job-config:{path}".encode()


def is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {SEALED}


def _copy(config: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(config or {}))


def seal_config(schema: dict[str, Any], config: dict[str, Any], *,
                keep: dict[str, Any] | None = None, drop: Iterable[str] = (),
                refused: dict[str, str] | None = None) -> dict[str, Any]:
    """The configuration as it is stored: every secret value sealed. A secret left out
    (a blank password box), or one in `drop` (a field with a mistake), keeps the sealed
    value it had in `keep`, the config stored before, or is left out. It is not kept when
    a destination field (x-destination, e.g. a URL) differs from `keep`'s: it is left
    out, and `refused` (when given) gets a message on its path to enter it again."""
    stored, dropped = _copy(config), set(drop)
    moved = moved_destinations(schema, destination_paths(schema), keep, config) if keep else []
    for path, holder, name in secret_slots(schema, stored):
        value = None if path in dropped else holder.get(name)
        if value in (None, ""):
            earlier, earlier_name = holder_of(keep, path)
            if earlier is not None and is_sealed(earlier.get(earlier_name)):
                if not moved:
                    holder[name] = earlier[earlier_name]
                    continue
                if refused is not None:
                    refused.setdefault(path, enter_again(moved))
            holder.pop(name, None)
        elif not is_sealed(value):
            holder[name] = {SEALED: keyring().seal({"value": value}, _config_aad(path))}
    return stored


def open_config(schema: dict[str, Any], config: dict[str, Any], *, what: str,
                lost: list[str] | None = None) -> dict[str, Any]:
    """The configuration with its secrets in plain text, for the moment they are used
    (a unit of work, a check of the form). `what` names it in a KeyUnavailable message;
    with a `lost` list, a secret no key opens is left out and its path added instead.
    A secret stored before sealing existed is taken as it is (`vault rotate` seals it)."""
    opened = _copy(config)
    for path, holder, name in secret_slots(schema, opened):
        if not is_sealed(holder.get(name)):
            continue
        token = holder[name][SEALED]
        try:
            holder[name] = keyring().open(token, _config_aad(path))["value"]
        except (KeyError, ValueError) as exc:
            if lost is not None:
                holder.pop(name)
                lost.append(path)
                continue
            why = (f"is encrypted with the key “{split(token)[1]}”, which is not in "
                   "PORTAL_VAULT_KEYS. Add that key back after the active one, or enter the "
                   "secret again." if isinstance(exc, KeyError) else
                   "cannot be decrypted: the key is not the one it was encrypted with, or "
                   "the stored data is damaged. Enter the secret again.")
            raise KeyUnavailable(f"The secret “{path}” in the configuration of {what} "
                                 f"{why}") from None
    return opened


def config_secret_values(schema: dict[str, Any], opened: dict[str, Any]) -> list[str]:
    """The plain secret values of an opened configuration (to redact them from messages)."""
    return [str(holder[name]) for _, holder, name in secret_slots(schema, opened)
            if holder.get(name) and not is_sealed(holder[name])]


def reseal(schema: dict[str, Any], config: dict[str, Any], what: str
            ) -> tuple[dict[str, Any] | None, list[str]]:
    """(the config with its secrets sealed under the active key, or None when none needed
    it; the paths of secrets no key opens, which are left as they were)."""
    active = keyring().active_id
    stale = [path for path, holder, name in secret_slots(schema, config or {})
             if holder.get(name) not in (None, "") and (
                 not is_sealed(holder[name]) or split(holder[name][SEALED])[1] != active)]
    if not stale:  # nothing to open
        return None, []
    lost: list[str] = []
    opened = open_config(schema, config, what=what, lost=lost)
    if not set(stale) - set(lost):
        return None, lost
    return seal_config(schema, opened, keep=config), lost


def rotate_configs(model: type[Job] | type[Draft], actor: str, batch: int
                   ) -> tuple[int, list[str]]:
    """Seal the configuration secrets of every job (or draft) under the active key:
    (how many were re-sealed, the secrets no key opens, as "job #3 “token”")."""
    kind = "job" if model is Job else "draft"
    last_id, done, unreadable = 0, 0, []
    while True:
        rows = db.session.scalars(select(model).where(model.id > last_id)
                                  .order_by(model.id).limit(batch)).all()
        if not rows:
            return done, unreadable
        for row in rows:
            last_id = row.id
            found = get_job_type(row.provider, row.job_type)
            if found is None:
                continue
            resealed, lost = reseal(found[1].config_schema, row.config, f"{kind} #{row.id}")
            unreadable += [f"{kind} #{row.id} “{path}”" for path in lost]
            if resealed is None:
                continue
            row.config = resealed
            audit.record("rotated", kind, row.id, getattr(row, "name", "") or f"#{row.id}",
                         actor=actor, to_key=keyring().active_id,
                         summary=f"Configuration secrets sealed with key "
                                 f"“{keyring().active_id}”")
            done += 1
        db.session.commit()
