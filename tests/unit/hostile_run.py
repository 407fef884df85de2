"""Runs corpus cases through the CLI in this (child) process, one JSON line per case.

Started by test_hostile.py under a memory and CPU limit; each case is announced on stderr
before it runs, so a crash by signal names the case that caused it.
"""

from __future__ import annotations

import contextlib
import io
import json
import resource
import sys
import time
from pathlib import Path

from kube_l2tp.cli import main


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except BaseException as exc:  # reported, not raised: the parent asserts there is none
            code = -1
            err.write(f"Traceback: {type(exc).__name__}: {str(exc)[:300]}\n")
    return code, out.getvalue(), err.getvalue()


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main_() -> None:
    for line in sys.stdin:
        name, path, also_render = json.loads(line)
        print(f"START {name}", file=sys.stderr, flush=True)
        before = rss_mb()
        started = time.monotonic()
        results = {"validate": run(["validate", "-f", path])}
        if also_render:
            results["render"] = run(["render", "-f", path])
            results["render-peer"] = run(["render", "--peer", "-f", path])
        seconds = time.monotonic() - started
        record = {
            "name": name,
            "seconds": seconds,
            "rss_before_mb": before,
            "rss_after_mb": rss_mb(),
            "results": results,
        }
        print(json.dumps(record), flush=True)
        Path(path).unlink()


if __name__ == "__main__":
    main_()
