import sys

from django.core.management.base import BaseCommand, CommandError

from approvals import ledger


class Command(BaseCommand):
    help = (
        "Walk the ledger's hash chain; exit 0 when sound, 1 naming the first broken entry. "
        "With --file, check an export (export_ledger) instead: no database needed."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--batch-size",
            type=int,
            default=5000,
            help="Entries fetched per round trip (memory stays flat whatever the chain's length).",
        )
        parser.add_argument("--file", help="An export to check (- for standard input).")

    def handle(self, *args, batch_size, file, **options):
        if file:
            return self.check_export(file)
        # The count is of the entries walked, in verify's own snapshot: entries appended while
        # a long chain is verified are neither verified nor counted.
        broken, count = ledger.verify_chain(batch_size=batch_size)
        if broken is not None:
            raise CommandError(f"Ledger broken at {broken}", returncode=1)
        self.stdout.write(self.style.SUCCESS(f"Ledger sound: {count} entries verified."))

    def check_export(self, file):
        try:
            lines = sys.stdin if file == "-" else open(file, encoding="utf-8")
        except OSError as error:
            raise CommandError(f"Cannot read {file}: {error.strerror}.") from None
        with lines:
            try:
                problem, count = ledger.verify_export(lines)
            except UnicodeDecodeError:
                problem, count = "this is not a ReviewFlow ledger export (not UTF-8 text)", 0
        if problem is not None:
            raise CommandError(f"Export broken: {problem}", returncode=1)
        self.stdout.write(self.style.SUCCESS(f"Export sound: {count} entries verified."))
