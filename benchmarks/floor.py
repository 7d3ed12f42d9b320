"""The floor under the cycle: its SQL alone, replayed by psycopg with no Django and no logic.

Run by `make bench` after the cycle (on the same database, recreated), or alone:
`python -m benchmarks.floor`. It takes one post in a burst through `cycle.one_cycle` and records
every statement the workflow sends, with its parameters and its transactions, then sends those
statements again, post after post, from a bare psycopg connection: each replayed post gets the
ids its own inserts return (every sequence is first restarted at a distinct multiple of 10⁷, so
that the captured cycle's ids are recognisable wherever they appear) and its own idempotency key.
Statements are prepared after 5 uses, as the application's are.

So it says how fast any client issuing the cycle's statements could go on this machine and this
database: what is left between it and `cycle_posts_per_s` is the client's own work (Django
building and compiling queries and instances, the workflow's checks, the ledger's hashing, the
mails' text, Celery's dispatch).

  BENCH cycle_sql_only_posts_per_s        posts/s of the replay (BENCH_FLOOR_POSTS posts, one
                                          process), after 20 to warm up
  BENCH cycle_sql_only_client_cpu_ms_per_post  this process's CPU time per replayed post

Before printing, the replay is checked: every replayed post published, with one SandboxPost;
otherwise it says what is wrong and exits 1.
"""

import os
import re
import sys
import time
import uuid

from .queue import DEFAULT_DATABASE_URL, bench, log, recreate_database

POSTS = int(os.environ.get("BENCH_FLOOR_POSTS", "1000"))
WARMUP = 20
INSERT = re.compile(r'^\s*INSERT INTO "?(\w+)"?', re.IGNORECASE)
ID_RANGE = 10**7


def capture():
    """(the statements of one post's cycle, as (sql, params), BEGIN and COMMIT included; the ids
    its inserts made, by table, in order)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from .cycle import make_world, one_cycle

    advisor, reviewer, account = make_world()
    for n in range(10):  # warm (the advisor's team is read once), and start a burst
        one_cycle(advisor, reviewer, account, n)
    with connection.cursor() as cursor:
        cursor.execute("SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'")
        sequences = sorted(name for (name,) in cursor.fetchall())
        for k, sequence in enumerate(sequences, start=1):
            cursor.execute(f'ALTER SEQUENCE "{sequence}" RESTART {k * ID_RANGE}')

    sent = []

    def record(execute, sql, params, many, context):
        sent.append((sql, list(params or ())))
        return execute(sql, params, many, context)

    with CaptureQueriesContext(connection) as captured, connection.execute_wrapper(record):
        one_cycle(advisor, reviewer, account, 10)
    # The wrapper does not see the transactions' BEGIN and COMMIT; the capture does, in order.
    statements, sent = [], iter(sent)
    for query in captured.captured_queries:
        is_boundary = query["sql"] in ("BEGIN", "COMMIT")
        statements.append((query["sql"], []) if is_boundary else next(sent))

    made = {}
    with connection.cursor() as cursor:
        for k, sequence in enumerate(sequences, start=1):
            table = sequence.removesuffix("_id_seq")
            cursor.execute(f'SELECT id FROM "{table}" WHERE id >= %s ORDER BY id', [k * ID_RANGE])
            if ids := [pk for (pk,) in cursor.fetchall()]:
                made[table] = ids
    return statements, made


def replay(conn, statements, made):
    """Send one post's statements again on `conn` (autocommit; the BEGINs and COMMITs are
    among them), with the ids its own inserts return."""
    new_ids, keys = {}, {}
    to_map = {table: list(ids) for table, ids in made.items()}
    for sql, params in statements:
        values = []
        for value in params:
            if isinstance(value, int) and value in new_ids:
                value = new_ids[value]
            elif isinstance(value, str):
                if value.startswith("msg_"):  # a publication's idempotency key: unique
                    value = keys.setdefault(value, f"msg_{uuid.uuid4().hex}")
                for old, new in new_ids.items():  # ids inside the ledger's JSON
                    value = value.replace(str(old), str(new))
            values.append(value)
        cursor = conn.execute(sql, values) if values else conn.execute(sql)
        if cursor.description is None:
            continue
        rows = cursor.fetchall()
        inserted = INSERT.match(sql)
        if inserted and "RETURNING" in sql.upper():
            pending = to_map.get(inserted.group(1), [])
            for row in rows[: len(pending)]:
                new_ids[pending.pop(0)] = row[0]


def main(recreate=True):
    url = os.environ.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    if recreate:
        recreate_database(url)
    from .cycle import setup

    setup()
    import psycopg
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    statements, made = capture()
    log(f"sql only: {len(statements)} statements of one post, replayed by psycopg alone")
    params = connection.get_connection_params()
    connection.close()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    params["prepare_threshold"] = 5
    with psycopg.Connection.connect(autocommit=True, **params) as conn:
        for _ in range(WARMUP):
            replay(conn, statements, made)
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(POSTS):
            replay(conn, statements, made)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        replayed = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE state = 'published') FROM approvals_post "
            "WHERE id >= %s",
            [made["approvals_post"][0] + 1],
        ).fetchone()
        delivered = conn.execute(
            "SELECT count(*) FROM approvals_sandboxpost WHERE id > %s",
            [made["approvals_sandboxpost"][0]],
        ).fetchone()[0]
    expected = WARMUP + POSTS
    if replayed != (expected, expected) or delivered != expected:
        log(
            f"sql only: {expected} posts replayed, but {replayed[0]} posts written, "
            f"{replayed[1]} published, {delivered} delivered to the sandbox"
        )
        sys.exit(1)
    bench("cycle_sql_only_posts_per_s", f"{POSTS / seconds:.1f}", "posts/s")
    bench("cycle_sql_only_client_cpu_ms_per_post", f"{cpu * 1000 / POSTS:.1f}", "ms")


if __name__ == "__main__":
    main()
