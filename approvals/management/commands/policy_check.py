"""Run the automated checks on many texts at once, for compliance teams.

    python manage.py policy_check posts.jsonl
    cat posts.jsonl | python manage.py policy_check -

Each line of FILE is one JSON object: {"text": "...", "networks": ["x", "linkedin"]} with
optional "link" (a URL), "team" (a team name) and "tags" (tag names). For each line the command
prints one JSON line, in order: {"line": n, "findings": [...]} (each finding as
Finding.as_json()), or {"line": n, "error": "..."} for a line it cannot read, then goes on.
n is the line's number in FILE, counted from 1; blank lines are skipped (nothing printed).
Spans index the text as given. Exit status: 0 when every line was read, 1 when at least one was
malformed, 2 when FILE cannot be opened.
"""

import json
import sys

from django.core.management.base import BaseCommand, CommandError

from approvals import policy

FIELDS = {"text", "networks", "link", "team", "tags"}


class Malformed(ValueError):
    pass


def _strings(item, key):
    value = item.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Malformed(f'"{key}" must be a list of strings')
    return frozenset(value)


def _string(item, key, required=False):
    value = item.get(key, None if required else "")
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise Malformed(f'"{key}" must be a string' + (" (and is required)" if required else ""))
    return value


def subject_of(line):
    """The Subject one input line describes, or Malformed saying why not."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise Malformed(f"not UTF-8: {error}") from None
    try:
        item = json.loads(line)
    except json.JSONDecodeError as error:
        raise Malformed(f"not JSON: {error}") from None
    if not isinstance(item, dict):
        raise Malformed("not a JSON object")
    if unknown := sorted(set(item) - FIELDS):
        raise Malformed(f"unknown keys: {', '.join(unknown)} (known: {', '.join(sorted(FIELDS))})")
    return policy.Subject(
        text=_string(item, "text", required=True),
        link=_string(item, "link").strip(),
        networks=_strings(item, "networks"),
        team=_string(item, "team"),
        tags=_strings(item, "tags"),
    )


class Command(BaseCommand):
    help = (
        "Run the automated checks on a file of JSON lines "
        '({"text": ..., "networks": [...], "link": ..., "team": ..., "tags": [...]}); '
        "print one JSON line of findings per input line, in order. '-' reads standard input. "
        "Exit status 1 if a line was malformed."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", metavar="FILE", help="JSON lines to check, or - for stdin")

    def handle(self, *args, file, **options):
        malformed = 0
        for number, line in self._lines(file):
            if not line.strip():
                continue
            try:
                subject = subject_of(line)
            except Malformed as error:
                malformed += 1
                self._print({"line": number, "error": str(error)})
                continue
            findings = policy.check(subject)
            self._print({"line": number, "findings": [f.as_json() for f in findings]})
        if malformed:
            raise CommandError(
                f"{malformed} malformed line{'s' if malformed > 1 else ''}", returncode=1
            )

    def _print(self, result):
        self.stdout.write(json.dumps(result, ensure_ascii=False))
        self.stdout.flush()

    def _lines(self, file):
        """(line number, line) pairs; lines are bytes when read from a file, so that one line
        that is not UTF-8 is reported as malformed without stopping the others."""
        if file == "-":
            stdin = getattr(sys.stdin, "buffer", sys.stdin)
            yield from enumerate(stdin, start=1)
            return
        try:
            handle = open(file, "rb")
        except OSError as error:
            raise CommandError(f"cannot read {file}: {error.strerror}", returncode=2) from None
        with handle:
            yield from enumerate(handle, start=1)
