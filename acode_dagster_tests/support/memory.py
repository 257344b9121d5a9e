"""The peak of Arrow's allocations during one call, measured in a fresh interpreter.

Arrow's pool keeps a high-water mark (``max_memory``) that only grows, for the whole process: a
test process that has already read a large file cannot measure a small peak. A child Python
started for one call can, and its imports allocate next to nothing from Arrow's pool, so the
mark after the call less the bytes held before it is the call's own peak.

    peak = peak_allocated("acode_dagster_tests.test_keys:check_folder", str(folder), "50000")
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def peak_allocated(target: str, *args: str, timeout_s: float = 120) -> int:
    """Bytes ``module:function(*args)`` peaked at in Arrow's default pool, in a child Python."""
    done = subprocess.run(
        [sys.executable, "-m", __name__, target, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"{target} failed in the child:\n{done.stderr[-3000:]}")
    return int(done.stdout.strip().splitlines()[-1])


def _main(target: str, args: list[str]) -> None:
    import pyarrow as pa

    module, _, name = target.partition(":")
    function = getattr(importlib.import_module(module), name)
    pool = pa.default_memory_pool()
    held = pool.bytes_allocated()
    function(*args)
    print(pool.max_memory() - held)


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2:])
