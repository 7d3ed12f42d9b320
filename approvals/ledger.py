"""The ledger: append, verify. One hash chain over every event, append-only in the database."""

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone

from .models import LedgerEntry

GENESIS_HASH = "0" * 64
# Serializes appends on PostgreSQL; on SQLite the IMMEDIATE transaction already does.
_CHAIN_LOCK_KEY = 0x5245564945574C47  # "REVIEWLG"

TABLE = LedgerEntry._meta.db_table
TRIGGER_SQL = {
    "sqlite": {
        "install": [
            f"""CREATE TRIGGER IF NOT EXISTS ledger_no_update BEFORE UPDATE ON {TABLE}
                BEGIN SELECT RAISE(ABORT, 'ledger is append-only: UPDATE refused'); END""",
            f"""CREATE TRIGGER IF NOT EXISTS ledger_no_delete BEFORE DELETE ON {TABLE}
                BEGIN SELECT RAISE(ABORT, 'ledger is append-only: DELETE refused'); END""",
        ],
        "remove": [
            "DROP TRIGGER IF EXISTS ledger_no_update",
            "DROP TRIGGER IF EXISTS ledger_no_delete",
        ],
    },
    "postgresql": {
        "install": [
            """CREATE OR REPLACE FUNCTION ledger_refuse_change() RETURNS trigger AS $$
               BEGIN RAISE EXCEPTION 'ledger is append-only: % refused', TG_OP; END;
               $$ LANGUAGE plpgsql""",
            f"""CREATE OR REPLACE TRIGGER ledger_no_update_delete
                BEFORE UPDATE OR DELETE ON {TABLE}
                FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()""",
            f"""CREATE OR REPLACE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON {TABLE}
                FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()""",
        ],
        "remove": [
            f"DROP TRIGGER IF EXISTS ledger_no_update_delete ON {TABLE}",
            f"DROP TRIGGER IF EXISTS ledger_no_truncate ON {TABLE}",
        ],
    },
}


def set_append_only(conn, enabled):
    """Install (or, for test-database teardown only, remove) the append-only triggers."""
    statements = TRIGGER_SQL.get(conn.vendor)
    if statements is None:
        raise NotImplementedError(f"No append-only triggers for {conn.vendor}")
    with conn.cursor() as cursor:
        for sql in statements["install" if enabled else "remove"]:
            cursor.execute(sql)


# One encoder, built once: the same output as json.dumps(value, sort_keys=True,
# separators=(",", ":"), ensure_ascii=False, cls=DjangoJSONEncoder), without building an encoder
# at every call (verify() hashes a million entries).
_CANONICAL = DjangoJSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(value):
    return _CANONICAL.encode(value)


def entry_hash(prev_hash, seq, created_at, actor_id, actor, event, post_id, payload):
    body = canonical_json(
        {
            "seq": seq,
            "created_at": created_at.astimezone(UTC).isoformat(),
            "actor_id": actor_id,
            "actor": actor,
            "event": event,
            "post_id": post_id,
            "payload": payload,
        }
    )
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def append(event, *, actor=None, post=None, **payload):
    """Append one entry. Must run inside the transaction of the change it records."""
    if not connection.in_atomic_block:
        raise RuntimeError("ledger.append must run inside the transaction it records")
    # Round-trip through JSON now so the hash covers exactly what the database will return.
    payload = json.loads(canonical_json(payload))
    # Everything that does not depend on the head is done before the lock: the lock is held
    # until this transaction commits, so the time under it bounds every appender's throughput.
    actor_id = getattr(actor, "pk", None)
    entry = LedgerEntry(
        actor_id=actor_id,
        actor=actor.get_username() if actor is not None else "system",
        event=event,
        post_id=getattr(post, "pk", post),
        payload=payload,
    )
    head_sql = f"SELECT seq, hash FROM {TABLE} ORDER BY seq DESC LIMIT 1"
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK_KEY])
        cursor.execute(head_sql)
        head = cursor.fetchone()
    entry.seq, entry.prev_hash = (head[0] + 1, head[1]) if head else (1, GENESIS_HASH)
    entry.created_at = timezone.now()
    entry.hash = entry_hash(
        entry.prev_hash,
        entry.seq,
        entry.created_at,
        entry.actor_id,
        entry.actor,
        entry.event,
        entry.post_id,
        entry.payload,
    )
    entry.save(force_insert=True)
    return entry


@dataclass
class Break:
    seq: int
    reason: str

    def __str__(self):
        return f"entry #{self.seq}: {self.reason}"


# The columns verify() reads, as tuples: no model instance per entry.
_VERIFIED_FIELDS = (
    "seq",
    "prev_hash",
    "hash",
    "created_at",
    "actor_id",
    "actor",
    "event",
    "post_id",
    "payload",
)


def verify_chain(batch_size=5000):
    """Walk the chain; return (the first broken link or None, how many entries verified sound).

    Streams: on PostgreSQL .iterator() reads through a server-side cursor, batch_size rows at a
    time, so memory stays flat whatever the length of the chain. One transaction, so one snapshot:
    entries appended meanwhile are not seen (nor counted).
    """
    prev_hash, expected_seq = GENESIS_HASH, 1
    with transaction.atomic():
        rows = (
            LedgerEntry.objects.order_by("seq")
            .values_list(*_VERIFIED_FIELDS)
            .iterator(chunk_size=batch_size)
        )
        for seq, linked_to, stored, created_at, actor_id, actor, event, post_id, payload in rows:
            sound = expected_seq - 1
            if seq != expected_seq:
                return Break(expected_seq, f"missing (next entry found is #{seq})"), sound
            if linked_to != prev_hash:
                return Break(seq, "prev_hash does not match the previous entry's hash"), sound
            computed = entry_hash(
                prev_hash, seq, created_at, actor_id, actor, event, post_id, payload
            )
            if computed != stored:
                return Break(seq, "content does not match its hash (altered)"), sound
            prev_hash, expected_seq = stored, expected_seq + 1
    return None, expected_seq - 1


def verify(batch_size=5000):
    """Walk the chain; return the first broken link, or None when the chain is sound."""
    return verify_chain(batch_size)[0]
