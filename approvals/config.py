"""The configuration the policy checks and routing read, as one immutable snapshot per process.

`current()` reads ConfigVersion's one row (one query) and returns the cached snapshot when it was
built under that value; otherwise it reads the tables again. Database triggers (`set_triggers`,
installed by migration 0014) give the row a new random value on any write to those tables, by
any path: the admin, QuerySet.update(), raw SQL, data migrations. Random, not a counter, so that
the value of a rolled-back change, which a process may have cached, is never reused by a later
real one. With no row (a transactional test's flush emptied the table) every call rebuilds.

`using()` pins one snapshot for a block: the checks and the route of one submit then read the
version once (when first needed), and see the same configuration.

The snapshot's model instances are shared between threads: read them, never change them.
"""

import hashlib
import threading
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType

from django.db import connection

from approvals.models import ApprovalRule, ConfigVersion, Disclaimer, LexiconEntry, NetworkRule
from approvals.policy.matcher import Matcher

VERSION_TABLE = ConfigVersion._meta.db_table
# Every table a build reads (tests/test_config.py checks it against the queries of a build).
TABLES = (
    "approvals_approvalrule",
    "approvals_rulestep",
    "auth_group",  # the steps' groups: their names are in the route
    "approvals_networkrule",
    "approvals_lexiconentry",
    "approvals_disclaimer",
    "approvals_disclaimer_teams",
    "approvals_team",  # disclaimers compare team names
)
_VERSION_SQL = f"SELECT value FROM {VERSION_TABLE} WHERE id = 1"
_LEXICON_FIELDS = (
    "id",
    "term",
    "language",
    "category",
    "severity",
    "explanation",
    "alternative",
    "exceptions",
    "enabled",
)


@dataclass(frozen=True, eq=False)
class Config:
    version: int | None  # None: built with no version row, never reused
    rules: tuple  # the enabled ApprovalRules by priority, steps and their groups prefetched
    network_rules: MappingProxyType  # {network: NetworkRule}
    disclaimers: tuple  # the enabled Disclaimers, teams prefetched
    matcher: Matcher  # the enabled lexicon entries, compiled
    lexicon_digest: bytes


_pinned = ContextVar("approvals_config_pinned", default=None)  # [snapshot or None] in `using`
_lock = threading.Lock()  # one build at a time; never taken when the cache is current
_cached = None


def read_version():
    with connection.cursor() as cursor:  # raw: no ORM query building on the hot path
        cursor.execute(_VERSION_SQL)
        row = cursor.fetchone()
    return None if row is None else row[0]


def current():
    """The pinned snapshot (see `using`), else the configuration as it is in the database."""
    pin = _pinned.get()
    if pin is not None and pin[0] is not None:
        return pin[0]
    version = read_version()  # before the tables: content read later is never older
    cached = _cached
    if version is None or cached is None or cached.version != version:
        cached = _rebuild(version)
    if pin is not None:
        pin[0] = cached
    return cached


def _rebuild(version):
    global _cached
    with _lock:
        cached = _cached
        if version is not None and cached is not None and cached.version == version:
            return cached  # another thread built it meanwhile
        _cached = _build(version, cached)
        return _cached


def _digest(entries):
    digest = hashlib.blake2b(digest_size=16)
    for entry in entries:
        digest.update(repr(tuple(getattr(entry, f) for f in _LEXICON_FIELDS)).encode())
    return digest.digest()


def _build(version, previous):
    entries = list(LexiconEntry.objects.filter(enabled=True).order_by("pk"))
    digest = _digest(entries)
    if previous is not None and previous.lexicon_digest == digest:
        matcher = previous.matcher  # the same lexicon: keep the compiled automaton
    else:
        matcher = Matcher(entries)
    rules = ApprovalRule.objects.filter(enabled=True).prefetch_related(
        "steps__group", "steps__escalation_group"
    )
    return Config(
        version=version,
        rules=tuple(rules),
        network_rules=MappingProxyType({rule.network: rule for rule in NetworkRule.objects.all()}),
        disclaimers=tuple(Disclaimer.objects.filter(enabled=True).prefetch_related("teams")),
        matcher=matcher,
        lexicon_digest=digest,
    )


@contextmanager
def using(config=None):
    """Pin `config`, by default the first snapshot read in the block (no query if none is), for
    the block; inside another block, keep that one's. A change made inside is seen after it."""
    if config is None and _pinned.get() is not None:
        yield
        return
    token = _pinned.set([config])
    try:
        yield
    finally:
        _pinned.reset(token)


# --- Triggers -------------------------------------------------------------------------------------

_FUNCTION = "approvals_config_changed"


def _statements(vendor, tables, enabled):
    if vendor == "sqlite":  # row-level only; trigger names are global
        bump = f"UPDATE {VERSION_TABLE} SET value = random() WHERE id = 1"
        for table in tables:
            for op in ("INSERT", "UPDATE", "DELETE"):
                name = f"config_changed_{table}_{op.lower()}"
                yield (
                    f"CREATE TRIGGER IF NOT EXISTS {name} AFTER {op} ON {table} BEGIN {bump}; END"
                    if enabled
                    else f"DROP TRIGGER IF EXISTS {name}"
                )
    elif vendor == "postgresql":
        if enabled:
            # random() has 52 random bits: a value is never seen twice in practice.
            yield f"""CREATE OR REPLACE FUNCTION {_FUNCTION}() RETURNS trigger AS $$
                BEGIN
                    UPDATE {VERSION_TABLE} SET value = (random() * 9e18)::bigint WHERE id = 1;
                    RETURN NULL;
                END; $$ LANGUAGE plpgsql"""
        for table in tables:
            yield (
                f"""CREATE OR REPLACE TRIGGER {_FUNCTION}
                    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table}
                    FOR EACH STATEMENT EXECUTE FUNCTION {_FUNCTION}()"""
                if enabled
                else f"DROP TRIGGER IF EXISTS {_FUNCTION} ON {table}"
            )
    else:
        raise NotImplementedError(f"No configuration triggers for {vendor}")


def set_triggers(conn, enabled, tables=TABLES):
    """Install (or remove) the triggers that change the version on a write to `tables`."""
    with conn.cursor() as cursor:
        for sql in _statements(conn.vendor, tables, enabled):
            cursor.execute(sql)


__all__ = ["TABLES", "Config", "current", "read_version", "set_triggers", "using"]
