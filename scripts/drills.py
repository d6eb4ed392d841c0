"""Fault drills (docs/RELIABILITY.md): the real worker and dispatcher processes under faults,
on loopback only, everything private and temporary.

    PYTHONPATH=. .venv/bin/python scripts/drills.py [kill] [redis] [postgres] [disk]

- kill: SIGKILL the worker holding a unit DRILL_KILLS (20) times, each time once a unit is
  proven in flight (the job's lease held and its rows growing since the last recovery);
  a fresh worker is started after each kill. The last DRILL_BULK_KILLS (2) land in the
  bulk import, queued for them.
- redis: FLUSHALL the private Redis mid-run, then stop it and start it again (no snapshot:
  its queues are gone) mid-run.
- postgres: a private PostgreSQL (initdb in a temporary folder, run as the unprivileged
  user `nobody`, on a free loopback port; never the machine's own server), restarted
  mid-run in fast and then immediate shutdown mode. Skipped when there is no initdb.
- disk: the bulk spool folder on a small tmpfs (root only); a bulk upload larger than the
  space left must be refused with 507 and a message through the real API route, leave
  nothing behind, and the portal must take uploads again once space is freed.

The workload: a file import job of DRILL_ROWS (200,000) rows created with
portal.jobs.create_job, and (kill, redis) a bulk API import of DRILL_BULK_ROWS (50,000)
rows through portal.bulk.receive. Each drill prints one JSON line: jobs affected and
recovered, time to recover (fault -> the job writing again), messages expected, found, lost
and duplicated (both must be 0), and tracebacks in the worker and dispatcher logs (none on
SQLite); then a summary. Exits 1 when a drill fails.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flask_migrate import upgrade  # noqa: E402
from redis import Redis  # noqa: E402
from redis.exceptions import RedisError  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from sqlalchemy.exc import DBAPIError  # noqa: E402

from portal import bulk, create_app, tokens  # noqa: E402
from portal.datastore import store_upload  # noqa: E402
from portal.extensions import db  # noqa: E402
from portal.jobs import create_job  # noqa: E402
from portal.models import BulkImport, Job, Message, Stream, User  # noqa: E402
from providers import get_provider  # noqa: E402
from workers import redis_server  # noqa: E402

ROWS = int(os.environ.get("DRILL_ROWS") or 200_000)
BULK_ROWS = int(os.environ.get("DRILL_BULK_ROWS") or 50_000)
KILLS = int(os.environ.get("DRILL_KILLS") or 20)
BULK_KILLS = int(os.environ.get("DRILL_BULK_KILLS") or 2)  # of the KILLS, in the bulk import
LEASE = int(os.environ.get("DRILL_LEASE_SECONDS") or 5)
TIMEOUT = float(os.environ.get("DRILL_TIMEOUT") or 600)  # seconds one drill may take
KEEP_LOGS = os.environ.get("DRILL_LOGS")  # a folder to copy the processes' logs to
DISK_MB = int(os.environ.get("DRILL_DISK_MB") or 8)
BIN = Path(os.environ.get("DRILL_PG_BIN") or "/usr/local/bin")
VAULT_KEYS = "drill:" + "A" * 43 + "="
IMPORT_STREAM, BULK_STREAM = "drill", "drillbulk"
REALTIME_STREAM, REALTIME_BATCH = "drillrealtime", 20  # postgres: collect calls of 20
DRILLS = ("kill", "redis", "postgres", "disk")


def note(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_csv(rows: int, domain: str) -> bytes:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["email", "name", "plan", "ts"])
    for n in range(rows):
        writer.writerow([f"user{n}@{domain}", f"User {n}", ("free", "pro", "team")[n % 3],
                         (start + timedelta(seconds=n)).isoformat()])
    return out.getvalue().encode()


class Fault(RuntimeError):
    pass


# --- The private services ----------------------------------------------------------------

class PrivateRedis:
    """The bundled redis-server on a fixed free loopback port, without a snapshot, so a
    restart loses every queue (the worst case)."""

    def __init__(self, folder: Path):
        self.folder, self.port = folder, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            redis_server.command(self.folder, port=self.port, persist=False),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: _pings(self.url), 10, "Redis did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def _pings(url: str) -> bool:
    try:
        return bool(Redis.from_url(url).ping())
    except RedisError:
        return False


class PrivatePostgres:
    """initdb + pg_ctl from BIN in a temporary folder owned by `nobody` (initdb refuses to
    run as root), listening on a free loopback port only, its socket in that folder."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="drill-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self.as_user = [] if os.geteuid() != 0 else ["runuser", "-u", "nobody", "--"]
        if os.geteuid() == 0:
            shutil.chown(self.folder, "nobody", "nogroup")
        self.folder.chmod(0o700)

    def run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, cwd=self.folder)

    def init(self) -> None:
        self.run(str(BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
                 "--auth=trust", "--no-sync")

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off")
        self.run(str(BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l",
                 str(self.folder / "server.log"), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self.run(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.folder, ignore_errors=True)


# --- One drill's portal: the app, the workers, the dispatcher, the workload ---------------

def wait_until(check, seconds: float, what: str, every: float = 0.1):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise Fault(f"{what} (after {seconds:.0f} s)")


class Portal:
    def __init__(self, folder: Path, database_url: str | None, redis: PrivateRedis):
        self.folder, self.redis = folder, redis
        self.url = database_url or f"sqlite:///{folder}/drill.db"
        self.instance = folder / "instance"
        self.instance.mkdir(mode=0o700)
        settings = {"DATABASE_URL": self.url, "REDIS_URL": redis.url, "SECRET_KEY": "drill",
                    "PORTAL_VAULT_KEYS": VAULT_KEYS, "PORTAL_INSTANCE_PATH": str(self.instance),
                    "PORTAL_LEASE_SECONDS": str(LEASE),
                    "PORTAL_WORKER_HEARTBEAT_SECONDS": "2"}
        self.env = {**os.environ, **settings, "PYTHONPATH": str(ROOT)}
        self.app = create_app({"INSTANCE_PATH": str(self.instance),
                               "SQLALCHEMY_DATABASE_URI": self.url, "REDIS_URL": redis.url,
                               "SECRET_KEY": "drill", "PORTAL_VAULT_KEYS": VAULT_KEYS,
                               "PORTAL_LEASE_SECONDS": LEASE})
        self.context = self.app.app_context()
        self.context.push()
        logging.disable(logging.INFO)  # Alembic's step-by-step lines are not results
        try:
            upgrade()
        finally:
            logging.disable(logging.NOTSET)
        self.processes: dict[str, subprocess.Popen] = {}
        self.logs: list[Path] = []
        self.count = 0
        # Like a process supervisor (systemd, the Procfile's runner): a worker or dispatcher
        # that exits without being told to is started again, and its exit code is kept.
        self.supervised: list[tuple[str, tuple[str, ...], subprocess.Popen]] = []
        self.exits: list[str] = []
        self.stopping = threading.Event()
        self.keeper = threading.Thread(target=self._supervise, daemon=True)
        self.keeper.start()

    def _supervise(self) -> None:
        while not self.stopping.wait(0.5):
            for entry in list(self.supervised):
                kind, args, process = entry
                if process.poll() is not None and entry in self.supervised:
                    self.supervised.remove(entry)
                    self.exits.append(f"{kind} pid {process.pid} exited {process.returncode}")
                    note(f"{kind} pid {process.pid} exited on its own "
                         f"({process.returncode}); started again")
                    self.spawn(kind, *args)

    def unsupervise(self, process: subprocess.Popen) -> None:
        self.supervised[:] = [entry for entry in self.supervised if entry[2] is not process]

    def spawn(self, kind: str, *args: str) -> subprocess.Popen:
        self.count += 1
        log = self.folder / f"{kind}-{self.count}.log"
        self.logs.append(log)
        process = subprocess.Popen([sys.executable, "-m", "workers", kind, *args], cwd=ROOT,
                                   env=self.env, stdout=open(log, "w"),
                                   stderr=subprocess.STDOUT)
        self.processes[f"{kind}-{self.count}"] = process
        self.supervised.append((kind, args, process))
        return process

    def worker(self) -> subprocess.Popen:
        return self.spawn("worker", "realtime", "backfill", "default")

    def close(self) -> None:
        self.stopping.set()
        self.keeper.join(5)
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        db.session.remove()
        db.engine.dispose()
        self.context.pop()

    # The workload
    def admin(self) -> User:
        user = db.session.scalar(select(User).where(User.email == "drill@example.com"))
        if user is None:
            user = User(email="drill@example.com", role="admin", password_hash="-")
            db.session.add(user)
            db.session.commit()
        return user

    def import_job(self, rows: int) -> int:
        user = self.admin()
        upload, _ = store_upload("drill.csv", make_csv(rows, "import.example"), by=user)
        provider = get_provider("files")
        job = create_job(provider=provider, job_type=provider.job_type("import_file"),
                         authorization=None, name="drill import", description="",
                         created_by=user, config={"upload_id": upload.id,
                                                  "stream": IMPORT_STREAM,
                                                  "timestamp_field": "ts", "delimiter": ","})
        return job.id

    def collect(self, first: int) -> int:
        """Send REALTIME_BATCH real-time messages as the collect API does (checked, then
        queued for the realtime workers; the database is not needed to accept them)."""
        bulk.collect(REALTIME_STREAM, [{"email": f"rt{n}@realtime.example"}
                                       for n in range(first, first + REALTIME_BATCH)])
        return first + REALTIME_BATCH

    def bulk_import(self, rows: int) -> int:
        found = bulk.receive(BULK_STREAM, io.BytesIO(make_csv(rows, "bulk.example")),
                             content_type="text/csv", timestamp_field="ts")
        return found.id

    # What the database says (each read in its own short transaction)
    def read(self, work):
        try:
            return work()
        finally:
            db.session.rollback()

    def rows(self, stream: str) -> int:
        return self.read(lambda: db.session.scalar(
            select(func.count()).select_from(Message).join(Stream)
            .where(Stream.name == stream)) or 0)

    def safe_rows(self, stream: str) -> int | None:
        try:
            return self.rows(stream)
        except DBAPIError:
            db.session.remove()
            return None

    def lease(self, job_id: int) -> str | None:
        return self.read(lambda: db.session.scalar(
            select(Job.lease_owner).where(Job.id == job_id)))

    def job_status(self, job_id: int) -> str:
        return self.read(lambda: db.session.scalar(select(Job.status).where(Job.id == job_id)))

    def bulk_status(self, import_id: int) -> str:
        return self.read(lambda: db.session.scalar(
            select(BulkImport.status).where(BulkImport.id == import_id)))

    def done(self, job_id: int | None, import_id: int | None) -> bool:
        try:
            return ((job_id is None or self.job_status(job_id) in ("completed", "failed"))
                    and (import_id is None
                         or self.bulk_status(import_id) in ("completed", "failed")))
        except DBAPIError:
            db.session.remove()
            return False

    def audit(self, expected: dict[str, int]) -> dict:
        """Messages per stream against the rows sent: lost (a row missing) and duplicated
        (a row written twice, whatever its key; or a dedupe key repeated)."""
        lost = duplicated = found = 0
        for stream, rows in expected.items():
            emails: set[str] = set()
            keys: set[str] = set()
            count = 0
            query = (select(Message.dedupe_key, Message.payload).join(Stream)
                     .where(Stream.name == stream).execution_options(yield_per=5000))
            for key, payload in db.session.execute(query):
                count += 1
                emails.add(payload.get("email"))
                keys.add(key)
            db.session.rollback()
            found += count
            lost += rows - len(emails)
            duplicated += (count - len(emails)) + (count - len(keys))
        return {"messages_expected": sum(expected.values()), "messages": found,
                "lost": lost, "duplicated": duplicated}

    def tracebacks(self) -> list[str]:
        """The exception line ending each traceback in the worker and dispatcher logs."""
        found = []
        for log in self.logs:
            lines = log.read_text(errors="replace").splitlines() if log.exists() else []
            inside = False
            for line in lines:
                if line.startswith("Traceback"):
                    inside = True
                elif inside and line and not line.startswith((" ", "\t", "During", "The ")):
                    found.append(f"{log.name}: {line[:200]}")
                    inside = False
        if KEEP_LOGS:
            target = Path(KEEP_LOGS) / self.folder.name
            target.mkdir(parents=True, exist_ok=True)
            for log in self.logs:
                if log.exists():
                    shutil.copy(log, target / log.name)
        return found


def progress_after(portal: Portal, fault_at: float, streams: dict[str, int],
                   seconds: float) -> dict[str, float]:
    """Seconds from `fault_at` until each stream has more rows than at the fault
    (`streams`: stream -> rows then); a stream whose job finished meanwhile counts too."""
    recovered: dict[str, float] = {}
    deadline = time.monotonic() + seconds
    while len(recovered) < len(streams) and time.monotonic() < deadline:
        for stream, before in streams.items():
            now = portal.safe_rows(stream)
            if stream not in recovered and now is not None and now > before:
                recovered[stream] = round(time.monotonic() - fault_at, 2)
        time.sleep(0.1)
    return recovered


def result(name: str, portal: Portal, started: float, *, affected: int, recovered: int,
           recover: list[float], expected: dict[str, int], **more) -> dict:
    audit = portal.audit(expected)
    tracebacks = portal.tracebacks()
    dialect = db.engine.dialect.name
    ok = (audit["lost"] == 0 and audit["duplicated"] == 0 and recovered == affected
          and (not tracebacks or dialect != "sqlite") and not portal.exits)
    return {"drill": name, "database": dialect, "ok": ok, "jobs_affected": affected,
            "jobs_recovered": recovered,
            "recover_s_max": max(recover) if recover else None,
            "recover_s_mean": round(sum(recover) / len(recover), 2) if recover else None,
            **audit, "tracebacks": len(tracebacks),
            "traceback_lines": tracebacks[:5], "unexpected_exits": portal.exits,
            "seconds": round(time.monotonic() - started, 1), **more}


def finish(portal: Portal, job_id: int | None, import_id: int | None) -> int:
    """Wait for the workload to end; how many of its jobs completed."""
    wait_until(lambda: portal.done(job_id, import_id), TIMEOUT, "the workload did not finish",
               every=0.5)
    return ((job_id is not None and portal.job_status(job_id) == "completed")
            + (import_id is not None and portal.bulk_status(import_id) == "completed"))


# --- The drills ---------------------------------------------------------------------------

def drill_kill(folder: Path, redis: PrivateRedis, database_url: str | None = None) -> dict:
    started = time.monotonic()
    portal = Portal(folder, database_url, redis)
    try:
        portal.spawn("dispatcher")
        job_id = portal.import_job(ROWS)
        worker = portal.worker()
        # The bulk import comes for the last BULK_KILLS kills: it is taken back within a
        # minute or two (not a lease), during which the file import would run to its end.
        import_id = None
        recover: list[float] = []
        by_target: dict[str, list[float]] = {}
        kills = bulk_kills = 0
        mark = {IMPORT_STREAM: 0, BULK_STREAM: 0}
        while kills < KILLS and not portal.done(job_id, import_id):
            if import_id is None and kills >= KILLS - BULK_KILLS:
                import_id = portal.bulk_import(BULK_ROWS)

            # A unit in flight: the job's lease held (or the bulk import running) and its
            # rows grown since the last recovery.
            def in_flight(import_id=import_id):
                if import_id is not None:
                    running = (portal.bulk_status(import_id) == "running"
                               and portal.rows(BULK_STREAM) > mark[BULK_STREAM])
                    return BULK_STREAM if running else None
                if portal.lease(job_id) and portal.rows(IMPORT_STREAM) > mark[IMPORT_STREAM]:
                    return IMPORT_STREAM
                return None

            try:
                target = wait_until(in_flight, 120, "no unit in flight", every=0.05)
            except Fault:
                if portal.done(job_id, import_id):
                    break
                raise
            portal.unsupervise(worker)
            worker.send_signal(signal.SIGKILL)
            fault_at = time.monotonic()
            worker.wait()
            kills += 1
            bulk_kills += target == BULK_STREAM
            before = portal.rows(target)
            worker = portal.worker()
            took = progress_after(portal, fault_at, {target: before}, 180)
            if target not in took:
                if portal.done(job_id, import_id):
                    break
                raise Fault(f"kill {kills}: {target} made no progress in 180 s")
            recover.append(took[target])
            by_target.setdefault(target, []).append(took[target])
            mark[target] = portal.rows(target)
            note(f"kill {kills} ({target}): writing again after {took[target]:.1f} s")
        if import_id is None:  # the file import ended first: the bulk import runs unharmed
            import_id = portal.bulk_import(BULK_ROWS)
        completed = finish(portal, job_id, import_id)
        return result("kill", portal, started, affected=2, recovered=completed,
                      recover=recover, kills=kills, bulk_kills=bulk_kills,
                      recover_s_by_job={stream: [min(times), max(times)]
                                        for stream, times in by_target.items()},
                      expected={IMPORT_STREAM: ROWS, BULK_STREAM: BULK_ROWS})
    finally:
        portal.close()


def drill_redis(folder: Path, redis: PrivateRedis, database_url: str | None = None) -> dict:
    started = time.monotonic()
    portal = Portal(folder, database_url, redis)
    try:
        portal.spawn("dispatcher")
        portal.worker()
        job_id = portal.import_job(ROWS)
        wait_until(lambda: portal.rows(IMPORT_STREAM) > 0, 120, "the import did not start")
        # A bulk import waits behind the import on the backfill queue: FLUSHALL loses it.
        import_id = portal.bulk_import(BULK_ROWS)
        # FLUSHALL: the running import's next hand-back and the queued bulk import's task
        # are lost. Then, while the bulk import still waits to be taken back, a restart of
        # Redis (without a snapshot: everything is lost again, and every connection).
        before = {IMPORT_STREAM: portal.rows(IMPORT_STREAM), BULK_STREAM: portal.rows(BULK_STREAM)}
        flushed_at = time.monotonic()
        Redis.from_url(redis.url).flushall()
        took = progress_after(portal, flushed_at, {IMPORT_STREAM: before[IMPORT_STREAM]}, 120)
        note(f"flushall: the import writing again after {took}")
        if IMPORT_STREAM not in took:
            raise Fault("flushall: the import made no progress in 120 s")
        recover = [took[IMPORT_STREAM]]
        wait_until(lambda: portal.rows(IMPORT_STREAM) > before[IMPORT_STREAM] + 4000, 120,
                   "the import did not go on")
        streams = {stream: portal.rows(stream) for stream in (IMPORT_STREAM, BULK_STREAM)}
        if portal.done(job_id, None):
            del streams[IMPORT_STREAM]
        restarted_at = time.monotonic()
        redis.stop()
        time.sleep(2)
        redis.start()
        took = progress_after(portal, restarted_at, streams, 240)
        note(f"restart: writing again after {took}")
        if len(took) < len(streams):
            raise Fault(f"restart: no progress of {set(streams) - set(took)} in 240 s")
        recover += list(took.values())
        bulk_from_flush = round(restarted_at - flushed_at + took[BULK_STREAM], 2)
        note(f"the bulk import lost by FLUSHALL wrote again {bulk_from_flush} s after it")
        recover.append(bulk_from_flush)
        completed = finish(portal, job_id, import_id)
        return result("redis", portal, started, affected=2, recovered=completed,
                      recover=recover, expected={IMPORT_STREAM: ROWS, BULK_STREAM: BULK_ROWS})
    finally:
        portal.close()


def drill_postgres(folder: Path, redis: PrivateRedis, database_url: str | None = None) -> dict:
    if not (BIN / "initdb").exists():
        return {"drill": "postgres", "ok": True, "skipped": f"no initdb in {BIN}"}
    started = time.monotonic()
    server = PrivatePostgres()
    portal = None
    try:
        server.init()
        server.start()
        portal = Portal(folder, server.url, redis)
        portal.spawn("dispatcher")
        portal.worker()
        portal.worker()
        job_id = portal.import_job(ROWS)
        import_id = portal.bulk_import(BULK_ROWS)
        recover = []
        sent = 0  # real-time messages: a batch before, one during and one after each restart
        for mode in ("fast", "immediate"):
            wait_until(lambda: portal.lease(job_id) and portal.rows(IMPORT_STREAM) > 0, 120,
                       "no unit in flight")
            streams = {IMPORT_STREAM: portal.rows(IMPORT_STREAM)}
            db.session.remove()
            sent = portal.collect(sent)
            fault_at = time.monotonic()
            server.stop(mode)
            sent = portal.collect(sent)  # its write fails, and is retried
            time.sleep(1)
            server.start()
            sent = portal.collect(sent)
            took = progress_after(portal, fault_at, streams, 240)
            note(f"postgres {mode} restart: writing again after {took}")
            if IMPORT_STREAM not in took:
                raise Fault(f"{mode} restart: no progress in 240 s")
            recover.append(took[IMPORT_STREAM])
        completed = finish(portal, job_id, import_id)
        # Failed real-time writes come back with their retries (1, 2, 5, 10, 30 s...).
        wait_until(lambda: portal.rows(REALTIME_STREAM) >= sent, 180,
                   "the real-time messages were not all written", every=0.5)
        return result("postgres", portal, started, affected=2, recovered=completed,
                      recover=recover, expected={IMPORT_STREAM: ROWS, BULK_STREAM: BULK_ROWS,
                                                 REALTIME_STREAM: sent})
    finally:
        if portal is not None:
            portal.close()
        server.remove()


def drill_disk(folder: Path, redis: PrivateRedis, database_url: str | None = None) -> dict:
    if os.geteuid() != 0:
        return {"drill": "disk", "ok": True, "skipped": "mounting a tmpfs needs root"}
    started = time.monotonic()
    portal = Portal(folder, database_url, redis)
    spool = portal.instance / "bulk-spool"
    spool.mkdir(mode=0o700, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m,mode=0700", "drill-spool",
                    str(spool)], check=True)
    try:
        portal.worker()
        admin = portal.admin()
        _, raw = tokens.create(name="drill", description="", role="operator", days=None,
                               by=admin)
        db.session.commit()
        client = portal.app.test_client()
        headers = {"Authorization": f"Bearer {raw}", "Content-Type": "text/csv"}
        # Leave about 1 MB free, then send a body of twice that.
        filler = spool / "filler"
        with open(filler, "wb") as out:
            out.write(b"\0" * ((DISK_MB - 1) * 1024 * 1024))
        body = make_csv(40_000, "disk.example")  # ~1.8 MB
        free = shutil.disk_usage(spool).free
        refused = client.post(f"/api/v2/collect/bulk/{BULK_STREAM}?timestamp_field=ts",
                              data=body, headers=headers)
        answer = refused.get_json(silent=True) or {}
        left = sorted(path.name for path in spool.iterdir() if path != filler)
        rows_kept = db.session.scalar(select(func.count()).select_from(BulkImport))
        db.session.rollback()
        filler.unlink()
        accepted = client.post(f"/api/v2/collect/bulk/{BULK_STREAM}?timestamp_field=ts",
                               data=body, headers=headers)
        import_id = (accepted.get_json(silent=True) or {}).get("data", {}).get("id")
        completed = 0
        if accepted.status_code == 202 and import_id:
            completed = finish(portal, None, import_id)
        clear = (refused.status_code == 507 and bool(answer.get("error"))
                 and not left and rows_kept == 0)
        out = result("disk", portal, started, affected=1, recovered=completed, recover=[],
                     expected={BULK_STREAM: 40_000}, body_bytes=len(body), free_bytes=free,
                     refused_status=refused.status_code,
                     refused_message=json.dumps(answer.get("error"))[:300],
                     left_behind=left, import_rows_kept=rows_kept,
                     accepted_status=accepted.status_code)
        out["ok"] = out["ok"] and clear
        return out
    finally:
        portal.close()
        subprocess.run(["umount", str(spool)], check=False)


RUNNERS = {"kill": drill_kill, "redis": drill_redis, "postgres": drill_postgres,
           "disk": drill_disk}


def run(names: list[str]) -> list[dict]:
    results = []
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"drill-{name}-") as place:
            folder = Path(place)
            redis = PrivateRedis(folder / "redis")
            redis.start()
            try:
                found = RUNNERS[name](folder, redis)
            except Fault as exc:
                found = {"drill": name, "ok": False, "error": str(exc)}
            finally:
                redis.stop()
        print(json.dumps(found), flush=True)
        results.append(found)
    return results


def main(argv: list[str]) -> int:
    names = argv or list(DRILLS)
    unknown = set(names) - set(DRILLS)
    if unknown:
        print(f"unknown drill(s) {', '.join(sorted(unknown))}; choose from "
              f"{', '.join(DRILLS)}", file=sys.stderr)
        return 2
    logging.getLogger("alembic").setLevel(logging.WARNING)
    results = run(names)
    failed = [found["drill"] for found in results if not found.get("ok")]
    print(json.dumps({"summary": {"drills": len(results), "failed": failed,
                                  "lost": sum(found.get("lost", 0) for found in results),
                                  "duplicated": sum(found.get("duplicated", 0)
                                                    for found in results),
                                  "rows": ROWS, "lease_s": LEASE}}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
