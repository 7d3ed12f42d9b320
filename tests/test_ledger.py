"""The ledger is append-only in the database and hash-chained; verify_ledger finds a broken link."""

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from approvals import ledger
from approvals.models import LedgerEntry

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
