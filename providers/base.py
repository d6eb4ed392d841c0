"""The provider contract. Imports neither flask nor portal: providers are plain Python.

A provider declares who it talks to (key, name, category, logo), how it authorizes and
which job types it offers. A job type declares its config as JSON Schema and a
`run(ctx) -> WorkResult` that does one unit of work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

KINDS = ("import", "export", "enrichment")
QUEUES = ("realtime", "default", "backfill")


class ProviderError(Exception):
    """A unit of work went wrong; retried with backoff unless a subclass says otherwise."""

    code = "provider_error"
    retryable = True

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        if code:
            self.code = code


class ConfigError(ProviderError):
    """The job's configuration or input cannot work as it is; retrying will not help."""

    code = "config_error"
    retryable = False


class AuthError(ProviderError):
    """The provider refused the credentials."""

    code = "auth_error"


class RateLimited(ProviderError):
    """The provider asks us to hold back for `retry_after` seconds."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class OutMessage:
    """A message an import writes to a stream."""

    dedupe_key: str
    event_time: datetime
    payload: dict[str, Any]


@dataclass(frozen=True)
class StoredFile:
    """An uploaded file, as a job sees it."""

    filename: str
    format: str
    sha256: str
    content: bytes


@dataclass
class WorkResult:
    """What one unit of work did, and where the next one starts."""

    added: int = 0
    removed: int = 0
    omitted: int = 0
    cursor: dict[str, Any] | None = None
    done: bool = False
    more_now: bool = False
    message: str = ""

    @property
    def counts(self) -> dict[str, int]:
        return {"added": self.added, "removed": self.removed, "omitted": self.omitted}


class Sink(Protocol):
    def write(self, stream: str, messages: Iterable[OutMessage]) -> tuple[int, int]:
        """Write messages to a stream; returns (added, omitted as duplicates)."""


class Files(Protocol):
    def get(self, upload_id: int) -> StoredFile:
        """The uploaded file with this id; raises ConfigError when it is gone."""


class RunContext(Protocol):
    config: dict[str, Any]
    credentials: dict[str, Any]
    cursor: dict[str, Any]
    sink: Sink
    files: Files
    batch_size: int
    error_count: int  # errors in a row before this attempt (0 on a first try)

    def log(self, message: str) -> None: ...

    def should_stop(self) -> bool: ...

    def now(self) -> datetime: ...


@dataclass(frozen=True)
class AuthMethod:
    key: str
    name: str
    schema: dict[str, Any] | None = None


NO_AUTH = AuthMethod("none", "No authorization needed")


@dataclass(frozen=True)
class JobType:
    key: str
    name: str
    kind: str
    description: str
    config_schema: dict[str, Any]
    run: Callable[[RunContext], WorkResult]
    default_cadence: str = "Runs once"
    queue: str = "default"
    recurring: bool = True  # False: one pass over its input, so no cadence to choose

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"job type {self.key}: kind must be one of {KINDS}")
        if self.queue not in QUEUES:
            raise ValueError(f"job type {self.key}: queue must be one of {QUEUES}")


@dataclass(frozen=True)
class Provider:
    key: str
    name: str
    category: str
    description: str
    logo: str
    auth_methods: tuple[AuthMethod, ...]
    job_types: tuple[JobType, ...] = field(default_factory=tuple)

    def job_type(self, key: str) -> JobType | None:
        return next((jt for jt in self.job_types if jt.key == key), None)

    @property
    def needs_authorization(self) -> bool:
        return all(method.key != NO_AUTH.key for method in self.auth_methods)
