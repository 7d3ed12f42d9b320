"""The ledger is append-only in the database and hash-chained; verify_ledger finds a broken link."""

import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from approvals import ledger
from approvals.models import LedgerEntry, LedgerHead

BLNS = json.loads((Path(__file__).parent / "data" / "blns_selection.json").read_text("utf-8"))

pytestmark = pytest.mark.django_db


@pytest.fixture
def chain(world):
    with transaction.atomic():
        for n in range(5):
            ledger.append("test.event", actor=world.carla, n=n, text="Taux < 3 % & zéro frais ✓")
    return list(LedgerEntry.objects.order_by("seq"))


def test_entries_are_chained_from_genesis(chain):
    assert chain[0].prev_hash == ledger.GENESIS_HASH
    for previous, entry in zip(chain, chain[1:], strict=False):
        assert entry.prev_hash == previous.hash
        assert entry.seq == previous.seq + 1
    assert ledger.verify() is None


@pytest.mark.django_db(transaction=True)
def test_append_outside_a_transaction_is_refused(world):
    with pytest.raises(RuntimeError):
        ledger.append("test.event", actor=world.carla)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE approvals_ledgerentry SET actor = 'mallory'",
        "DELETE FROM approvals_ledgerentry",
    ],
)
def test_database_refuses_update_and_delete(chain, statement):
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(statement)
    assert LedgerEntry.objects.filter(actor="carla").count() == len(chain)


def test_orm_update_and_delete_are_refused_too(chain):
    with pytest.raises(DatabaseError), transaction.atomic():
        LedgerEntry.objects.filter(pk=chain[0].pk).update(event="x")
    with pytest.raises(DatabaseError), transaction.atomic():
        chain[1].delete()


@pytest.mark.postgres
def test_postgres_refuses_truncate(chain):
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE approvals_ledgerentry")


def test_verify_ledger_command_passes_on_a_sound_chain(chain, capsys):
    call_command("verify_ledger")
    assert "5 entries verified" in capsys.readouterr().out


def _tamper(sql, params):
    """What an attacker with database access does: drop the trigger, rewrite a row."""
    ledger.set_append_only(connection, False)
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
    finally:
        ledger.set_append_only(connection, True)


def test_verify_ledger_names_the_first_altered_entry(chain):
    _tamper(
        "UPDATE approvals_ledgerentry SET payload = %s WHERE seq = %s",
        ['{"n": 99, "text": "rewritten"}', chain[2].seq],
    )
    with pytest.raises(CommandError) as error:
        call_command("verify_ledger")
    assert error.value.returncode == 1
    assert f"entry #{chain[2].seq}" in str(error.value)
    assert "altered" in str(error.value)


def test_verify_ledger_finds_a_deleted_entry(chain):
    _tamper("DELETE FROM approvals_ledgerentry WHERE seq = %s", [chain[1].seq])
    broken = ledger.verify()
    assert broken.seq == chain[1].seq and "missing" in broken.reason


def test_verify_ledger_finds_a_recomputed_hash(chain):
    """Rewriting a row and its own hash still breaks the next entry's link."""
    entry = chain[3]
    forged = ledger.entry_hash(
        entry.prev_hash,
        entry.seq,
        entry.created_at,
        entry.actor_id,
        "mallory",
        entry.event,
        entry.post_id,
        entry.payload,
    )
    _tamper(
        "UPDATE approvals_ledgerentry SET actor = 'mallory', hash = %s WHERE seq = %s",
        [forged, entry.seq],
    )
    broken = ledger.verify()
    assert broken.seq == chain[4].seq


# --- the head: one statement per append, the same hash as entry_hash --------------------------


def _head():
    head = LedgerHead.objects.get()
    return head.seq, head.prev_hash, head.hash


def _recomputed(entry):
    return ledger.entry_hash(
        entry.prev_hash,
        entry.seq,
        entry.created_at,
        entry.actor_id,
        entry.actor,
        entry.event,
        entry.post_id,
        entry.payload,
    )


AWKWARD_PAYLOADS = [
    {"text": "Taux < 3 % & zéro frais ✓ — « capital à risque »", "emoji": "🎉👩‍👩‍👧 🇫🇷"},
    {"quotes": "il a dit \"oui\" et 'non'", "backslashes": "C:\\temp\\n \\u00e9 \\", "sql": "'}'"},
    {"nested": {"z": [1, 2.5, None, True, {"é": "ß", "a": []}], "a": {"b": {"c": "d"}}}},
    {"controls": "line\nbreak\ttab\r\u2028\u2029\x7f\x1b", "rtl": "\u202eevil\u202c"},
    {"keys": {"Z": 1, "a": 2, "é": 3, "🎉": 4, "": 5, "seq": 6}, "seq": "not the entry's"},
    {"blns": BLNS},
    {},
]


def test_the_database_hashes_as_entry_hash_does(world):
    """The hash computed in SQL (PostgreSQL's sha256, SQLite's registered function) equals
    entry_hash's for awkward text, nested objects and no actor or post."""
    with transaction.atomic():
        returned = [
            ledger.append("test.awkward", actor=world.carla, post=7, **payload)
            for payload in AWKWARD_PAYLOADS
        ]
        returned.append(ledger.append("test.awkward", actor=None, post=None, **{"x": "\\"}))
    stored = list(LedgerEntry.objects.order_by("seq"))
    assert [e.pk for e in returned] == [e.pk for e in stored]
    for got, entry in zip(returned, stored, strict=True):
        assert (got.seq, got.prev_hash, got.hash) == (entry.seq, entry.prev_hash, entry.hash)
        assert got.created_at == entry.created_at and got.payload == entry.payload
        assert entry.hash == _recomputed(entry)
    assert stored[-1].actor_id is None and stored[-1].actor == "system"
    assert stored[-1].post_id is None
    assert _head() == (stored[-1].seq, stored[-1].prev_hash, stored[-1].hash)
    assert ledger.verify() is None


@pytest.mark.postgres
def test_an_append_is_one_statement_on_postgresql(world):
    with transaction.atomic():
        ledger.append("test.event", actor=world.carla, n=0)
        with CaptureQueriesContext(connection) as queries:
            ledger.append("test.event", actor=world.carla, n=1)
    assert len(queries) == 1, [q["sql"] for q in queries]
    assert ledger.verify() is None


def test_the_head_follows_the_chain(chain):
    last = chain[-1]
    assert _head() == (last.seq, last.prev_hash, last.hash)


def test_a_missing_head_row_is_rebuilt_from_the_chain(chain, world):
    """A flush empties every table, the head's too: the next append starts from the chain."""
    LedgerHead.objects.all().delete()
    with transaction.atomic():
        entry = ledger.append("test.event", actor=world.carla, n=5)
    assert (entry.seq, entry.prev_hash) == (chain[-1].seq + 1, chain[-1].hash)
    assert ledger.verify() is None


@pytest.mark.django_db(transaction=True)
def test_after_a_flush_the_chain_starts_again_from_genesis(world):
    with transaction.atomic():
        ledger.append("test.event", actor=world.carla, n=0)
    ledger.set_append_only(connection, False)  # as tests/conftest.py does before a flush
    call_command("flush", interactive=False, verbosity=0)
    ledger.set_append_only(connection, True)
    assert not LedgerEntry.objects.exists() and not LedgerHead.objects.exists()
    with transaction.atomic():
        first = ledger.append("test.event", n=1)
        second = ledger.append("test.event", n=2)
    assert (first.seq, first.prev_hash) == (1, ledger.GENESIS_HASH)
    assert (second.seq, second.prev_hash) == (2, first.hash)
    assert ledger.verify() is None


def test_reset_head_follows_entries_written_in_bulk(chain, world):
    """As benchmarks/ledger.py does after loading a chain with COPY."""
    last = chain[-1]
    seq, created_at = last.seq + 1, last.created_at
    payload = {"bulk": True}
    forged = ledger.entry_hash(last.hash, seq, created_at, None, "system", "bulk", None, payload)
    LedgerEntry.objects.create(
        seq=seq,
        created_at=created_at,
        actor="system",
        event="bulk",
        payload=payload,
        prev_hash=last.hash,
        hash=forged,
    )
    ledger.reset_head()
    assert _head() == (seq, last.hash, forged)
    with transaction.atomic():
        entry = ledger.append("test.event", actor=world.carla)
    assert (entry.seq, entry.prev_hash) == (seq + 1, forged)
    assert ledger.verify() is None


@pytest.mark.parametrize(
    "tampering, reason",
    [("hash = %s", "prev_hash does not match"), ("seq = seq + 3", "missing")],
)
def test_a_tampered_head_shows_at_the_next_entry(chain, world, tampering, reason):
    """The head is mutable by design: rewriting it breaks the next entry's link, which verify
    names."""
    with connection.cursor() as cursor:
        params = ["f" * 64] if "%s" in tampering else []
        cursor.execute(f"UPDATE {ledger.HEAD_TABLE} SET {tampering}", params)
    with transaction.atomic():
        ledger.append("test.event", actor=world.carla, n=5)
    broken = ledger.verify()
    assert broken.seq == chain[-1].seq + 1 and reason in broken.reason


def test_a_head_rewound_to_fork_the_chain_is_refused(chain, world):
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {ledger.HEAD_TABLE} SET seq = %s, hash = %s",
            [chain[-2].seq, chain[-2].hash],
        )
    with pytest.raises(IntegrityError), transaction.atomic():
        ledger.append("test.event", actor=world.carla, n=5)
    assert ledger.verify() is None


# --- batches: the entries of one transaction in one statement ----------------------------------


def _assert_sound(entries):
    """The entries are the chain's last, as consecutive appends leave them."""
    stored = list(LedgerEntry.objects.order_by("seq"))
    assert [(e.pk, e.seq, e.hash) for e in entries] == [
        (e.pk, e.seq, e.hash) for e in stored[-len(entries) :]
    ]
    for previous, entry in zip(stored, stored[1:], strict=False):
        assert (entry.seq, entry.prev_hash) == (previous.seq + 1, previous.hash)
    assert all(entry.hash == _recomputed(entry) for entry in stored)
    assert _head() == (stored[-1].seq, stored[-1].prev_hash, stored[-1].hash)
    assert ledger.verify() is None


@pytest.mark.postgres
def test_a_batch_is_one_statement_on_postgresql(world):
    with transaction.atomic():
        with CaptureQueriesContext(connection) as queries, ledger.batch() as entries:
            for n in range(3):
                assert ledger.append("test.event", actor=world.carla, n=n) is None
    assert len(queries) == 1, [q["sql"] for q in queries]
    assert [e.payload["n"] for e in entries] == [0, 1, 2]
    _assert_sound(entries)


def test_batches_and_single_appends_make_one_chain(world):
    entries = []
    with transaction.atomic():
        entries.append(ledger.append("test.single", actor=world.carla, n=0))
        with ledger.batch() as batched:
            ledger.append("test.batched", actor=world.carla, post=7, n=1)
            ledger.append("test.batched", n=2)
        entries += batched
        entries.append(ledger.append("test.single", n=3))
        for ns in ([4], [5, 6, 7]):
            with ledger.batch() as batched:
                for n in ns:
                    ledger.append("test.batched", actor=world.rita, n=n)
            entries += batched
    assert [e.payload["n"] for e in entries] == list(range(8))
    assert [e.seq for e in entries] == list(range(1, 9))
    _assert_sound(entries)


def test_a_nested_batch_is_written_by_the_outermost(world):
    with transaction.atomic(), ledger.batch() as outer:
        ledger.append("test.event", n=0)
        with ledger.batch() as inner:
            ledger.append("test.event", n=1)
        assert inner is outer and not LedgerEntry.objects.exists()
        with CaptureQueriesContext(connection) as queries:
            ledger.append("test.event", n=2)
    assert len(queries) == 0
    assert [e.payload["n"] for e in outer] == [0, 1, 2]
    _assert_sound(outer)


def test_a_batch_that_raises_writes_nothing(world):
    with transaction.atomic():
        with (
            CaptureQueriesContext(connection) as queries,
            pytest.raises(ValueError),
            ledger.batch() as dropped,
        ):
            ledger.append("test.event", n=0)
            raise ValueError
        assert len(queries) == 0 and dropped == []
        entry = ledger.append("test.event", n=1)  # the chain goes on as if they never were
    assert entry.seq == 1
    _assert_sound([entry])


@pytest.mark.django_db(transaction=True)
def test_a_batch_outside_a_transaction_is_refused(world):
    with pytest.raises(RuntimeError, match="inside the transaction"), ledger.batch():
        pass
    with transaction.atomic(), ledger.batch():  # and the refusal left no batch open
        pass
    with transaction.atomic():
        assert ledger.append("test.event") is not None


def test_awkward_payloads_in_a_batch_hash_as_entry_hash_does(world):
    """The batch hashes in SQL what a single append does: the same body, the same sha256."""
    with transaction.atomic():
        single = ledger.append("test.awkward", actor=world.carla, post=7, **AWKWARD_PAYLOADS[0])
        with ledger.batch() as batched:
            for payload in AWKWARD_PAYLOADS:
                ledger.append("test.awkward", actor=world.carla, post=7, **payload)
            ledger.append("test.awkward", actor=None, post=None, **{"x": "\\"})
    assert [e.payload for e in batched] == [*AWKWARD_PAYLOADS, {"x": "\\"}]
    assert batched[0].hash == ledger.entry_hash(
        single.hash, single.seq + 1, batched[0].created_at, *_fields(single)
    )
    _assert_sound([single, *batched])


def _fields(entry):
    return entry.actor_id, entry.actor, entry.event, entry.post_id, entry.payload


def test_a_batch_rebuilds_a_missing_head_row(chain):
    LedgerHead.objects.all().delete()
    with transaction.atomic(), ledger.batch() as entries:
        ledger.append("test.event", n=5)
        ledger.append("test.event", n=6)
    assert (entries[0].seq, entries[0].prev_hash) == (chain[-1].seq + 1, chain[-1].hash)
    _assert_sound(entries)


def test_a_savepoint_rolled_back_inside_a_batch_takes_its_entries(world):
    """As without a batch: what a rolled-back savepoint appended is not written, the rest is."""
    with transaction.atomic(), ledger.batch() as entries:
        ledger.append("test.event", n=0)
        with pytest.raises(ValueError), transaction.atomic():
            ledger.append("test.event", n=99)
            raise ValueError
        with transaction.atomic():
            ledger.append("test.event", n=1)
        ledger.append("test.event", n=2)
    assert [e.payload["n"] for e in entries] == [0, 1, 2]
    _assert_sound(entries)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_batch_belongs_to_its_thread(world):
    """Another thread appending meanwhile writes at once, and the batch follows its entry."""
    from threading import Thread

    others = []

    def append_elsewhere():
        try:
            with transaction.atomic():
                others.append(ledger.append("test.other"))
        finally:
            connection.close()

    with transaction.atomic(), ledger.batch() as entries:
        ledger.append("test.event", n=0)
        thread = Thread(target=append_elsewhere)
        thread.start()
        thread.join()
        ledger.append("test.event", n=1)
    assert others[0] is not None and others[0].seq == 1
    assert [e.seq for e in entries] == [2, 3]
    _assert_sound(entries)


@pytest.mark.django_db(transaction=True)
def test_a_break_found_mid_stream_leaves_the_connection_usable(world):
    """verify stops at the first break while the database is still sending rows: those are
    dropped, and the same connection serves the next query and the next append."""
    with transaction.atomic():
        for n in range(12):
            ledger.append("test.event", actor=world.carla, n=n)
    entries = list(LedgerEntry.objects.order_by("seq"))
    _tamper("UPDATE approvals_ledgerentry SET actor = 'mallory' WHERE seq = %s", [entries[2].seq])
    broken, sound, _ = ledger.verify_chain(batch_size=2)
    assert (broken.seq, sound) == (entries[2].seq, 2)
    assert LedgerEntry.objects.count() == 12
    with transaction.atomic():
        ledger.append("test.event", actor=world.carla, n=12)
    assert ledger.verify_chain(batch_size=2)[0].seq == entries[2].seq


# --- anchors: hashes kept outside the database ---------------------------------------------------


def _head_anchor(capsys):
    call_command("verify_ledger")
    [head] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Head: ")]
    return head.removeprefix("Head: ")


def _rewrite_from(entries, index, actor):
    """What an insider able to drop the triggers does to hide a change: rewrite an entry, then
    every later entry's links and hashes, so that the chain alone verifies."""
    prev_hash = entries[index].prev_hash
    for n, entry in enumerate(entries[index:]):
        new_actor = actor if n == 0 else entry.actor
        hash = ledger.entry_hash(
            prev_hash,
            entry.seq,
            entry.created_at,
            entry.actor_id,
            new_actor,
            entry.event,
            entry.post_id,
            entry.payload,
        )
        _tamper(
            "UPDATE approvals_ledgerentry SET actor = %s, prev_hash = %s, hash = %s WHERE seq = %s",
            [new_actor, prev_hash, hash, entry.seq],
        )
        prev_hash = hash
    ledger.set_append_only(connection, False)
    try:
        ledger.reset_head()
    finally:
        ledger.set_append_only(connection, True)


def test_an_anchor_catches_a_chain_rewritten_whole(chain, capsys):
    anchor = _head_anchor(capsys)
    assert anchor == f"{chain[-1].seq}:{chain[-1].hash}"
    _rewrite_from(chain, 2, "mallory")
    assert ledger.verify() is None  # the chain alone cannot tell
    with pytest.raises(CommandError) as error:
        call_command("verify_ledger", "--anchor", anchor)
    assert error.value.returncode == 1
    assert str(error.value) == (
        f"Ledger broken at entry #{chain[-1].seq}: its hash is not its anchor's:"
        " the chain was rewritten"
    )


def test_an_anchor_catches_a_chain_rewritten_shorter(chain, capsys):
    anchor = _head_anchor(capsys)
    _tamper("DELETE FROM approvals_ledgerentry WHERE seq >= %s", [chain[3].seq])
    ledger.set_append_only(connection, False)
    try:
        ledger.reset_head()
    finally:
        ledger.set_append_only(connection, True)
    assert ledger.verify() is None
    broken, sound, head = ledger.verify_chain(anchors=dict([ledger.parse_anchor(anchor)]))
    assert (broken.seq, sound) == (chain[-1].seq, 3)
    assert head == chain[2].hash  # the last entry verified sound
    assert "missing: its anchor shows it existed" in broken.reason


def test_verify_ledger_keeps_its_head_and_checks_every_anchor_kept(chain, world, tmp_path, capsys):
    kept = tmp_path / "anchors.txt"
    call_command("verify_ledger", "--keep-anchor", str(kept))
    first = f"{chain[-1].seq}:{chain[-1].hash}"
    assert kept.read_text() == first + "\n"
    with transaction.atomic():
        ledger.append("test.event", actor=world.carla, n=5)
    kept.write_text("# kept by the nightly check\n\n" + kept.read_text())
    call_command("verify_ledger", "--anchors", str(kept), "--keep-anchor", str(kept))
    out = capsys.readouterr().out
    assert "Ledger sound: 6 entries verified, 1 anchor held." in out
    second = f"6:{LedgerEntry.objects.get(seq=6).hash}"
    assert f"Head: {second}" in out
    assert kept.read_text().splitlines()[-2:] == [first, second]


@pytest.mark.parametrize(
    "anchor",
    ["5", "five:" + "0" * 64, "0:" + "0" * 64, "5:" + "0" * 63, "5:" + "G" * 64, "-1:" + "0" * 64],
)
def test_an_anchor_that_does_not_parse_is_refused_before_anything(chain, tmp_path, anchor):
    kept = tmp_path / "anchors.txt"
    with pytest.raises(CommandError, match="is not an anchor: write it as SEQ:HASH"):
        call_command("verify_ledger", f"--anchor={anchor}", "--keep-anchor", str(kept))
    assert not kept.exists()


def test_anchors_that_disagree_or_cannot_be_read_are_refused(chain, tmp_path):
    one, other = f"1:{'a' * 64}", f"1:{'b' * 64}"
    with pytest.raises(CommandError, match="another anchor gives entry #1 another hash"):
        call_command("verify_ledger", "--anchor", one, "--anchor", other)
    with pytest.raises(CommandError, match="Cannot read .*missing.txt: No such file"):
        call_command("verify_ledger", "--anchors", str(tmp_path / "missing.txt"))
    binary = tmp_path / "anchors.bin"
    binary.write_bytes(b"\xff\xfe1:")
    with pytest.raises(CommandError, match="Cannot read .*anchors.bin: not UTF-8 text"):
        call_command("verify_ledger", "--anchors", str(binary))
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{one}\nnot an anchor\n")
    with pytest.raises(CommandError, match=r"bad.txt, line 2: 'not an anchor' is not an anchor"):
        call_command("verify_ledger", "--anchors", str(bad))
    with pytest.raises(CommandError, match="Anchors are for the live chain"):
        call_command("verify_ledger", "--file", str(bad), "--anchor", one)


def test_the_ledger_page_shows_the_head_as_an_anchor(chain, client, world):
    client.force_login(world.carla)
    page = client.get(reverse("admin:approvals_ledgerentry_changelist")).content.decode()
    assert f"<code>{chain[-1].seq}:{chain[-1].hash}</code>" in page


def test_an_empty_ledger_has_no_head_to_keep(world, tmp_path, capsys):
    kept = tmp_path / "anchors.txt"
    call_command("verify_ledger", "--keep-anchor", str(kept))
    assert capsys.readouterr().out == "Ledger sound: 0 entries verified.\n"
    assert not kept.exists()
