"""woof/processes.py: start and stop a server, and servers tied to their starter die with it even when it is
killed -9 (no orphan left on a loopback port)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from woof import processes

from .conftest import ROOT

STARTER = """
import subprocess, sys, time
sys.path.insert(0, {root!r})
from woof import processes
lone = subprocess.Popen(["sleep", "300"], start_new_session=True)
group = subprocess.Popen(["sh", "-c", "sleep 300 & sleep 300"], start_new_session=True)
processes.tie(lone.pid)
processes.tie(group.pid, group=True)
print(lone.pid, group.pid, flush=True)
time.sleep(300)
"""


def gone(pid: int, timeout: float = 10) -> bool:
    return processes.wait_gone(pid, timeout)


def test_tied_servers_die_with_a_killed_starter(tmp_path):
    starter = subprocess.Popen([sys.executable, "-c", STARTER.format(root=str(ROOT))], stdout=subprocess.PIPE,
                               text=True)
    lone, group = map(int, starter.stdout.readline().split())
    assert processes.alive(lone) and processes.alive(group)
    starter.send_signal(signal.SIGKILL)  # no finally, no atexit: only the watchdog can clean up
    starter.wait(10)
    assert gone(lone) and gone(group)
    try:
        os.killpg(group, 0)
        raise AssertionError("the group's background sleep survived")
    except ProcessLookupError:
        pass


def test_start_logs_to_a_file_and_stop_escalates(tmp_path):
    log = tmp_path / "server.log"
    stubborn = processes.start([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                                "signal.SIG_IGN); print('up', flush=True); time.sleep(300)"], log)
    deadline = time.monotonic() + 10
    while b"up" not in log.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.read_bytes() == b"up\n"
    started = time.monotonic()
    assert processes.stop(stubborn, timeout=1) is True and stubborn.returncode == -signal.SIGKILL
    assert time.monotonic() - started < 10
    assert processes.stop(stubborn) is False  # not running any more


def test_untie_ends_the_watchdog():
    server = subprocess.Popen(["sleep", "300"], start_new_session=True)
    processes.tie(server.pid)
    watchdog, _ = processes._ties[server.pid]
    processes.untie(server.pid)
    assert watchdog.poll() is not None and server.pid not in processes._ties
    assert processes.alive(server)  # untie never signals the server itself
    server.kill()
    server.wait()
