"""8 OS processes append to the ledger at once for 10 s, some one entry per transaction, some in
batches: no fork, no gap, every hash verifies."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from approvals import ledger
from approvals.models import LedgerEntry
from tests.faultkit import database_url

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent
PROCESSES = 8
SECONDS = 10

# Each process: its own connection, `size` appends per transaction in a ledger.batch (one entry
# takes the single append's statement), from a common start time (so they all contend) until the
# deadline; prints how many appends it committed.
APPENDER = """
import os, sys, time
import django
django.setup()
from django.db import connection, transaction
from approvals import ledger
start_at, seconds, size = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
connection.ensure_connection()
count = 0
while time.time() < start_at:
    time.sleep(0.001)
while time.time() < start_at + seconds:
    with transaction.atomic(), ledger.batch():
        for _ in range(size):
            ledger.append("test.concurrent", post=os.getpid(), n=count)
            count += 1
connection.close()
print(count)
"""


def test_eight_processes_appending_at_once_leave_one_sound_chain():
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": database_url(connection),
        "PYTHONUNBUFFERED": "1",
    }
    start_at = time.time() + 3  # time for every process to start and connect
    sizes = [1 + n % 3 for n in range(PROCESSES)]  # entries per transaction
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, str(start_at), str(SECONDS), str(size)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for size in sizes
    ]
    counts = []
    for process in processes:
        out, err = process.communicate(timeout=SECONDS + 60)
        assert process.returncode == 0, err
        counts.append(int(out))

    assert all(counts), f"a process appended nothing: {counts}"
    assert LedgerEntry.objects.count() == sum(counts)
    seqs = list(LedgerEntry.objects.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, sum(counts) + 1)), "a gap in the chain"
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT prev_hash, count(*) FROM {ledger.TABLE} GROUP BY prev_hash HAVING count(*) > 1"
        )
        assert cursor.fetchall() == [], "a fork: two entries share a predecessor"
    # Every process's appends are there, in the order it made them.
    by_process, by_transaction = {}, {}
    size_of = {process.pid: size for process, size in zip(processes, sizes, strict=True)}
    rows = LedgerEntry.objects.order_by("seq").values_list("seq", "post_id", "payload__n")
    for seq, post_id, n in rows:
        by_process.setdefault(post_id, []).append(n)
        by_transaction.setdefault((post_id, n // size_of[post_id]), []).append(seq)
    assert sorted(len(ns) for ns in by_process.values()) == sorted(counts)
    assert all(ns == list(range(len(ns))) for ns in by_process.values())
    # A batch's entries follow each other: no other process's entry between them.
    assert all(seqs[-1] - seqs[0] == len(seqs) - 1 for seqs in by_transaction.values())
    assert ledger.verify() is None
