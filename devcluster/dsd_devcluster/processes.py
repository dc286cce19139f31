"""Starting, probing and stopping the detached component processes of a dev cluster.

Components outlive the `dsd dev cluster up` command that started them (own session, logs to files), and are
found again through the PIDs in the cluster's state file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path


class ComponentError(RuntimeError):
    """A component failed to start or become ready; the message includes its log tail."""


def start_detached(argv: list[str], log_path: Path, env: dict[str, str] | None = None,
                   cwd: Path | None = None) -> int:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
    return proc.pid


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` now (the component that binds it next is started right after)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def is_alive(pid: int) -> bool:
    if pid <= 0:  # 0 and -1 would address a whole process group or every process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of this process is dead for our purposes.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def stop(pid: int, grace_s: float = 10.0) -> None:
    """SIGTERM, wait up to `grace_s`, then SIGKILL (the whole process group: components may fork)."""
    if not is_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not is_alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def log_tail(log_path: Path, lines: int = 30) -> str:
    if not log_path.exists():
        return f"(no log at {log_path})"
    content = log_path.read_text(errors="replace").splitlines()
    return "\n".join(content[-lines:])


def http_ok(url: str, ca_file: Path | None = None, insecure: bool = False, timeout_s: float = 2.0) -> bool:
    """True when GET `url` answers 2xx. TLS: verify against `ca_file`, or not at all when `insecure`."""
    context: ssl.SSLContext | None = None
    if url.startswith("https"):
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        if insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout_s, context=context) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, pid: int | None = None,
               log_path: Path | None = None, interval_s: float = 0.25) -> None:
    """Polls `condition` until it holds; fails early if the process `pid` died, with its log tail."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        if pid is not None and not is_alive(pid):
            tail = log_tail(log_path) if log_path else ""
            raise ComponentError(f"{what}: process {pid} exited before becoming ready\n{tail}")
        time.sleep(interval_s)
    tail = log_tail(log_path) if log_path else ""
    raise ComponentError(f"{what}: not ready after {timeout_s:.0f}s\n{tail}")
