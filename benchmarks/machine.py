"""How fast this machine is right now: the figures of two runs compare only on a like machine.

These 2-core virtual machines drift within a day and from day to day (the hypervisor takes the CPU
at times), so `make bench` prints, before its first figure and after its last, the seconds a
pure-Python loop of 10⁷ additions takes (the best of 3; in a function, on locals, about twice
as fast as the same loop typed at a module's top level):

  BENCH machine_loop_s      before the benchmarks
  BENCH machine_loop_end_s  after them
"""

import time

from .queue import bench


def loop_seconds(runs=3):
    best = float("inf")
    for _ in range(runs):
        started, total = time.perf_counter(), 0
        for n in range(10**7):
            total += n
        best = min(best, time.perf_counter() - started)
    return best


def main(name="machine_loop_s"):
    bench(name, f"{loop_seconds():.2f}", "s")
