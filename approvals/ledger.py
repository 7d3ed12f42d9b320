"""The ledger: append, verify. One hash chain over every event, append-only in the database."""

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone

from .models import LedgerEntry, LedgerHead

GENESIS_HASH = "0" * 64

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


HEAD_TABLE = LedgerHead._meta.db_table
_SHA256_HEX = {  # the hex sha256 of the UTF-8 bytes of a text, in each database's SQL
    "postgresql": "encode(sha256(convert_to({}, 'UTF8')), 'hex')",
    "sqlite": "ledger_sha256({})",  # see register_sqlite_functions
}


def _advance_head_sql(vendor):
    """Move the head one entry on; the new hash is entry_hash's: sha256(prev_hash + body), where
    the body is the prefix passed as parameter (canonical JSON up to '"seq":') + seq + '}'.

    The head row's lock, held until commit, serializes appenders; under READ COMMITTED a waiting
    UPDATE re-reads the row its predecessor committed, so there is neither fork nor gap.
    """
    new_hash = _SHA256_HEX[vendor].format("hash || %s || CAST(seq + 1 AS TEXT) || '}'")
    return (
        f"UPDATE {HEAD_TABLE} SET prev_hash = hash, seq = seq + 1, hash = {new_hash}"
        " WHERE id = 1 RETURNING seq, prev_hash, hash"
    )


_APPEND_SQL = {
    # One statement: the head's update and the entry's insert in a data-modifying CTE.
    "postgresql": (
        f"WITH head AS ({_advance_head_sql('postgresql')})"
        f" INSERT INTO {TABLE}"
        " (seq, created_at, actor_id, actor, event, post_id, payload, prev_hash, hash)"
        " SELECT seq, %s::timestamptz, %s::bigint, %s, %s, %s::bigint, %s::jsonb, prev_hash, hash"
        " FROM head RETURNING id, seq, prev_hash, hash"
    ),
    # No DML in SQLite's CTEs: this advances the head, then the ORM inserts the entry.
    "sqlite": _advance_head_sql("sqlite"),
}

# The head row as the chain's last entry says (genesis when empty), {action} ON CONFLICT.
# The WHERE is there for SQLite, which cannot parse INSERT ... SELECT ... ON CONFLICT without one.
_HEAD_FROM_CHAIN_SQL = (
    f"INSERT INTO {HEAD_TABLE} (id, seq, prev_hash, hash) SELECT 1,"
    f" COALESCE((SELECT MAX(seq) FROM {TABLE}), 0),"
    f" COALESCE((SELECT prev_hash FROM {TABLE} ORDER BY seq DESC LIMIT 1), %s),"
    f" COALESCE((SELECT hash FROM {TABLE} ORDER BY seq DESC LIMIT 1), %s)"
    " WHERE 1 = 1 ON CONFLICT (id) DO {action}"
)


def reset_head():
    """Point the head at the chain's last entry, after entries were written other than by append
    (a bulk load). Not concurrently with appends."""
    with connection.cursor() as cursor:
        cursor.execute(
            _HEAD_FROM_CHAIN_SQL.format(
                action="UPDATE SET seq = excluded.seq, prev_hash = excluded.prev_hash,"
                " hash = excluded.hash"
            ),
            [GENESIS_HASH, GENESIS_HASH],
        )


def register_sqlite_functions(sender, connection, **kwargs):
    """connection_created receiver (apps.py): give SQLite the sha256 the head's UPDATE uses."""
    if connection.vendor == "sqlite":
        connection.connection.create_function(
            "ledger_sha256",
            1,
            lambda text: hashlib.sha256(text.encode()).hexdigest(),
            deterministic=True,
        )


def append(event, *, actor=None, post=None, **payload):
    """Append one entry. Must run inside the transaction of the change it records.

    PostgreSQL: one statement. SQLite: the head's UPDATE, then the entry's INSERT.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("ledger.append must run inside the transaction it records")
    # Round-trip through JSON now so the hash covers exactly what the database will return.
    payload_json = canonical_json(payload)
    payload = json.loads(payload_json)
    entry = LedgerEntry(
        created_at=timezone.now(),
        actor_id=getattr(actor, "pk", None),
        actor=actor.get_username() if actor is not None else "system",
        event=event,
        post_id=getattr(post, "pk", post),
        payload=payload,
    )
    # The hashed body is the canonical JSON of the seven fields; "seq" sorts last, so everything
    # before it is built here, before the head is locked, and the database appends the seq.
    body = canonical_json(
        {
            "created_at": entry.created_at.astimezone(UTC).isoformat(),
            "actor_id": entry.actor_id,
            "actor": entry.actor,
            "event": entry.event,
            "post_id": entry.post_id,
            "payload": payload,
        }
    )
    body_prefix = body[:-1] + ',"seq":'
    postgresql = connection.vendor == "postgresql"
    if postgresql:
        sql = _APPEND_SQL["postgresql"]
        params = [body_prefix, entry.created_at, entry.actor_id, entry.actor, entry.event]
        params += [entry.post_id, payload_json]
    else:
        sql, params = _APPEND_SQL["sqlite"], [body_prefix]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
        if row is None:  # no head row (a flush empties every table): rebuild it from the chain
            # DO NOTHING: of appenders racing here, one inserts and the others wait, then update it.
            cursor.execute(_HEAD_FROM_CHAIN_SQL.format(action="NOTHING"), [GENESIS_HASH] * 2)
            cursor.execute(sql, params)
            row = cursor.fetchone()
    if postgresql:
        entry.id, entry.seq, entry.prev_hash, entry.hash = row
        entry._state.adding, entry._state.db = False, connection.alias
    else:
        entry.seq, entry.prev_hash, entry.hash = row
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
