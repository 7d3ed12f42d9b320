"""The ledger on PostgreSQL: verifying and exporting a chain of 1,000,000 entries, and concurrent
appends.

Run by `make bench` (after the others) or alone: `python -m benchmarks.ledger`. It works in its
own database, the DATABASE_URL database's name with "_ledger" appended
(`reviewflow_bench_ledger` by default), DROPPED and recreated at every run (its name must contain
"bench"), so that a million ledger entries never weigh on the other benchmarks.

The chain is generated here, not by a million ORM appends: each entry's hash is computed in Python
by approvals.ledger.entry_hash (the function verify() uses), and the rows are streamed in with COPY;
then ledger.reset_head() points the chain's head (approvals.LedgerHead) at the last entry.
The append-only triggers stay installed throughout (they refuse UPDATE, DELETE and TRUNCATE only).

Figures, one line each on stdout (progress goes to stderr):
  BENCH ledger_load_s          seconds to hash and COPY the chain (not a target; for context)
  BENCH ledger_verify_s        seconds for ledger.verify() over the whole chain (target < 30 s)
  BENCH ledger_verify_peak_mb  growth of the verifying process's peak RSS during verify()
                               (ru_maxrss after minus before, in a fresh process): flat memory
                               means a few MB whatever the length of the chain
  BENCH ledger_export_s        seconds for ledger.export_lines() to write the whole chain to a
                               file, as `manage.py export_ledger` does for an auditor
  BENCH ledger_export_peak_mb  the growth of peak RSS it causes (as for verify)
  BENCH ledger_export_check_s  seconds for ledger.verify_export() to check that file, as
                               `verify_ledger --file` does, without the database
  BENCH ledger_append_per_s    appends per second from 8 processes, each with its own connection,
                               each append in its own transaction, for BENCH_APPEND_SECONDS; the
                               chain is verified afterwards (no fork, no gap, every hash)

Knobs (environment): BENCH_LEDGER_ENTRIES (1000000), BENCH_APPEND_PROCESSES (8),
BENCH_APPEND_SECONDS (5).
"""

import os
import random
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

from .queue import DEFAULT_DATABASE_URL, bench, log, recreate_database

ENTRIES = int(os.environ.get("BENCH_LEDGER_ENTRIES", "1000000"))
PROCESSES = int(os.environ.get("BENCH_APPEND_PROCESSES", "8"))
SECONDS = float(os.environ.get("BENCH_APPEND_SECONDS", "5"))
CHUNK = 50_000
SEED = 20240603
EVENTS = [
    "post.created",
    "post.submitted",
    "step.decided",
    "post.approved",
    "post.released",
    "post.published",
]


def ledger_url(url):
    """The benchmark's own database: the given database's name + "_ledger"."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "_ledger"))


def child(mode, *args, env=None):
    """Run this module in a fresh interpreter (`mode` is load, verify, export or append)."""
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.ledger", mode, *map(str, args)],
        env=env or os.environ,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout


def setup():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()


# --- the chain ------------------------------------------------------------------------------------


def load():
    """Hash ENTRIES entries in Python and COPY them in, in chunks of CHUNK, one transaction each."""
    from django.db import connection, transaction

    from approvals.ledger import GENESIS_HASH, TABLE, canonical_json, entry_hash, reset_head

    rng = random.Random(SEED)
    started = time.perf_counter()
    prev_hash = GENESIS_HASH
    created = datetime(2021, 1, 4, 8, 0, tzinfo=UTC)
    columns = "seq, created_at, actor_id, actor, event, post_id, payload, prev_hash, hash"
    for start in range(1, ENTRIES + 1, CHUNK):
        rows = []
        for seq in range(start, min(start + CHUNK, ENTRIES + 1)):
            created += timedelta(microseconds=rng.randrange(1, 90_000_000))
            event = EVENTS[seq % len(EVENTS)]
            post_id = seq // 6 + 1
            if seq % 7 == 0:
                actor_id, actor = None, "system"
            else:
                actor_id = rng.randrange(1, 5000)
                actor = f"advisor{actor_id:04d}"
            payload = {"revision": seq % 3 + 1, "state": event.split(".")[1]}
            if event == "step.decided":
                payload |= {"outcome": "approve", "reason": "Mention « capital à risque » ✓"}
            entry = entry_hash(prev_hash, seq, created, actor_id, actor, event, post_id, payload)
            rows.append(
                (seq, created, actor_id, actor, event, post_id, canonical_json(payload))
                + (prev_hash, entry)
            )
            prev_hash = entry
        with transaction.atomic(), connection.cursor() as wrapper:
            with wrapper.cursor.copy(f"COPY {TABLE} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        log(f"  loaded {rows[-1][0]:,} entries ({time.perf_counter() - started:.1f} s)")
    reset_head()  # appends chain on from the last entry loaded
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {TABLE}")
    return time.perf_counter() - started


# --- the children ---------------------------------------------------------------------------------


def run_verify():
    """In a fresh process: time verify() and the growth of peak RSS it causes."""
    setup()
    from django.db import connection

    from approvals import ledger

    connection.ensure_connection()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    started = time.perf_counter()
    broken = ledger.verify()
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{elapsed:.3f} {(after - before) / 1024:.1f} {broken or 'sound'}")


def run_export():
    """In a fresh process: time export_lines() into a file and the growth of peak RSS it
    causes, then verify_export() over that file."""
    import tempfile

    setup()
    from django.db import connection

    from approvals import ledger

    connection.ensure_connection()
    with tempfile.TemporaryFile("w+", encoding="utf-8") as out:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        started = time.perf_counter()
        out.writelines(ledger.export_lines())
        exported = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out.seek(0)
        started = time.perf_counter()
        problem, count = ledger.verify_export(out)
        checked = time.perf_counter() - started
    print(
        f"{exported:.3f} {(after - before) / 1024:.1f} {checked:.3f} {count} {problem or 'sound'}"
    )


def run_append(start_at, seconds):
    """In a fresh process: append, one transaction each, from start_at for `seconds`."""
    setup()
    from django.db import connection, transaction

    from approvals import ledger

    connection.ensure_connection()
    count = 0
    while time.time() < start_at:
        time.sleep(0.001)
    deadline = start_at + seconds
    while time.time() < deadline:
        with transaction.atomic():
            ledger.append("bench.append", post=os.getpid(), n=count)
        count += 1
    print(count)


# --- the measure ----------------------------------------------------------------------------------


def fail(message):
    bench("ledger_broken", 1, "run")
    sys.exit(f"ledger benchmark: {message}")


def measure_verify(env):
    elapsed, peak_mb, verdict = child("verify", env=env).split(maxsplit=2)
    if verdict.strip() != "sound":
        fail(f"the generated chain does not verify: {verdict.strip()}")
    if float(peak_mb) > 100:  # a million entries held at once would take well over 1 GB
        fail(f"verify() grew the process by {peak_mb} MB: it does not stream")
    bench("ledger_verify_s", f"{float(elapsed):.1f}", "s")
    bench("ledger_verify_peak_mb", peak_mb, "MB")


def measure_export(env):
    exported, peak_mb, checked, count, verdict = child("export", env=env).split(maxsplit=4)
    if verdict.strip() != "sound" or int(count) != ENTRIES:
        fail(f"the export of {ENTRIES} entries checked {count}: {verdict.strip()}")
    if float(peak_mb) > 100:
        fail(f"export_lines() grew the process by {peak_mb} MB: it does not stream")
    bench("ledger_export_s", f"{float(exported):.1f}", "s")
    bench("ledger_export_peak_mb", peak_mb, "MB")
    bench("ledger_export_check_s", f"{float(checked):.1f}", "s")


def measure_append(env):
    from django.db import connection

    from approvals import ledger
    from approvals.models import LedgerEntry

    before = LedgerEntry.objects.count()
    start_at = time.time() + 3  # time for every child to start and connect
    command = [sys.executable, "-m", "benchmarks.ledger", "append", start_at, SECONDS]
    children = [
        subprocess.Popen(list(map(str, command)), env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(PROCESSES)
    ]
    counts = []
    for process in children:
        out, _ = process.communicate(timeout=SECONDS + 120)
        if process.returncode:
            fail(f"an appending process exited with {process.returncode}")
        counts.append(int(out))
    total = LedgerEntry.objects.count() - before
    if total != sum(counts):
        fail(f"{sum(counts)} appends reported, {total} entries found")
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) - count(DISTINCT prev_hash), max(seq) - count(*) FROM {ledger.TABLE}"
        )
        forks, gaps = cursor.fetchone()
    if forks or gaps:
        fail(f"{forks} forks and {gaps} gaps after concurrent appends")
    log(f"appends per process: {counts}; verifying the chain")
    if (broken := ledger.verify()) is not None:
        fail(f"the chain is broken after concurrent appends: {broken}")
    bench("ledger_append_per_s", f"{total / SECONDS:.0f}", "appends/s")


def main():
    url = ledger_url(os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    # This process may already have Django set up on another database (make bench): the chain
    # is built, verified and appended to by children, which see only the ledger's database.
    recreate_database(url)
    subprocess.run([sys.executable, "-m", "benchmarks.ledger", "load"], env=env, check=True)
    measure_verify(env)
    measure_export(env)
    subprocess.run([sys.executable, "-m", "benchmarks.ledger", "appends"], env=env, check=True)


if __name__ == "__main__":
    mode, *args = sys.argv[1:] or ["main"]
    if mode == "main":
        main()
    elif mode == "load":
        setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        bench("ledger_load_s", f"{load():.1f}", "s")
    elif mode == "verify":
        run_verify()
    elif mode == "export":
        run_export()
    elif mode == "append":
        run_append(float(args[0]), float(args[1]))
    elif mode == "appends":
        setup()
        measure_append({**os.environ})
    else:
        sys.exit(f"unknown mode {mode!r}")
