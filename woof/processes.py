"""Child processes, the one way woof starts and stops its servers (TorchServe's launcher, gunicorn).

A server's output goes to a log file, never to woof's own stdout (a pipe reading `woof serve` would otherwise
never see EOF). Stopping is SIGTERM, a grace period for the requests in flight, then SIGKILL to the whole
process group, so no worker is left behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path


def start(cmd: list[str], log_file: str | os.PathLike | None, cwd: str | os.PathLike | None = None,
          env: dict[str, str] | None = None, own_session: bool = True) -> subprocess.Popen:
    """Start `cmd` with stdout and stderr appended to `log_file` (None: inherit ours).

    own_session: the child leads a new process group, so a Ctrl-C in the terminal reaches woof alone, which
    then stops the child in order, and `stop` can signal the child's own children too."""
    output = open(Path(log_file), "ab") if log_file else None  # noqa: SIM115 - the child keeps its own copy
    try:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=output, stderr=output and subprocess.STDOUT,
                                start_new_session=own_session)
    finally:
        if output:
            output.close()


def alive(process: subprocess.Popen | int) -> bool:
    if isinstance(process, subprocess.Popen):
        return process.poll() is None
    try:
        os.kill(process, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process with that pid: alive, not ours to signal
        return True
    return True


def wait_gone(process: subprocess.Popen | int, timeout: float, interval: float = 0.1) -> bool:
    """True once `process` has exited (reaped, if it is our child), False if it still runs after `timeout`."""
    deadline = time.monotonic() + timeout
    while alive(process):
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def stop(process: subprocess.Popen | int, timeout: float = 30.0) -> bool:
    """SIGTERM, then SIGKILL to its process group after `timeout`. False if it was not running."""
    pid = process if isinstance(process, int) else process.pid
    if not alive(process):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    if not wait_gone(process, timeout):
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)  # a group leader: its workers go too
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)  # not a group leader after all
        if isinstance(process, subprocess.Popen):
            process.wait(10)
        else:
            wait_gone(process, 10)
    return True


# A tiny program: block until the pipe from the parent closes (the parent exited, however it died), then kill.
_WATCHDOG = """
import os, signal, sys
os.read(0, 1)
for item in sys.argv[1:]:
    kind, pid = item[0], int(item[1:])
    try:
        (os.killpg if kind == "g" else os.kill)(pid, signal.SIGKILL)
    except OSError:
        pass
"""
_ties: dict[int, tuple[subprocess.Popen, int]] = {}  # pid -> (its watchdog, the pipe's write end we hold)


def tie(pid: int, group: bool = False) -> None:
    """Kill `pid` (or its whole process group) when this process exits, even by SIGKILL, where no cleanup code
    runs: a watchdog in its own session waits on a pipe that only this process holds open. For servers started
    by tests, `woof bench` and the load test, so a killed run leaves no server on a loopback port."""
    import sys

    read, write = os.pipe()  # both ends non-inheritable: no other child keeps the watchdog waiting
    try:
        watchdog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, f"{'g' if group else 'p'}{pid}"], stdin=read,
                                    start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        os.close(read)
    _ties[pid] = (watchdog, write)


def untie(pid: int) -> None:
    """`pid` was stopped in order: end its watchdog, so it never signals a pid the system reuses later."""
    watchdog, write = _ties.pop(pid, (None, None))
    if watchdog is not None:
        watchdog.kill()
        watchdog.wait(10)
        os.close(write)
