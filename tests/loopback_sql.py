"""A TCP relay on loopback in front of a local database server, for the SQL provider's
tests: it passes bytes both ways, and once `allow` connections have been made it cuts the
next ones (accepts and closes at once), as a server that goes away in the middle of a run."""

from __future__ import annotations

import socket
import threading


class CuttingRelay:
    def __init__(self, target_port: int, *, allow: int | None = None):
        self.target_port = target_port
        self.allow = allow  # None: every connection goes through
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stopped = False

    def __enter__(self) -> CuttingRelay:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stopped = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            if self.allow is not None and self.connections > self.allow:
                client.close()  # cut: the driver sees the server hang up
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
