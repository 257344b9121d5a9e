"""Run a command and print its wall seconds and its own peak RSS as JSON.

A child's peak RSS includes whatever its parent held when it forked, so measuring straight from
the (large) benchmark process would charge the parent's memory to a 10 MB client. This launcher
is started with no imports beyond the standard library's core; the command forks from it.
"""

import json
import os
import sys
import time

started = time.perf_counter()
pid = os.fork()
if pid == 0:
    if len(sys.argv) > 2 and sys.argv[1] == "--stdout-null":
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        argv = sys.argv[2:]
    else:
        argv = sys.argv[1:]
    os.execvp(argv[0], argv)
_, status, usage = os.wait4(pid, 0)
code = os.waitstatus_to_exitcode(status)
print(
    json.dumps(
        {"seconds": time.perf_counter() - started, "rss": usage.ru_maxrss * 1024, "code": code}
    ),
    file=sys.stderr,
)
sys.exit(code)
