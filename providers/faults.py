"""A fault-injecting provider for the engine's own tests and benchmarks.

It is never in the tile catalog: providers/__init__.py only finds it when the
environment says PORTAL_TEST_PROVIDERS=1 (the test suite and `make bench` set it).
"""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from providers.base import (
    NO_AUTH,
    AuthError,
    AuthMethod,
    ConfigError,
    JobType,
    OutMessage,
    Provider,
    ProviderError,
    RateLimited,
    RunContext,
    WorkResult,
)


def run_script(ctx: RunContext) -> WorkResult:
    """Unit n does what `script[n]` says (past the end: "ok"), then writes
    `rows_per_unit` messages: "ok"; "error" (always fails); "error:K" (fails its first K
    attempts); "fatal" (a ConfigError); "auth" (an AuthError quoting the credentials and
    the secret config field `secret_note`);
    "slow" (sleeps `slow_seconds` after writing, checking for a pause every 0.1 s; with
    `mid_unit_file` it first writes "unit:attempt" there, so a test knows the unit is
    mid-flight); "slow:K" (slow on its first K attempts); "crash" (kills its own worker
    process with SIGKILL after writing, as a segfault or the kernel's OOM killer would).
    Until
    `rate_limited_until` (ISO time) every unit is rate limited. The job is done after
    `units` units, never when `units` is 0."""
    config: dict[str, Any] = ctx.config
    unit = int(ctx.cursor.get("unit", 0))
    script = config.get("script", [])
    action = script[unit] if unit < len(script) else "ok"
    if config.get("rate_limited_until"):
        left = (datetime.fromisoformat(config["rate_limited_until"]) - ctx.now()).total_seconds()
        if left > 0:
            raise RateLimited("injected 429", retry_after=left)
    if action == "error" or (action.startswith("error:") and
                             ctx.error_count < int(action.split(":")[1])):
        raise ProviderError(f"injected error in unit {unit}", code="injected")
    if action == "auth":  # a careless provider that puts its secrets in its message
        raise AuthError(f"the key {ctx.credentials.get('api_key')} was refused (note: "
                        f"{config.get('secret_note')})", code="auth")
    if action == "fatal":
        raise ConfigError(f"injected fatal error in unit {unit}", code="injected_fatal")
    rows = int(config.get("rows_per_unit", 1))
    messages = [
        OutMessage(dedupe_key=f"{ctx.config.get('key', 'f')}:{unit}:{n}", event_time=ctx.now(),
                   payload={"unit": unit, "n": n})
        for n in range(rows)
    ]
    added, omitted = ctx.sink.write(config.get("stream", "faults"), messages)
    if action == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "slow" or (action.startswith("slow:") and
                            ctx.error_count < int(action.split(":")[1])):
        if config.get("mid_unit_file"):  # tells a test the unit is written and waiting
            Path(config["mid_unit_file"]).write_text(f"{unit}:{ctx.error_count}")
        deadline = time.monotonic() + float(config.get("slow_seconds", 5))
        while time.monotonic() < deadline and not ctx.should_stop():
            time.sleep(0.1)
    units = int(config.get("units", 1))
    done = units > 0 and unit + 1 >= units
    return WorkResult(added=added, omitted=omitted, cursor={"unit": unit + 1}, done=done,
                      more_now=bool(config.get("more_now", True)) and not done,
                      message=f"unit {unit}: {action}")


def run_noop(ctx: RunContext) -> WorkResult:
    """Does nothing and is done: the engine's own overhead, for the benchmark."""
    return WorkResult(done=True, message="no-op")


# Every kind of field the wizard's schema forms handle, for their tests.
SHOWCASE_SCHEMA = {
    "type": "object",
    "required": ["title", "limits"],
    "x-order": ["title", "count", "ratio", "enabled", "mode", "channels", "ids", "limits",
                "endpoint", "token"],
    "properties": {
        "title": {"type": "string", "title": "Title", "maxLength": 40, "default": "Hello",
                  "description": "Help text for the title."},
        "count": {"type": "integer", "title": "Count", "minimum": 1, "maximum": 10,
                  "default": 3},
        "ratio": {"type": "number", "title": "Ratio", "minimum": 0, "maximum": 1},
        "enabled": {"type": "boolean", "title": "Enabled", "default": True},
        "mode": {"type": "string", "title": "Mode", "enum": ["fast", "safe"],
                 "x-enum-labels": ["Fast", "Safe"], "default": "safe"},
        "channels": {"type": "array", "title": "Channels", "uniqueItems": True,
                     "items": {"type": "string", "enum": ["email", "sms", "push"]}},
        "ids": {"type": "array", "title": "Ids", "items": {"type": "integer"}, "maxItems": 3},
        "limits": {"type": "object", "title": "Limits", "required": ["daily"],
                   "properties": {
                       "daily": {"type": "integer", "title": "Daily", "minimum": 1},
                       "note": {"type": "string", "title": "Note", "default": "n/a"}}},
        # Where the token would go: change it and the token must be entered again.
        "endpoint": {"type": "string", "title": "Endpoint", "x-destination": True},
        "token": {"type": "string", "title": "Token", "writeOnly": True, "minLength": 4},
    },
}


PROVIDER = Provider(
    key="faults",
    name="Fault injection (tests only)",
    category="Testing",
    description="Scripted errors, rate limits and slow units for the engine's own tests.",
    logo="files.svg",
    auth_methods=(NO_AUTH, AuthMethod(
        "api_key", "API key", kind="api_key",
        schema={"type": "object", "required": ["api_key"],
                "properties": {"api_key": {"type": "string", "title": "API key",
                                           "writeOnly": True}}})),
    job_types=(
        JobType(key="script", name="Scripted units", kind="import",
                description="Follows a script of unit outcomes.",
                config_schema={"type": "object", "properties": {
                    # A secret in the job's own configuration: shown as set, never shown.
                    "secret_note": {"type": "string", "writeOnly": True}}},
                run=run_script, queue="default"),
        JobType(key="noop", name="No-op", kind="import", description="Does nothing.",
                config_schema={"type": "object"}, run=run_noop, queue="default"),
        JobType(key="showcase", name="Form showcase", kind="enrichment",
                description="Every kind of form field.", config_schema=SHOWCASE_SCHEMA,
                run=run_noop, queue="default"),
    ),
)
