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


def canonical_json(value):
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, cls=DjangoJSONEncoder
    )


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
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK_KEY])
    head = LedgerEntry.objects.order_by("-seq").values("seq", "hash").first()
    seq, prev_hash = (head["seq"] + 1, head["hash"]) if head else (1, GENESIS_HASH)
    created_at = timezone.now()
    actor_id = getattr(actor, "pk", None)
    actor_name = actor.get_username() if actor is not None else "system"
    post_id = getattr(post, "pk", post)
    return LedgerEntry.objects.create(
        seq=seq,
        created_at=created_at,
        actor_id=actor_id,
        actor=actor_name,
        event=event,
        post_id=post_id,
        payload=payload,
        prev_hash=prev_hash,
        hash=entry_hash(prev_hash, seq, created_at, actor_id, actor_name, event, post_id, payload),
    )


@dataclass
class Break:
    seq: int
    reason: str

    def __str__(self):
        return f"entry #{self.seq}: {self.reason}"


def verify(batch_size=2000):
    """Walk the chain; return the first broken link, or None when the chain is sound."""
    prev_hash, expected_seq = GENESIS_HASH, 1
    with transaction.atomic():
        entries = LedgerEntry.objects.order_by("seq").iterator(chunk_size=batch_size)
        for entry in entries:
            if entry.seq != expected_seq:
                return Break(expected_seq, f"missing (next entry found is #{entry.seq})")
            if entry.prev_hash != prev_hash:
                return Break(entry.seq, "prev_hash does not match the previous entry's hash")
            computed = entry_hash(
                prev_hash,
                entry.seq,
                entry.created_at,
                entry.actor_id,
                entry.actor,
                entry.event,
                entry.post_id,
                entry.payload,
            )
            if computed != entry.hash:
                return Break(entry.seq, "content does not match its hash (altered)")
            prev_hash, expected_seq = entry.hash, expected_seq + 1
    return None
