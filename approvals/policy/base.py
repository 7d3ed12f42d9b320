from dataclasses import dataclass, field

from approvals.models.policy import Category, Severity


@dataclass(frozen=True)
class Finding:
    """The result of one automated check: what, how serious, why, what to do, and where."""

    code: str
    category: str
    severity: str
    message: str
    fix: str = ""
    start: int | None = None  # span in the original text, [start, end)
    end: int | None = None
    network: str = ""
    data: dict = field(default_factory=dict, compare=False, hash=False)

    def as_json(self):
        return {
            "code": self.code,
            "category": self.category,
            "severity": self.severity,
            "message": self.message,
            "fix": self.fix,
            "start": self.start,
            "end": self.end,
            "network": self.network,
            **({"data": self.data} if self.data else {}),
        }


@dataclass(frozen=True)
class Subject:
    """What the checks look at: a revision, or text and target accounts still being typed."""

    text: str
    link: str = ""
    networks: frozenset = frozenset()
    team: str = ""
    tags: frozenset = frozenset()


class Check:
    """One automated check. Subclasses yield Findings; earlier findings are in `found`."""

    def run(self, subject: Subject, found: list[Finding]):
        raise NotImplementedError


__all__ = ["Category", "Check", "Finding", "Severity", "Subject"]
