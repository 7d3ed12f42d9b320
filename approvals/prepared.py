"""Queries built and compiled once per process, then run again with new values.

Django builds and compiles a queryset anew every time it runs it. For the workflow's richest
reads (the post locked with the reviewer's grant, the open steps with every segregation-of-duties
answer, the recipients of a mail) that work cost more of a post's CPU time than the database did
(README, "Throughput"). A prepared query is still written once, as an ordinary queryset, by a
function: its positional arguments give the query's shape (which parts it has), its keyword
arguments the values it compares with (None, a boolean or an expression among them is passed as
it is, and so decides the shape too). The function is run and compiled once per shape and
database with stand-in values, twice with different ones; both compilations must give the same
SQL, the stand-ins in the same parameters and the same other parameters. Otherwise the query
runs unprepared, as Django builds it, and a warning says so: a value that Django would inline,
transform or branch on is caught when the query is first used, instead of being frozen into every
later run. Each run then puts its values into those parameters and lets Django read the rows into
model instances as usual, or updates the rows (`update(**changes)`, whose values are parameters
as well).

The function must depend on its arguments alone: no clock, no settings, no database read.
"""

import copy
import datetime
import itertools
import logging
from functools import update_wrapper

from django.core.exceptions import EmptyResultSet, ImproperlyConfigured, ValidationError
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models.query import ModelIterable, ValuesListIterable
from django.db.models.sql import UpdateQuery
from django.db.transaction import TransactionManagementError

# Stand-in integers: positive and small, so that no field's range check (a positive or a small
# integer field) takes them for out of range; two sets, so that a constant of the query equal to
# one of them is caught by the other.
_INTS = (20_011, 23_017)
# Real values beyond what any database column holds match nothing, as Django answers them.
_INT_RANGE = range(-(2**63), 2**63)
_CHANGE = "change"  # the values of an UPDATE's changes are named (_CHANGE, column)

log = logging.getLogger(__name__)


def prepared(build):
    """`build(*shape, **values)` returns a queryset; calling the result with the same arguments
    returns a `Bound` query, compiled once per shape (and type of each value) and database."""
    return update_wrapper(Prepared(build), build)


class Prepared:
    def __init__(self, build):
        self.build = build
        self._compiled = {}

    def __call__(self, *shape, **values):
        return Bound(self, shape, values)

    def compiled(self, using, shape, values, changes=None):
        """The compilation for these values (or for an UPDATE of the rows with `changes`), or
        None when the query cannot be prepared: it then runs as Django builds it, and says so."""
        try:
            key = (using, shape, _kinds(values), None if changes is None else _kinds(changes))
        except TypeError as error:  # a value of a kind not prepared
            log.warning("%s runs unprepared: %s", self.build.__qualname__, error)
            return None
        try:
            return self._compiled[key]
        except KeyError:
            pass
        try:
            first, second = (
                self._compile(using, shape, values, changes, stand_ins) for stand_ins in (0, 1)
            )
        except (TypeError, ValueError, ValidationError) as error:  # a stand-in of a wrong type
            log.warning("%s runs unprepared: %r", self.build.__qualname__, error)
            first = second = None
        if first != second:
            log.warning(
                "%s runs unprepared: its values change more of the query than its parameters "
                "(they are inlined, transformed or decide its shape; pass what decides the shape "
                "as a positional argument)",
                self.build.__qualname__,
            )
            first = None
        self._compiled[key] = first
        return first

    def _compile(self, using, shape, values, changes, which):
        numbers = itertools.count(_INTS[which], 7 + which * 4)
        stand_ins = {name: _stand_in(value, numbers, which) for name, value in values.items()}
        queryset = self.build(*shape, **stand_ins)
        if queryset._prefetch_related_lookups:
            raise ImproperlyConfigured("A prepared query does not prefetch: prefetch after it.")
        if queryset._iterable_class not in (ModelIterable, ValuesListIterable):
            raise ImproperlyConfigured("A prepared query reads instances or values_list() rows.")
        connection = connections[using]
        query = queryset.query
        if changes is not None:  # as QuerySet.update() compiles it
            changed = {name: _stand_in(value, numbers, which) for name, value in changes.items()}
            query = query.chain(UpdateQuery)
            query.add_update_values(changed)
            query.annotations = {}
            stand_ins.update({(_CHANGE, name): one for name, one in changed.items()})
        compiler = query.get_compiler(using=using)
        try:
            sql, params = compiler.as_sql()
        except EmptyResultSet:
            return _Compiled(queryset, None, None, (), (), None)
        adapt = connection.ops.adapt_datetimefield_value  # what Django sends for a datetime
        where = {}
        for name, stand_in in stand_ins.items():
            many = isinstance(stand_in, tuple)
            for index, one in enumerate(stand_in if many else (stand_in,)):
                if _as_is(one):
                    continue
                if isinstance(one, datetime.datetime):
                    where[adapt(one)] = (name, index if many else None, adapt)
                else:
                    where[one] = (name, index if many else None, None)
        slots, constants = [], []
        for position, param in enumerate(params):
            try:
                slot = where.get(param)
            except TypeError:  # unhashable, so no stand-in
                slot = None
            if slot is None:
                constants.append((position, param))
            else:
                slots.append((position, *slot))
        return _Compiled(queryset, compiler, sql, tuple(slots), tuple(constants), len(params))


def _as_is(value):
    """None, a boolean or an expression: run as it is (it decides the SQL's shape)."""
    return value is None or isinstance(value, bool) or hasattr(value, "resolve_expression")


def _kinds(values):
    return tuple((name, _kind(value)) for name, value in sorted(values.items()))


def _kind(value):
    if _as_is(value):
        return (None, value)
    if isinstance(value, (list, tuple)):
        if not all(isinstance(one, (int, str)) and not _as_is(one) for one in value):
            raise TypeError(f"A prepared query takes lists of integers or strings, not {value!r}.")
        return (tuple, len(value))
    if not isinstance(value, (int, str, datetime.datetime)):
        raise TypeError(f"A prepared query takes integers, strings and datetimes, not {value!r}.")
    return type(value)


def _stand_in(value, numbers, which):
    if _as_is(value):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_stand_in(one, numbers, which) for one in value)
    number = next(numbers)
    if isinstance(value, int):
        return number
    if isinstance(value, str):
        return f"prepared stand-in {number}"
    return datetime.datetime(1901 + which, 2, 3, 4, 5, 6, number, tzinfo=datetime.UTC)


class _Compiled:
    """One compilation: its SQL, which parameters take which value, and the compiler whose
    state (columns, related models, annotations) reads the rows back."""

    def __init__(self, queryset, compiler, sql, slots, constants, count):
        self.queryset, self.compiler, self.sql = queryset, compiler, sql
        self.slots, self.constants, self.count = slots, constants, count

    def __eq__(self, other):
        return (self.sql, self.slots, self.constants, self.count) == (
            other.sql,
            other.slots,
            other.constants,
            other.count,
        )

    def params(self, values):
        params = [None] * self.count
        for position, constant in self.constants:
            params[position] = constant
        for position, name, index, adapt in self.slots:
            value = values[name] if index is None else values[name][index]
            params[position] = adapt(value) if adapt else value
        return tuple(params)


class _Run:
    """What Django's iterables read of a queryset, with the compiler given."""

    _known_related_objects = {}

    def __init__(self, model, db, compiler):
        self.model, self.db, self.query, self._compiler = model, db, self, compiler

    def get_compiler(self, using=None, connection=None, elide_empty=True):
        return self._compiler


class Bound:
    """A prepared query with its values: `get()`, `all()` (instances, or the rows of a
    `values_list()`), `update(**changes)`, or its `sql_with_params()`."""

    def __init__(self, prepared_query, shape, values, using=DEFAULT_DB_ALIAS):
        self.prepared, self.shape, self.values, self.using = prepared_query, shape, values, using

    def _compiled(self, changes=None):
        """The compilation, None to run unprepared, or EmptyResultSet when nothing can match."""
        compiled = self.prepared.compiled(self.using, self.shape, self.values, changes)
        if compiled is not None and (
            compiled.sql is None
            or not all(
                value in _INT_RANGE
                for value in _flat(self.values.values())
                if isinstance(value, int) and not isinstance(value, bool)
            )
        ):
            raise EmptyResultSet
        return compiled

    def _unprepared(self):
        """The queryset itself, built with these values."""
        return self.prepared.build(*self.shape, **self.values).using(self.using)

    def sql_with_params(self):
        compiled = self._compiled()
        if compiled is None:
            return self._unprepared().query.sql_with_params()
        return compiled.sql, compiled.params(self.values)

    def all(self):
        try:
            compiled = self._compiled()
        except EmptyResultSet:
            return []
        if compiled is None:
            return list(self._unprepared())
        connection = connections[self.using]
        if (  # as Django refuses it
            compiled.queryset.query.select_for_update
            and connection.features.has_select_for_update
            and connection.get_autocommit()
        ):
            raise TransactionManagementError(
                "select_for_update cannot be used outside of a transaction."
            )
        compiler = copy.copy(compiled.compiler)
        compiler.connection = connection  # this thread's
        sql, params = compiled.sql, compiled.params(self.values)
        compiler.as_sql = lambda *args, **kwargs: (sql, params)
        queryset = compiled.queryset
        return list(queryset._iterable_class(_Run(queryset.model, self.using, compiler)))

    def update(self, **changes):
        """Set `changes` on the rows the query reads, as QuerySet.update(); how many changed."""
        try:
            compiled = self._compiled(changes)
        except EmptyResultSet:
            return 0
        if compiled is None:
            return self._unprepared().update(**changes)
        values = {**self.values, **{(_CHANGE, name): value for name, value in changes.items()}}
        with transaction.mark_for_rollback_on_error(self.using):
            with connections[self.using].cursor() as cursor:
                cursor.execute(compiled.sql, compiled.params(values))
                return cursor.rowcount

    def get(self):
        rows = self.all()
        if len(rows) == 1:
            return rows[0]
        model = self._unprepared().model
        if not rows:
            raise model.DoesNotExist(f"{model._meta.object_name} matching query does not exist.")
        raise model.MultipleObjectsReturned(f"get() returned {len(rows)} rows.")


def _flat(values):
    for value in values:
        yield from value if isinstance(value, (list, tuple)) else [value]
