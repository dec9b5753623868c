"""Run a command as a child subreaper (Linux), for the tests that kill fetchcli.

    python tests/reaper.py SIGNUM COMMAND...

COMMAND gets this process's stdin. On SIGUSR1 this sends SIGNUM to COMMAND. Once COMMAND has
ended, the processes it left behind (its engines, reparented here rather than to init) are
waited for too, and one JSON line says how each ended: {"status": N, "orphans": [N, ...]},
negative for a signal, as in `subprocess`. So a test knows that nothing it started is still
running, and whether the orphans were killed or exited on their own. COMMAND dies with this
process (a test that fails before it signals kills the reaper).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1  # prctl(2)
PR_SET_CHILD_SUBREAPER = 36
LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_the_reaper() -> None:
    LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def main() -> None:
    signum = int(sys.argv[1])
    if LIBC.prctl(PR_SET_CHILD_SUBREAPER, 1) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    child = subprocess.Popen(sys.argv[2:], preexec_fn=_die_with_the_reaper)  # one thread here
    signal.signal(signal.SIGUSR1, lambda *_: child.send_signal(signum))
    status = child.wait()
    orphans = []
    while True:
        try:
            _, raw = os.waitpid(-1, 0)
        except ChildProcessError:  # none left
            break
        orphans.append(os.waitstatus_to_exitcode(raw))
    print(json.dumps({"status": status, "orphans": orphans}), flush=True)


if __name__ == "__main__":
    main()
