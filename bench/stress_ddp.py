"""Run tests/test_ddp.py many times in a row, under CPU load, and stop at the first failure.

    python bench/stress_ddp.py                 # 50 runs, 2 busy-loop load processes
    python bench/stress_ddp.py --runs 200 --load 4
    python bench/stress_ddp.py --load 0        # no extra load

Not part of CI (an hour on 2 shared cores): it is the acceptance check for the DDP exit abort, where
rank 1 died of SIGABRT ("terminate called without an active exception") after a COMPLETED run
(3 of 39 runs under load before the fix in trainer/distributed.py shutdown; 50 of 50 passed after).
Every run is a fresh pytest process; the failing run's output is printed in full. The load
processes are killed on exit, whatever ends the script.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _spin() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    x = 0
    while True:  # pure-Python busy loop: holds one core, like another job on a shared machine
        x = (x * 1_103_515_245 + 12345) & 0xFFFFFFFF


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--load", type=int, default=2, help="busy-loop processes alongside (0: none)")
    ap.add_argument("--test", default="tests/test_ddp.py")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per run")
    args = ap.parse_args()

    load = [mp.get_context("spawn").Process(target=_spin, daemon=True) for _ in range(args.load)]
    for p in load:
        p.start()
    path = os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path)  # this checkout's code, whatever is installed
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", args.test]
    t0 = time.monotonic()
    try:
        for i in range(1, args.runs + 1):
            start = time.monotonic()
            try:
                proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=args.timeout)
                rc, out = proc.returncode, proc.stdout + proc.stderr
            except subprocess.TimeoutExpired as exc:
                rc, out = "timeout", f"{exc.stdout or ''}{exc.stderr or ''}"
            took = time.monotonic() - start
            print(f"run {i}/{args.runs}: {'ok' if rc == 0 else f'FAILED ({rc})'} in {took:.1f} s", flush=True)
            if rc != 0:
                print(out, flush=True)
                print(f"FAILED at run {i} of {args.runs} ({i - 1} passed before it, load={args.load})")
                return 1
    finally:
        for p in load:
            p.kill()
        for p in load:
            p.join()
    print(f"all {args.runs} runs passed under load={args.load} in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
