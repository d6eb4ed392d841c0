"""`python -m workers worker [QUEUE...]`, `python -m workers dispatcher`,
`python -m workers redis` (the bundled Redis that `make run` starts when REDIS_URL is unset).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from flask import current_app
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker
from rq.exceptions import StopRequested
from rq.worker import WorkerStatus

from portal import create_app
from portal.operations import HEARTBEAT_FIELD
from portal.queues import QUEUE_NAMES, redis_connection
from workers import dispatcher, redis_server, runner

log = logging.getLogger("workers")


def wait_for_redis(stop: threading.Event | None = None) -> bool:
    """Block until Redis answers (it may start after us, or restart under us); False when
    `stop` is set first."""
    warned = False
    while stop is None or not stop.is_set():
        try:
            redis_connection().ping()
            return True
        except (RedisError, OSError) as exc:
            if not warned:
                log.warning("waiting for Redis at %s (%s)", current_app.config["REDIS_URL"], exc)
                warned = True
            if stop is None:
                time.sleep(0.5)
            else:
                stop.wait(0.5)
    return False


def _abandon_unit(signum, frame) -> None:
    """SIGUSR1, sent by a stopping worker to itself: give up the unit under way."""
    if runner.STOPPING.is_set():
        raise runner.UnitAbandoned()


class PortalWorker(SimpleWorker):
    """RQ's SimpleWorker with a heartbeat every `heartbeat_seconds`, busy or idle.

    RQ beats only between jobs (every worker_ttl - 15 s when idle) and a SimpleWorker not at
    all while a job runs, so a heartbeat's age would not tell a busy worker from a dead one.
    A thread beats instead, and the worker's hash says how often (HEARTBEAT_FIELD), so the
    operations page judges each worker by its own rhythm."""

    def __init__(self, *args, heartbeat_seconds: int = 10, stop_seconds: float = 3, **kwargs):
        super().__init__(*args, **kwargs)
        self.heartbeat_seconds = max(1, heartbeat_seconds)
        self.stop_seconds = stop_seconds
        self._stop_beating = threading.Event()
        self.lost_redis: RedisError | None = None  # set when Redis went away as a job ended

    def request_stop(self, signum, frame):
        """SIGTERM / SIGINT: RQ's warm shutdown, which waits for the job under way, and so
        may wait for as long as the job lasts, or for Redis. Here the runner hands its job back
        after the unit under way (runner.STOPPING), and a unit still running after
        `stop_seconds` is abandoned: nothing of it lands (its transaction rolls back) and
        the dispatcher takes the job back once its lease expires."""
        runner.STOPPING.set()
        if self.get_state() == WorkerStatus.BUSY:
            log.info("worker: stopping; the unit under way has %g s to finish",
                     self.stop_seconds)
            timer = threading.Timer(self.stop_seconds, self._abandon)
            timer.daemon = True
            timer.start()
        super().request_stop(signum, frame)

    def _install_signal_handlers(self):
        super()._install_signal_handlers()
        if runner.STOPPING.is_set():  # asked before RQ's handlers were in place
            self._stop_requested = True

    def _abandon(self) -> None:
        if self.get_state() == WorkerStatus.BUSY:
            log.warning("worker: the unit under way did not finish within %g s of the stop "
                        "request; abandoning it", self.stop_seconds)
            signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)

    def execute_job(self, job, queue):
        try:
            super().execute_job(job, queue)
        except RedisError as exc:
            # RQ could not record the job's end: the job row (the truth) has what happened.
            log.warning("worker: could not record the end of %s in Redis (%s)", job.id, exc)
            if not runner.STOPPING.is_set():
                # Redis went away as the job ended. RQ's loop would log this as an
                # unhandled exception (a traceback) and quit; quit it quietly instead, and
                # run_worker starts again once Redis answers.
                self.lost_redis = exc
            raise StopRequested() from None

    def set_shutdown_requested_date(self):
        # Called from the signal handler: without Redis it must not raise into the unit.
        try:
            super().set_shutdown_requested_date()
        except RedisError:
            pass

    def register_birth(self):
        super().register_birth()
        self.connection.hset(self.key, HEARTBEAT_FIELD, self.heartbeat_seconds)
        threading.Thread(target=self._beat, daemon=True, name="rq-heartbeat").start()

    def register_death(self):
        self._stop_beating.set()
        super().register_death()

    def stop_beating(self) -> None:
        self._stop_beating.set()

    def _beat(self) -> None:
        while not self._stop_beating.wait(self.heartbeat_seconds):
            try:
                self.heartbeat()
            except RedisError:  # the worker's own loop waits for Redis; beat again later
                pass


def _stop_outside_work(signum, frame) -> None:
    """SIGTERM / SIGINT while no RQ worker loop runs (waiting for Redis)."""
    runner.STOPPING.set()


def run_worker(queue_names: list[str], burst: bool) -> None:
    """An RQ worker that comes back when Redis goes away and returns, and that stops
    within PORTAL_WORKER_STOP_SECONDS when told to, Redis or not."""
    signal.signal(signal.SIGUSR1, _abandon_unit)
    stopping = runner.STOPPING
    while True:
        # RQ installs its own handlers inside work(); outside it, ours.
        signal.signal(signal.SIGTERM, _stop_outside_work)
        signal.signal(signal.SIGINT, _stop_outside_work)
        if not wait_for_redis(stopping):
            log.info("worker: stopped as asked, while waiting for Redis")
            return
        connection = redis_connection()
        queues = [Queue(name, connection=connection) for name in queue_names]
        worker = PortalWorker(
            queues, connection=connection,
            heartbeat_seconds=current_app.config["PORTAL_WORKER_HEARTBEAT_SECONDS"],
            stop_seconds=current_app.config["PORTAL_WORKER_STOP_SECONDS"])
        try:
            worker.work(burst=burst, with_scheduler=False)
            if worker.lost_redis is None or stopping.is_set():
                if stopping.is_set():
                    log.info("worker: stopped as asked")
                return
            log.warning("worker: lost Redis (%s); starting again when it answers",
                        worker.lost_redis)
            stopping.wait(1)
        except RedisError as exc:
            if stopping.is_set():
                log.warning("worker: stopped as asked; Redis does not answer (%s), so RQ's "
                            "record of this worker expires by itself", exc)
                return
            log.warning("worker: lost Redis (%s); starting again when it answers", exc)
            stopping.wait(1)
        finally:
            worker.stop_beating()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers")
    sub = parser.add_subparsers(dest="command", required=True)
    work = sub.add_parser("worker", help="run an RQ worker")
    work.add_argument("queues", nargs="*", metavar="QUEUE",
                      help=f"queues to serve, in priority order (default: {' '.join(QUEUE_NAMES)})")
    work.add_argument("--burst", action="store_true", help="stop when the queues are empty")
    sub.add_parser("dispatcher", help="wake due jobs and repair lost ones")
    sub.add_parser("redis", help="run the bundled Redis on the unix socket under instance/")
    args = parser.parse_args(argv)
    unknown = set(getattr(args, "queues", None) or ()) - set(QUEUE_NAMES)
    if unknown:
        parser.error(f"unknown queue(s) {', '.join(sorted(unknown))}; "
                     f"choose from {', '.join(QUEUE_NAMES)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # httpx logs every request's full URL at INFO: a webhook's query string can be a token.
    logging.getLogger("httpx").setLevel(logging.WARNING)

    app = create_app()
    if args.command == "redis":
        if not app.config["PORTAL_REDIS_EMBEDDED"]:
            print("REDIS_URL is set: not starting the bundled Redis.", file=sys.stderr)
            return 2
        socket = Path(app.config["REDIS_URL"].removeprefix("unix://"))
        cmd = redis_server.command(Path(app.instance_path) / "redis", unixsocket=socket)
        os.umask(0o077)  # its snapshot (dump.rdb) and socket: the owner's only
        os.execv(cmd[0], cmd)

    with app.app_context():
        if args.command == "dispatcher":
            wait_for_redis()
            dispatcher.serve()
        else:
            run_worker(args.queues or list(QUEUE_NAMES), args.burst)
    return 0


def exit_now(status: int) -> None:
    """End the process at once, its work ended (sessions closed, leases let go or left to
    expire): the interpreter's teardown of every module takes seconds on a busy machine,
    and a stopped worker should be gone promptly. Only for `python -m workers` itself: a
    program that calls main() keeps its own exit (and its atexit hooks)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    exit_now(main())
