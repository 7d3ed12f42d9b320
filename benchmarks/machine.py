"""How fast this machine is right now: the figures of two runs compare only on a like machine.

These 2-core virtual machines drift within a day and from day to day (the hypervisor takes the CPU
at times), so `make bench` prints, before its first figure and after its last:

  BENCH machine_loop_s      the seconds a pure-Python loop of 10⁷ additions takes (the best of
                            3; in a function, on locals, about twice as fast as the same loop
                            typed at a module's top level)
  BENCH machine_orm_ms      the milliseconds Django takes to build and compile one query shaped
                            like the workflow's (the best of 3 rounds of 2,000; no database is
                            reached): the client's kind of work in the cycle, which drifts more
                            than the loop does (on 2026-11-29 the loop said 1.2 times slower than in
                            the session before, the cycle's CPU up to 2 times)
  BENCH machine_loop_end_s, machine_orm_end_ms  the same after the benchmarks
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


def orm_milliseconds(runs=3, count=2000):
    from .cycle import setup

    setup()
    from django.db.models import Exists, OuterRef

    from approvals.models import Decision, ReviewStep

    def build_and_compile(n):
        steps = (
            ReviewStep.objects.filter(post_id=n, state__in=["waiting", "active"])
            .select_related("group", "post__team")
            .annotate(decided=Exists(Decision.objects.filter(step=OuterRef("pk"), reviewer=n)))
            .order_by("stage", "pk")
        )
        return steps.query.sql_with_params()

    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        for n in range(count):
            build_and_compile(n)
        best = min(best, time.perf_counter() - started)
    return best * 1000 / count


def main(end=False):
    suffix = "_end" if end else ""
    bench(f"machine_loop{suffix}_s", f"{loop_seconds():.2f}", "s")
    bench(f"machine_orm{suffix}_ms", f"{orm_milliseconds():.2f}", "ms")
