"""The beat's sweeps over the queue benchmark's 100,000 posts, once nothing is left to catch up.

Run by `make bench` after the queue (on its database, as the queue left it), or alone:
`python -m benchmarks.beat`, which recreates the database and loads it as the queue does
(BENCH_POSTS posts). Every sweep the beat runs each minute or so (reviewflow/settings.py's
CELERY_BEAT_SCHEDULE) is run once to catch up with what the loaded data leaves to do: overdue
steps to escalate, publish times at risk to flag. Then each is run BENCH_BEAT_RUNS times, one
after the other on one connection, as a worker runs them, so that their statements are prepared
and planned generically as in production; its time is the median of those runs.

A sweep's cost must follow what it has to do, not how many posts it looks at: the sweep that flags
publish times at risk read each post in review with a publish time again, one statement a post,
and took 8.1 s a minute over this data (15e14fb fixed that; since d8172af it selects in SQL the
posts that could be at risk: 0.5 s). PostgreSQL's JIT then compiled that sweep's statements at
every run, the escalation's too, for about half of what was left: it is off since 2026-11-30
(REVIEWFLOW_DB_JIT).

Before printing, the runs are checked: once caught up, no sweep escalates or flags anything;
otherwise it says what is wrong and exits 1.

  BENCH beat_catch_up_s      seconds of the first run of every sweep (the loaded backlog)
  BENCH beat_sweeps_ms       every sweep once, caught up: the sum of their medians
  BENCH beat_slowest_ms      the slowest of those medians (its name on stderr, with each one's)
"""

import os
import statistics
import sys
import time
from functools import partial

from .queue import DEFAULT_DATABASE_URL, bench, load, log

RUNS = int(os.environ.get("BENCH_BEAT_RUNS", "7"))


def sweeps(now):
    """{name: the function a beat task calls}, as approvals/tasks.py calls them, at `now` where
    the function takes a time: the same moment for every run, so that nothing falls due between
    the catch-up and the timed runs."""
    from approvals import ledger, notify, publishing, workflow

    return {
        "release_due_posts (the due posts)": partial(workflow.due_post_ids, now),
        "deliver_due_publications": partial(publishing.enqueue_due, now),
        "recover_stalled_publications": partial(publishing.recover_stalled, now),
        "warn_expiring_approvals": partial(workflow.warn_expiring, now),
        "escalate_overdue_steps": partial(workflow.escalate_overdue, now),
        "flag_posts_at_risk": partial(workflow.flag_publish_at_risk, now),
        "send_notifications": notify.send_immediate,
        "send_digests": notify.send_digests,
        "send_gathered_notifications": notify.send_gathered,
        "write_stalled_ledger_exports": ledger.stalled_export_ids,
    }


def measure():
    """(catch-up seconds, {sweep: median ms}, problems)."""
    from django.utils import timezone

    now = timezone.now()
    started = time.perf_counter()
    for name, sweep in sweeps(now).items():
        done = sweep()
        log(f"  caught up: {name}, {len(done or ())} done")
    catch_up = time.perf_counter() - started
    medians, problems = {}, []
    for name, sweep in sweeps(now).items():
        times = []
        for _ in range(RUNS):
            started = time.perf_counter()
            done = sweep()
            times.append((time.perf_counter() - started) * 1000)
            if done and name in ("escalate_overdue_steps", "flag_posts_at_risk"):
                problems.append(f"{name} still had {len(done)} to do after catching up")
        medians[name] = statistics.median(times)
        log(f"  {medians[name]:9.1f} ms  {name}")
    return catch_up, medians, problems


def main(recreate=True):
    """`recreate`: load the queue benchmark's data first; else run on the database as it is."""
    if recreate:
        load()
    os.environ.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django
    from django.conf import settings

    django.setup()
    # The sweeps' mails go to memory: stdout carries the BENCH lines only.
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    log("the beat's sweeps, median of each once caught up:")
    catch_up, medians, problems = measure()
    if problems:
        for problem in problems:
            log(f"beat benchmark: {problem}")
        sys.exit(1)
    slowest = max(medians, key=medians.get)
    log(f"slowest: {slowest}")
    bench("beat_catch_up_s", f"{catch_up:.1f}", "s")
    bench("beat_sweeps_ms", f"{sum(medians.values()):.1f}", "ms")
    bench("beat_slowest_ms", f"{medians[slowest]:.1f}", "ms")


if __name__ == "__main__":
    main()
