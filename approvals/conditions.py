"""Approval-rule conditions: a small JSON language, one class per test.

A condition is {} (always true), {"all": [...]}, {"any": [...]}, {"not": {...}}, or one test such
as {"network": ["x", "linkedin"]}. Adding a kind of test is one small class in TESTS.
"""

from dataclasses import dataclass, field


class ConditionError(ValueError):
    """A condition an admin wrote that cannot be understood; the message says where."""


@dataclass(frozen=True)
class Facts:
    """What rules can test about a revision being submitted."""

    team: str
    networks: frozenset
    account_ids: frozenset
    tags: frozenset = frozenset()
    has_link: bool = False
    has_media: bool = False
    length: int = 0
    findings: tuple = field(default=())  # (category, severity) pairs, once checks exist


class Always:
    def matches(self, facts):
        return True

    def describe(self):
        return "every post"


@dataclass
class All:
    parts: list

    def matches(self, facts):
        return all(part.matches(facts) for part in self.parts)

    def describe(self):
        return " and ".join(f"({p.describe()})" for p in self.parts) or "every post"


@dataclass
class Any:
    parts: list

    def matches(self, facts):
        return any(part.matches(facts) for part in self.parts)

    def describe(self):
        return " or ".join(f"({p.describe()})" for p in self.parts) or "no post"


@dataclass
class Not:
    part: object

    def matches(self, facts):
        return not self.part.matches(facts)

    def describe(self):
        return f"not ({self.part.describe()})"


def _strings(key, value):
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConditionError(f'"{key}" needs a name or a list of names, e.g. {{"{key}": ["…"]}}')
    return frozenset(v.strip().lower() for v in value)


@dataclass
class Network:
    networks: frozenset
    key = "network"

    @classmethod
    def parse(cls, value):
        return cls(_strings(cls.key, value))

    def matches(self, facts):
        return bool(self.networks & facts.networks)

    def describe(self):
        return "published on " + " or ".join(sorted(self.networks))


@dataclass
class Team:
    teams: frozenset
    key = "team"

    @classmethod
    def parse(cls, value):
        return cls(_strings(cls.key, value))

    def matches(self, facts):
        return facts.team.lower() in self.teams

    def describe(self):
        return "author in team " + " or ".join(sorted(self.teams))


@dataclass
class TagTest:
    tags: frozenset
    key = "tag"

    @classmethod
    def parse(cls, value):
        return cls(_strings(cls.key, value))

    def matches(self, facts):
        return bool(self.tags & {t.lower() for t in facts.tags})

    def describe(self):
        return "tagged " + " or ".join(sorted(self.tags))


@dataclass
class Account:
    ids: frozenset
    key = "account"

    @classmethod
    def parse(cls, value):
        if isinstance(value, int):
            value = [value]
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            raise ConditionError('"account" needs an account id or a list of ids, e.g. [3, 7]')
        return cls(frozenset(value))

    def matches(self, facts):
        return bool(self.ids & facts.account_ids)

    def describe(self):
        return "to account " + " or ".join(f"#{i}" for i in sorted(self.ids))


@dataclass
class Flag:
    wanted: bool
    key = ""
    label = ""

    @classmethod
    def parse(cls, value):
        if not isinstance(value, bool):
            raise ConditionError(f'"{cls.key}" needs true or false')
        return cls(value)

    def matches(self, facts):
        return getattr(facts, self.key) == self.wanted

    def describe(self):
        return self.label if self.wanted else f"not {self.label}"


class HasLink(Flag):
    key, label = "has_link", "with a link"


class HasMedia(Flag):
    key, label = "has_media", "with media"


@dataclass
class LengthOver:
    characters: int
    key = "length_over"

    @classmethod
    def parse(cls, value):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConditionError('"length_over" needs a number of characters, e.g. 1000')
        return cls(value)

    def matches(self, facts):
        return facts.length > self.characters

    def describe(self):
        return f"longer than {self.characters} characters"


@dataclass
class Finding:
    """A finding of the automated checks, by category and/or severity."""

    category: str | None
    severity: str | None
    key = "finding"
    SEVERITIES = ("block", "warn", "info")

    @classmethod
    def parse(cls, value):
        if not isinstance(value, dict) or not value or set(value) - {"category", "severity"}:
            raise ConditionError(
                '"finding" needs {"category": "…"} and/or {"severity": "block|warn|info"}'
            )
        severity = value.get("severity")
        if severity is not None and severity not in cls.SEVERITIES:
            raise ConditionError(f'"severity" must be one of {", ".join(cls.SEVERITIES)}')
        category = value.get("category")
        if category is not None and not isinstance(category, str):
            raise ConditionError('"category" must be a name')
        return cls(category, severity)

    def matches(self, facts):
        return any(
            (self.category is None or category == self.category)
            and (self.severity is None or severity == self.severity)
            for category, severity in facts.findings
        )

    def describe(self):
        parts = [p for p in (self.severity, self.category) if p]
        return "with a " + " ".join(parts) + " finding"


TESTS = {
    cls.key: cls
    for cls in (Network, Team, TagTest, Account, HasLink, HasMedia, LengthOver, Finding)
}


def parse(tree, path="condition"):
    """Parse a JSON condition into test objects; ConditionError names what is wrong and where."""
    if tree in (None, {}):
        return Always()
    if not isinstance(tree, dict):
        raise ConditionError(f'{path}: expected an object like {{"network": ["x"]}}')
    if len(tree) != 1:
        raise ConditionError(
            f"{path}: one test per object ({', '.join(sorted(tree))}); combine them with all/any"
        )
    ((key, value),) = tree.items()
    if key in ("all", "any"):
        if not isinstance(value, list):
            raise ConditionError(f'{path}: "{key}" needs a list of conditions')
        parts = [parse(item, f"{path}.{key}[{n}]") for n, item in enumerate(value)]
        return All(parts) if key == "all" else Any(parts)
    if key == "not":
        return Not(parse(value, f"{path}.not"))
    if key not in TESTS:
        known = ", ".join(["all", "any", "not", *TESTS])
        raise ConditionError(f'{path}: unknown test "{key}"; known: {known}')
    try:
        return TESTS[key].parse(value)
    except ConditionError as error:
        raise ConditionError(f"{path}: {error}") from None
