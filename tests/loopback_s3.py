"""A loopback S3 for tests: moto's standalone S3 server, behind a small proxy that can
answer chosen errors (a refused key, SlowDown with Retry-After, an outage after N
requests) before moto sees the request."""

from __future__ import annotations

import http.client
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from moto.server import ThreadedMotoServer

REJECTED_KEY = "AKIAREJECTEDKEY00000"


def _error(code: str, message: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error>").encode()


class S3Server:
    """moto on 127.0.0.1, reached through a proxy at `url`.

    `fail_next`: a list of (status, code, headers) answered to the next requests, in turn;
    `fail_after`: answer 500 InternalError to every GET of an object after this many
    successful GETs of objects (None: never); requests signed with REJECTED_KEY get 403
    InvalidAccessKeyId. `requests` lists (method, path) of what reached moto."""

    def __init__(self) -> None:
        self.fail_next: list[tuple[int, str, dict[str, str]]] = []
        self.fail_after: int | None = None
        self.object_gets = 0
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def __enter__(self) -> S3Server:
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.moto.start()
        host, port = self.moto.get_host_and_port()
        # moto keeps its buckets per process: each server starts empty.
        urllib.request.urlopen(urllib.request.Request(
            f"http://{host}:{port}/moto-api/reset", method="POST"), timeout=10).close()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if REJECTED_KEY in (self.headers.get("Authorization") or ""):
                    self._answer(403, _error("InvalidAccessKeyId", "The AWS Access Key Id "
                                             "you provided does not exist."), {})
                    return
                with owner.lock:
                    failure = owner.fail_next.pop(0) if owner.fail_next else None
                    is_object_get = self.command == "GET" and "/" in self.path.strip("/") \
                        and "?" not in self.path
                    if failure is None and is_object_get and owner.fail_after is not None:
                        if owner.object_gets >= owner.fail_after:
                            failure = (500, "InternalError", {})
                        else:
                            owner.object_gets += 1
                if failure:
                    status, code, headers = failure
                    self._answer(status, _error(code, "injected"), headers)
                    return
                owner.requests.append((self.command, self.path))
                connection = http.client.HTTPConnection(host, port, timeout=30)
                headers = {name: value for name, value in self.headers.items()
                           if name.lower() not in ("connection", "content-length")}
                connection.request(self.command, self.path, body=body, headers=headers)
                answer = connection.getresponse()
                data = answer.read()
                passed = {name: value for name, value in answer.getheaders()
                          if name.lower() not in ("connection", "content-length",
                                                  "transfer-encoding", "server", "date")}
                if self.command == "HEAD":
                    passed["Content-Length"] = answer.getheader("Content-Length", "0")
                    self.send_response(answer.status)
                    for name, value in passed.items():
                        self.send_header(name, value)
                    self.end_headers()
                else:
                    self._answer(answer.status, data, passed)
                connection.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        self.proxy = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.proxy.daemon_threads = True
        self.thread = threading.Thread(target=self.proxy.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.proxy.server_address[1]}"
        return self

    def __exit__(self, *exc) -> None:
        self.proxy.shutdown()
        self.proxy.server_close()
        self.moto.stop()
