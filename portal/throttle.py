"""Sign-in throttling: attempts are counted per account (the email as typed, normalized)
and per client address, in the portal's Redis through Flask-Limiter. Signing in resets
the account's count (not the address's).

An attempt is counted before its password is checked, in the same step that checks the
limits (`reserve`), so attempts sent in parallel cannot all pass a check made before any
of them was counted. While either count is over its limits (PORTAL_LOGIN_LIMIT_ACCOUNT,
PORTAL_LOGIN_LIMIT_ADDRESS, in the `limits` notation such as "5 per minute; 20 per hour"),
sign-in is refused without checking the password, saying how long to wait. Redis being
unreachable must not lock everyone out: the check then lets the attempt through and logs a
warning.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import time
from collections.abc import Iterable

from flask import Flask, current_app
from limits import RateLimitItem, parse_many
from limits.errors import StorageError
from redis.exceptions import RedisError

from portal.config import ConfigError
from portal.extensions import limiter
from portal.queues import redis_connection

log = logging.getLogger(__name__)

_SETTINGS = {"account": "PORTAL_LOGIN_LIMIT_ACCOUNT", "address": "PORTAL_LOGIN_LIMIT_ADDRESS"}
# What an unreachable Redis raises, through the limits package or straight from redis-py.
_STORAGE_ERRORS = (StorageError, RedisError, OSError)


def storage_uri(redis_url: str) -> str:
    """The `limits` storage URI for the portal's REDIS_URL (it writes a socket path as
    redis+unix://)."""
    if redis_url.startswith("unix://"):
        return "redis+unix://" + redis_url[len("unix://"):]
    return redis_url


def init_app(app: Flask) -> None:
    """Bind Flask-Limiter to the portal's Redis and check the limit settings."""
    app.config.setdefault("RATELIMIT_STORAGE_URI", storage_uri(app.config["REDIS_URL"]))
    for name in _SETTINGS.values():
        try:
            parse_many(app.config[name])
        except ValueError:
            raise ConfigError(f"{name} must be limits like '5 per minute; 20 per hour', not "
                              f"{app.config[name]!r}.") from None
    limiter.init_app(app)
    # The portal declares no route limits: it asks limiter.limiter itself where it counts
    # (sign-in). Flask-Limiter's own check before every request would find nothing to
    # limit, at a cost on every poll, so it is taken off again.
    checks = app.before_request_funcs.get(None, [])
    checks[:] = [check for check in checks
                 if getattr(check, "__func__", None) is not type(limiter)._check_request_limit]


def _keys(email: str, address: str | None) -> dict[str, str]:
    # The email is hashed: Redis needs no one's address, and the key's length stays fixed.
    account = hashlib.sha256(email.strip().lower().encode()).hexdigest()
    return {"account": account, "address": _address_key(address)}


def _address_key(address: str | None) -> str:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return address or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:192.0.2.1 is 192.0.2.1
            return str(ip.ipv4_mapped)
        # One IPv6 host usually holds a whole /64: count the network, not each address.
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _limits(scope: str) -> list[RateLimitItem]:
    return parse_many(current_app.config[_SETTINGS[scope]])


def retry_after(email: str, address: str | None) -> int:
    """Seconds until this account and this address may try to sign in again (0: now)."""
    try:
        return _seconds_left((item, "sign-in", scope, key)
                             for scope, key in _keys(email, address).items()
                             for item in _limits(scope))
    except _STORAGE_ERRORS as exc:
        log.warning("Sign-in throttling is off for this attempt: Redis is unreachable (%s).",
                     exc)
        return 0


def _seconds_left(windows: Iterable[tuple]) -> int:
    """Seconds until every (limit, identifiers...) window has room again (0: now)."""
    wait = 0.0
    for item, *identifiers in windows:
        if not limiter.limiter.test(item, *identifiers):
            reset_at, _ = limiter.limiter.get_window_stats(item, *identifiers)
            wait = max(wait, reset_at - time.time(), 1)
    return math.ceil(wait)


def reserve(email: str, address: str | None) -> int:
    """Count a sign-in attempt against the account and the address, and say how many
    seconds to wait when it is over a limit (0: go on and check the password).

    Each hit checks and counts in one step in Redis, so of many attempts at once only as
    many as the limits allow get through, however they interleave."""
    refused = False
    try:
        for scope, key in _keys(email, address).items():
            for item in _limits(scope):
                # Every limit is hit, even past a refusal: trying on through a short wait
                # runs into the longer limits.
                if not limiter.limiter.hit(item, "sign-in", scope, key):
                    refused = True
    except _STORAGE_ERRORS as exc:
        log.warning("Sign-in throttling is off for this attempt: Redis is unreachable (%s).",
                    exc)
        return 0
    return max(retry_after(email, address), 1) if refused else 0


def first_refusal(email: str, address: str | None, wait: int) -> bool:
    """True for the first refused attempt of a wait, per account and per address over its
    limits: the audit log records that one, not each of the flood that may follow (refused
    attempts cost no password check, so one client can send hundreds a second)."""
    first, now = False, time.time()
    try:
        redis = redis_connection()
        for scope, key in _keys(email, address).items():
            if all(limiter.limiter.test(item, "sign-in", scope, key) for item in _limits(scope)):
                continue  # not this one's limits
            # The end of the wait is kept as a time of the limiter's clock (this process's),
            # not as Redis's expiry, so both agree on when the next wait begins.
            name = f"portal:sign-in-refused:{scope}:{key}"
            until = redis.get(name)
            if until is None or float(until) <= now:
                redis.set(name, now + wait, ex=wait + 60)
                first = True
    except _STORAGE_ERRORS as exc:
        log.warning("A refused sign-in is audited anyway: Redis is unreachable (%s).", exc)
        return True
    return first


def count_attempt(email: str, address: str | None) -> None:
    """Count a failed or throttled sign-in against the account and the address."""
    try:
        for scope, key in _keys(email, address).items():
            for item in _limits(scope):
                limiter.limiter.hit(item, "sign-in", scope, key)
    except _STORAGE_ERRORS as exc:
        log.warning("A failed sign-in was not counted: Redis is unreachable (%s).", exc)


def clear_account(email: str) -> None:
    """Forget the account's failed attempts once its password was given (not the address's:
    signing in to one's own account must not reset the count of guesses at others)."""
    key = _keys(email, None)["account"]
    try:
        for item in _limits("account"):
            limiter.limiter.clear(item, "sign-in", "account", key)
    except _STORAGE_ERRORS as exc:
        log.warning("Failed sign-ins were not reset: Redis is unreachable (%s).", exc)


# --- API tokens -------------------------------------------------------------------------
# Failed token attempts are counted per client address under the address limits of sign-in
# (PORTAL_LOGIN_LIMIT_ADDRESS): a token is a password that a script sends.

def token_retry_after(address: str | None) -> int:
    """Seconds until this address may present a token again after too many bad ones."""
    key = _address_key(address)
    try:
        return _seconds_left((item, "api-token", key) for item in _limits("address"))
    except _STORAGE_ERRORS as exc:
        log.warning("API token throttling is off for this request: Redis is unreachable (%s).",
                    exc)
        return 0


def count_token_failure(address: str | None) -> None:
    """Count a refused token against the client address."""
    key = _address_key(address)
    try:
        for item in _limits("address"):
            limiter.limiter.hit(item, "api-token", key)
    except _STORAGE_ERRORS as exc:
        log.warning("A refused API token was not counted: Redis is unreachable (%s).", exc)


def first_token_refusal(address: str | None, wait: int) -> bool:
    """True for the first throttled API request of a wait from this address: the audit log
    records that one, not the flood that may follow."""
    now, key = time.time(), _address_key(address)
    try:
        redis = redis_connection()
        name = f"portal:api-token-refused:{key}"
        until = redis.get(name)
        if until is None or float(until) <= now:
            redis.set(name, now + wait, ex=wait + 60)
            return True
    except _STORAGE_ERRORS as exc:
        log.warning("A throttled API request is audited anyway: Redis is unreachable (%s).",
                    exc)
        return True
    return False
