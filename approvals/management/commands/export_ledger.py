import sys
from datetime import date

from django.core.management.base import BaseCommand, CommandError

from approvals import ledger


def _day(value):
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        raise CommandError(f"{value!r} is not a date: write it as YYYY-MM-DD.") from None


class Command(BaseCommand):
    help = (
        "Write the ledger as JSON Lines an auditor can check without ReviewFlow: each entry with "
        "its hashes (`verify_ledger --file` checks such a file). The export is itself recorded "
        "in the ledger."
    )

    def add_arguments(self, parser):
        parser.add_argument("--since", help="First day included (YYYY-MM-DD, server timezone).")
        parser.add_argument("--until", help="Last day included (YYYY-MM-DD, server timezone).")
        parser.add_argument("--post", type=int, help="Only the entries of this post.")
        parser.add_argument("--output", "-o", help="File to write (default: standard output).")

    def handle(self, *args, since, until, post, output, **options):
        first_day, last_day = _day(since), _day(until)
        if first_day and last_day and last_day < first_day:
            raise CommandError("--until is before --since.")
        since, until = ledger.export_period(first_day, last_day)
        try:
            out = open(output, "w", encoding="utf-8") if output else sys.stdout
        except OSError as error:
            raise CommandError(f"Cannot write {output}: {error.strerror}.") from None
        ledger.record_export(via="manage.py export_ledger", since=since, until=until, post_id=post)
        count = -2  # the header and the end line are not entries
        try:
            for line in ledger.export_lines(since=since, until=until, post_id=post):
                out.write(line)
                count += 1
        finally:
            if output:
                out.close()
        self.stderr.write(f"Exported {count} ledger entries.")
