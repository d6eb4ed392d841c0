"""Amazon S3: import CSV / NDJSON files from a bucket, export an audience as CSV objects.

Authorization ("Access key"): an access key id, its secret access key (writeOnly), the
region, the bucket and, optionally, an endpoint URL (an S3-compatible service). The bucket
belongs to the authorization, not to a job, because (1) with AWS's virtual-hosted
addressing the bucket is part of the host the signed requests go to
(<bucket>.s3.<region>.amazonaws.com), so it decides where the credentials are sent and is
marked `x-destination` like the endpoint URL; (2) "Test connection" can then check the
very bucket the jobs use (HeadBucket), which works for keys scoped to one bucket that may
not list all buckets. PORTAL_S3_ENDPOINT_URL, read at call time, overrides the endpoint
(tests point it at a loopback server); with an endpoint, path-style addressing is used so
the only host contacted is the endpoint's.

Outbound policy: boto3 does not use our HTTP clients, so the endpoint URL is checked with
`outbound.check_url` before the client is made, and a `before-send` hook checks the URL of
EVERY request the client is about to send (resolving its host and checking each address)
and refuses it otherwise. botocore's urllib3 then resolves the name again to connect: for
a host name there is a short DNS-rebinding window this module cannot close (an endpoint
given as an IP address has none). Proxies from the environment are not used. botocore's
own retries are off (one attempt), so SlowDown reaches the runner, which sleeps.

Errors: InvalidAccessKeyId / SignatureDoesNotMatch / AccessDenied / 403 -> AuthError;
SlowDown / 503 / throttling -> RateLimited (Retry-After if sent, else 30 s); NoSuchBucket
-> ConfigError naming the bucket; no secret ever appears in a message (redacted).

Job types: "Import files" (see run_import) and "Export audience to CSV" (run_export).
docs/providers/s3.md describes both, their cursors and limits.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import re
import threading
from collections.abc import Iterator
from datetime import UTC
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from providers import outbound, redaction
from providers.base import (
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
    audience_field,
)
from providers.files import (
    DELIMITERS,
    MAX_COLUMNS,
    STREAM_PATTERN,
    RecordError,
    parse_event_time,
    parse_json_line,
)

ENDPOINT_ENV = "PORTAL_S3_ENDPOINT_URL"
DEFAULT_RETRY_AFTER = 30.0
SAMPLE_FILES = 5  # files read for the timestamp field menu
SAMPLE_ROWS = 20  # rows of each
SUFFIXES = (".csv", ".tsv", ".txt", ".ndjson", ".jsonl", ".json")
AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied",
              "InvalidToken", "ExpiredToken", "AuthorizationHeaderMalformed"}
SLOW_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
              "ServiceUnavailable", "503"}
BUCKET_PATTERN = "^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
REGION_PATTERN = "^[a-z]{2}(-[a-z0-9]+){1,3}$"

AUTH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["access_key_id", "secret_access_key", "region", "bucket"],
    "additionalProperties": False,
    "x-order": ["access_key_id", "secret_access_key", "region", "bucket", "endpoint_url"],
    "properties": {
        "access_key_id": {
            "type": "string", "title": "Access key ID", "pattern": "^[A-Za-z0-9]{4,128}$",
            "x-pattern-message": "Enter the access key ID: letters and digits (AKIA...).",
        },
        "secret_access_key": {
            "type": "string", "title": "Secret access key", "writeOnly": True,
            "minLength": 1, "maxLength": 256,
            "description": "Never sent: it signs each request (AWS Signature Version 4).",
        },
        "region": {
            "type": "string", "title": "Region", "default": "us-east-1",
            "pattern": REGION_PATTERN,
            "x-pattern-message": "Enter an AWS region such as us-east-1 or eu-west-2.",
        },
        "bucket": {
            "type": "string", "title": "Bucket", "pattern": BUCKET_PATTERN,
            "x-pattern-message": "Enter a bucket name: 3-63 lower-case letters, digits, "
            "dots and hyphens.",
            "description": "The bucket the jobs read and write. Part of the address the "
            "signed requests go to, so changing it asks for the secret again.",
            "x-destination": True,
        },
        "endpoint_url": {
            "type": "string", "title": "Endpoint URL (optional)", "default": "",
            "description": "Only for S3-compatible services (MinIO, R2...): their address. "
            "Leave empty for Amazon S3.",
            "pattern": "^(https?://[^\\s/?#@]+([/?#][^\\s]*)?)?$",
            "x-pattern-message": "Enter an address such as https://s3.example.com, with no "
            "spaces, user name or password.",
            "x-destination": True,
        },
    },
}

AUTH_METHODS = (AuthMethod("access_key", "Access key", kind="key_secret", schema=AUTH_SCHEMA,
                           help="An IAM access key allowed to list, read and write the "
                           "bucket."),)


# -- The client -----------------------------------------------------------------------------


def _text(credentials: dict[str, Any], name: str, label: str) -> str:
    value = credentials.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"The connection has no {label}; edit the connection and enter it.",
                          code="missing_credentials")
    return value.strip()


def endpoint(credentials: dict[str, Any]) -> str | None:
    """The endpoint URL: PORTAL_S3_ENDPOINT_URL, the connection's, or None (Amazon S3)."""
    url = (os.environ.get(ENDPOINT_ENV) or credentials.get("endpoint_url") or "").strip()
    return url.rstrip("/") or None


def _check_request(request: Any, **_: Any) -> None:
    """botocore before-send hook: every request passes the outbound policy."""
    outbound.check_url(request.url)


_SESSIONS: dict[str, boto3.session.Session] = {}
_SESSION_LOCK = threading.Lock()


def _session() -> boto3.session.Session:
    """One boto3 session per process (loading the service model is the slow part); the
    credentials are given to each client, never kept in the session."""
    with _SESSION_LOCK:
        if "s3" not in _SESSIONS:
            _SESSIONS["s3"] = boto3.session.Session()
        return _SESSIONS["s3"]


class Bucket:
    """A boto3 client for one connection's bucket, with errors in our words."""

    def __init__(self, credentials: dict[str, Any]):
        self.name = _text(credentials, "bucket", "bucket")
        self.secrets = [_text(credentials, "secret_access_key", "secret access key")]
        key_id = _text(credentials, "access_key_id", "access key ID")
        region = str(credentials.get("region") or "us-east-1").strip()
        url = endpoint(credentials)
        if url:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError("The connection's endpoint URL must start with http:// or "
                                  "https:// and name a host; edit the connection.",
                                  code="bad_url")
            outbound.refuse_userinfo(parts.username, parts.password)
            self.host = parts.netloc
        else:
            self.host = f"{self.name}.s3.{region}.amazonaws.com"
        config = Config(
            region_name=region, connect_timeout=10, read_timeout=30,
            retries={"total_max_attempts": 1, "mode": "standard"},
            proxies={}, s3={"addressing_style": "path" if url else "virtual"},
            user_agent_extra="jobs-portal/0.1",
        )
        try:
            self.client = _session().client(
                "s3", endpoint_url=url, config=config, region_name=region,
                aws_access_key_id=key_id, aws_secret_access_key=self.secrets[0])
        except (ValueError, BotoCoreError):
            raise ConfigError("The connection's region or endpoint URL is not valid; edit "
                              "the connection.", code="bad_url") from None
        self.client.meta.events.register("before-send.s3", _check_request)

    def call(self, operation: str, **params: Any) -> Any:
        try:
            return getattr(self.client, operation)(Bucket=self.name, **params)
        except ClientError as exc:
            raise self._error(exc) from None
        except outbound.OutboundRefused:
            raise
        except BotoCoreError as exc:
            raise ProviderError(
                f"Could not reach S3 at {self.host} ({type(exc).__name__}); it will be "
                "tried again.", code="unreachable") from None

    def _error(self, exc: ClientError) -> ProviderError:
        error = exc.response.get("Error", {})
        meta = exc.response.get("ResponseMetadata", {})
        code = str(error.get("Code") or "")
        status = int(meta.get("HTTPStatusCode") or 0)
        if code == "NoSuchBucket" or (status == 404 and exc.operation_name == "HeadBucket"):
            return ConfigError(f"S3 has no bucket '{self.name}' (at {self.host}); check the "
                               "connection's bucket and region.", code="no_such_bucket")
        if code in AUTH_CODES or status == 403:
            return AuthError(redaction.redact(
                f"S3 refused the credentials ({code or status}) for bucket '{self.name}'. "
                "Check the access key, its secret and its permissions on the bucket.",
                self.secrets, mask="[hidden]"))
        if code in SLOW_CODES or status in (429, 503):
            headers = meta.get("HTTPHeaders") or {}
            try:
                wait = max(0.0, float(headers.get("retry-after", "")))
            except ValueError:
                wait = DEFAULT_RETRY_AFTER
            return RateLimited(f"S3 asks us to slow down ({code or status}); trying again in "
                               f"{wait:.0f} seconds.", retry_after=wait)
        safe = code if re.fullmatch(r"[A-Za-z0-9.]{1,64}", code) else str(status)
        return ProviderError(f"S3 answered {safe} for bucket '{self.name}'.",
                             code=f"s3_{status or 'error'}")

    def objects(self, prefix: str) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            params: dict[str, Any] = {"Prefix": prefix, "MaxKeys": 1000}
            if token:
                params["ContinuationToken"] = token
            page = self.call("list_objects_v2", **params)
            yield from page.get("Contents", [])
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")


def check(method_key: str, credentials: dict[str, Any]) -> str:
    """Test connection: HEAD the bucket."""
    if method_key != "access_key":
        raise ConfigError(f"S3 has no authorization method {method_key!r}.")
    bucket = Bucket(credentials)
    bucket.call("head_bucket")
    return f"Bucket '{bucket.name}' is reachable at {bucket.host}"


# -- Reading files ------------------------------------------------------------------------


class _Body(io.RawIOBase):
    """A botocore StreamingBody as a raw stream, read a chunk at a time."""

    def __init__(self, body: Any):
        self.body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.body.close()
        super().close()


def _lines(stream: Any, key: str) -> Iterator[str]:
    """Decoded lines (with their endings) of a binary stream, gunzipped when it is gzip."""
    buffered = io.BufferedReader(_Body(stream), buffer_size=64 * 1024)
    raw: Any = gzip.GzipFile(fileobj=buffered) if buffered.peek(2)[:2] == b"\x1f\x8b" \
        else buffered
    number = 0
    try:
        while line := raw.readline(1024 * 1024 * 16):
            number += 1
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                raise RecordError(number, "is not valid UTF-8") from None
            yield text.removeprefix("\ufeff") if number == 1 else text
    except (OSError, EOFError) as exc:  # a broken gzip stream
        raise RecordError(number + 1, f"cannot be decompressed ({type(exc).__name__})") \
            from None
    finally:
        buffered.close()


def file_format(key: str, first: str) -> str:
    name = key.lower().removesuffix(".gz")
    if name.endswith((".ndjson", ".jsonl", ".json")):
        return "ndjson"
    if name.endswith((".csv", ".tsv", ".txt")):
        return "csv"
    return "ndjson" if first.lstrip()[:1] == "{" else "csv"


def rows(stream: Any, key: str, delimiter: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number from 1, record) of a CSV or NDJSON object, read as a stream."""
    lines = _lines(stream, key)
    first = next(lines, "")
    if not first.strip():
        return
    fmt = file_format(key, first)

    def chain() -> Iterator[str]:
        yield first
        yield from lines

    if fmt == "ndjson":
        number = 0
        for line, text in enumerate(chain(), start=1):
            if not text.strip():
                continue
            value = parse_json_line(text, line)
            if not isinstance(value, dict):
                raise RecordError(line, "is not a JSON object")
            number += 1
            yield number, value
        return
    reader = csv.reader(chain(), delimiter=delimiter, strict=True)
    try:
        header = [name.strip() for name in next(reader)]
        if len(header) > MAX_COLUMNS or len(set(header)) != len(header) or "" in header:
            raise RecordError(1, "the header row has a blank or repeated column name, or "
                                 f"more than {MAX_COLUMNS:,} columns")
        number = 0
        for row in reader:
            if not row or row == [""]:
                continue
            number += 1
            if len(row) != len(header):
                raise RecordError(reader.line_num, f"has {len(row)} fields but the header "
                                                   f"has {len(header)}")
            yield number, dict(zip(header, row, strict=True))
    except csv.Error as exc:
        raise RecordError(reader.line_num, f"cannot be read as CSV ({exc})") from None


def _importable(item: dict[str, Any]) -> bool:
    key = item["Key"]
    return not key.endswith("/") and key.lower().removesuffix(".gz").endswith(SUFFIXES)


def _stamp(item: dict[str, Any]) -> str:
    moment = item["LastModified"]
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.isoformat()


def sample_fields(credentials: dict[str, Any]) -> list[tuple[str, str]]:
    """Option source: the fields named in the first rows of the bucket's first files."""
    bucket = Bucket(credentials)
    found: dict[str, None] = {}
    files = 0
    for item in bucket.objects(""):
        if not _importable(item):
            continue
        body = bucket.call("get_object", Key=item["Key"])["Body"]
        try:
            for number, record in rows(body, item["Key"], ","):
                found.update(dict.fromkeys(record))
                if number >= SAMPLE_ROWS:
                    break
        except RecordError:
            pass
        finally:
            body.close()
        files += 1
        if files >= SAMPLE_FILES or len(found) > MAX_COLUMNS:
            break
    return [("", "None: the time of import")] + [(name, name) for name in found]


def _dedupe(bucket: str, key: str, etag: str, row: int) -> str:
    digest = hashlib.sha256(f"{bucket}\n{key}\n{etag}".encode()).hexdigest()[:48]
    return f"s3:{digest}:{row}"


def run_import(ctx: RunContext) -> WorkResult:
    """One unit: up to batch_size rows of the next file in (LastModified, Key) order.

    The cursor: "after" = [modified, key] of the last file read whole; "file" = the file
    being read ({key, etag, modified, row}: rows done). Rows already done are skipped,
    not written, when a unit resumes inside a file (the object is streamed again)."""
    config = ctx.config
    bucket = Bucket(ctx.credentials or {})
    cursor = json.loads(json.dumps(ctx.cursor or {}))  # a copy: nothing shared is changed
    prefix = config.get("prefix") or ""
    current = cursor.get("file")
    if not current:
        after = tuple(cursor.get("after") or ("", ""))
        pending = [item for item in bucket.objects(prefix) if _importable(item)
                   and (_stamp(item), item["Key"]) > after]
        if not pending:
            cursor.pop("file", None)
            return WorkResult(cursor=cursor, message=f"No new files under "
                              f"s3://{bucket.name}/{prefix}")
        item = min(pending, key=lambda entry: (_stamp(entry), entry["Key"]))
        current = {"key": item["Key"], "etag": str(item.get("ETag", "")).strip('"'),
                   "modified": _stamp(item), "row": 0}
    key, done_rows = current["key"], int(current["row"])
    field = config.get("timestamp_field") or ""
    now = ctx.now()
    response = bucket.call("get_object", Key=key)
    body = response["Body"]
    batch: list[OutMessage] = []
    finished = True
    try:
        for number, record in rows(body, key, config.get("delimiter") or ","):
            if number <= done_rows:
                continue
            if len(batch) >= ctx.batch_size:
                finished = False
                break
            event_time = now
            if field:
                if field not in record:
                    raise RecordError(number, f"has no field '{field}' (the timestamp field)")
                try:
                    event_time = parse_event_time(record[field], field)
                except ValueError as exc:
                    raise RecordError(number, str(exc)) from None
            batch.append(OutMessage(_dedupe(bucket.name, key, current["etag"], number),
                                    event_time, record))
    except RecordError as exc:
        raise ConfigError(f"s3://{bucket.name}/{key}, {exc}", code="bad_input") from None
    finally:
        body.close()
    added, omitted = ctx.sink.write(config["stream"], batch)
    current["row"] = done_rows + len(batch)
    if finished:
        cursor["after"] = [current["modified"], key]
        cursor.pop("file", None)
        cursor["files"] = int(cursor.get("files", 0)) + 1
        message = f"Read s3://{bucket.name}/{key} to its end: {current['row']:,} rows"
    else:
        cursor["file"] = current
        message = f"Rows {done_rows + 1:,}–{current['row']:,} of s3://{bucket.name}/{key}"
    message += f" into stream '{config['stream']}'"
    if omitted:
        message += f"; {omitted:,} already there were skipped"
    return WorkResult(added=added, omitted=omitted, cursor=cursor, more_now=True,
                      message=message)


# -- Export -------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def run_export(ctx: RunContext) -> WorkResult:
    """One unit: the next window of the audience's members as one CSV part object,
    <prefix>/<audience>/<run time>/part-NNNNN.csv; when the audience is done, a
    _manifest.json with the counts. A unit retried writes the same part again
    (overwrites), so nothing is duplicated."""
    config = ctx.config
    bucket = Bucket(ctx.credentials or {})
    audience = config["audience"]
    identifier = config.get("identifier") or "email"
    size = max(1, min(int(config.get("batch_size") or 1000), 50_000))
    cursor = dict(ctx.cursor or {})
    run = cursor.get("run") or ctx.now().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    part = int(cursor.get("part", 0)) + 1
    after = int(cursor.get("after_profile_id", 0))
    page = ctx.source.audience_members(audience, identifier=identifier,
                                       after_profile_id=after, limit=size)
    base = "/".join(piece.strip("/") for piece in (config.get("prefix") or "", audience, run)
                    if piece.strip("/"))
    counts = (int(cursor.get("added", 0)) + len(page.members),
              int(cursor.get("omitted", 0)) + page.omitted)
    message = f"Audience '{audience}': "
    if page.members:
        columns = sorted({name for member in page.members for name in member.fields}
                         - {identifier})
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow([identifier, "profile_id", *columns])
        for member in page.members:
            writer.writerow([member.identifier, member.profile_id,
                             *(_cell(member.fields.get(name)) for name in columns)])
        name = f"{base}/part-{part:05d}.csv"
        bucket.call("put_object", Key=name, Body=text.getvalue().encode(),
                    ContentType="text/csv; charset=utf-8")
        message += f"{len(page.members):,} members written to s3://{bucket.name}/{name}; "
    else:
        part -= 1
    message += f"{page.omitted:,} omitted (no {identifier})"
    if page.complete:
        manifest = {"audience": audience, "identifier": identifier, "parts": part,
                    "members": counts[0], "omitted": counts[1], "run": run}
        bucket.call("put_object", Key=f"{base}/_manifest.json",
                    Body=json.dumps(manifest).encode(), ContentType="application/json")
        message += f"; export complete: {part} part(s), {counts[0]:,} members"
        next_cursor: dict[str, Any] = {"after_profile_id": 0}
    else:
        next_cursor = {"run": run, "part": part, "after_profile_id": page.through,
                       "added": counts[0], "omitted": counts[1]}
    return WorkResult(added=len(page.members), omitted=page.omitted, cursor=next_cursor,
                      more_now=not page.complete, message=message)


IMPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["stream"],
    "additionalProperties": False,
    "x-order": ["prefix", "timestamp_field", "stream", "delimiter"],
    "properties": {
        "prefix": {
            "type": "string", "title": "Key prefix", "default": "", "maxLength": 1024,
            "description": "Only objects whose key starts with this are read (e.g. "
            "exports/2026/). Files ending .csv, .tsv, .txt, .ndjson, .jsonl or .json, "
            "optionally .gz, are imported.",
        },
        "timestamp_field": {
            "type": "string", "title": "Timestamp field", "default": "",
            "description": "The field that holds each row's event time (ISO 8601 or Unix "
            "seconds/milliseconds). Without one, rows get the time of import.",
            "x-options": "provider:fields",
        },
        "stream": {
            "type": "string", "title": "Target stream", "pattern": STREAM_PATTERN,
            "default": "default",
            "description": "The stream the rows land in: lower-case letters, digits, - and _.",
        },
        "delimiter": {
            "type": "string", "title": "CSV delimiter", "enum": list(DELIMITERS),
            "x-enum-labels": list(DELIMITERS.values()), "default": ",",
            "description": "Ignored for NDJSON.",
        },
    },
}

EXPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["audience"],
    "additionalProperties": False,
    "x-order": ["audience", "identifier", "prefix", "batch_size"],
    "properties": {
        "audience": audience_field("Each run writes the whole audience as it is then."),
        "identifier": {
            "type": "string", "title": "Identifier field", "default": "email",
            "pattern": "^[^\\s]{1,255}$", "x-pattern-message": "Enter a field name, without "
            "spaces.",
            "description": "The first column. Members without it are omitted (counted).",
        },
        "prefix": {
            "type": "string", "title": "Key prefix", "default": "exports", "maxLength": 512,
            "description": "Objects are written as <prefix>/<audience>/<run time>/"
            "part-00001.csv, ...; then _manifest.json.",
        },
        "batch_size": {
            "type": "integer", "title": "Members per part", "minimum": 1,
            "maximum": 50_000, "default": 1000,
            "description": "At most this many members go in one CSV object (1–50,000).",
        },
    },
}

PROVIDER = Provider(
    key="s3",
    name="Amazon S3",
    category="Files",
    description="Import CSV and NDJSON files from an S3 bucket; export audiences to it as "
    "CSV.",
    logo="s3.svg",
    auth_methods=AUTH_METHODS,
    job_types=(
        JobType(
            key="import", name="Import files", kind="import",
            description="Reads new CSV and NDJSON files (gzip too) under a prefix of the "
            "bucket, oldest first, and writes each row to a stream; each run reads only "
            "the files added since the last.",
            config_schema=IMPORT_SCHEMA, run=run_import,
            default_cadence="Every hour",
            default_schedule={"kind": "interval", "every_minutes": 60},
            queue="backfill", option_sources={"fields": sample_fields},
        ),
        JobType(
            key="export", name="Export audience to CSV", kind="export",
            description="Writes an audience's members as CSV objects in the bucket, one "
            "folder per run.",
            config_schema=EXPORT_SCHEMA, run=run_export,
            default_cadence="Every 24 hours",
            default_schedule={"kind": "interval", "every_minutes": 1440},
        ),
    ),
    check=check,
)
