from django.core.management.base import BaseCommand, CommandError

from approvals import ledger
from approvals.models import LedgerEntry


class Command(BaseCommand):
    help = "Walk the ledger's hash chain; exit 0 when sound, 1 naming the first broken entry."

    def handle(self, *args, **options):
        broken = ledger.verify()
        if broken is not None:
            raise CommandError(f"Ledger broken at {broken}", returncode=1)
        count = LedgerEntry.objects.count()
        self.stdout.write(self.style.SUCCESS(f"Ledger sound: {count} entries verified."))
