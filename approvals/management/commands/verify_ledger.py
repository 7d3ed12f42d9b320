import sys

from django.core.management.base import BaseCommand, CommandError

from approvals import ledger


class Command(BaseCommand):
    help = (
        "Walk the ledger's hash chain; exit 0 when sound, printing its head as an anchor (SEQ:HASH)"
        " to keep outside the database; exit 1 naming the first broken entry. Anchors kept from"
        " earlier runs catch a chain rewritten whole. With --file, check an export (export_ledger)"
        " instead: no database needed."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--batch-size",
            type=int,
            default=5000,
            help="Entries fetched per round trip (memory stays flat whatever the chain's length).",
        )
        parser.add_argument("--file", help="An export to check (- for standard input).")
        parser.add_argument(
            "--anchor",
            action="append",
            default=[],
            metavar="SEQ:HASH",
            help="An entry's hash kept outside the database (an earlier run's head, an export's"
            " last hash): the chain must still hold it. Repeatable.",
        )
        parser.add_argument(
            "--anchors", metavar="FILE", help="A file of anchors, one SEQ:HASH a line."
        )
        parser.add_argument(
            "--keep-anchor",
            metavar="FILE",
            help="When the chain is sound, append its head (SEQ:HASH) to this file, which "
            "belongs outside the database's reach (another host, write-once storage).",
        )

    def handle(self, *args, batch_size, file, anchor, anchors, keep_anchor, **options):
        if file:
            if anchor or anchors or keep_anchor:
                raise CommandError(
                    "Anchors are for the live chain. In an export, the entry of an anchor's SEQ"
                    " must carry its HASH: search the file for it."
                )
            return self.check_export(file)
        held = self.read_anchors(anchor, anchors)
        # The count is of the entries walked, in verify's own snapshot: entries appended while
        # a long chain is verified are neither verified nor counted.
        broken, count, head_hash = ledger.verify_chain(batch_size=batch_size, anchors=held)
        if broken is not None:
            raise CommandError(f"Ledger broken at {broken}", returncode=1)
        held_note = f", {len(held)} anchor{'s' * (len(held) != 1)} held" if held else ""
        self.stdout.write(self.style.SUCCESS(f"Ledger sound: {count} entries verified{held_note}."))
        if not count:
            return
        head = f"{count}:{head_hash}"  # the hash just verified, not read again
        self.stdout.write(f"Head: {head}")
        if keep_anchor:
            try:
                with open(keep_anchor, "a", encoding="utf-8") as kept:
                    kept.write(head + "\n")
            except OSError as error:
                raise CommandError(f"Cannot write {keep_anchor}: {error.strerror}.") from None

    def read_anchors(self, given, path):
        """{seq: hash} from --anchor and the lines of --anchors (blank lines and # comments
        skipped); a CommandError, before anything is verified, for any that does not parse."""
        texts = [(f"--anchor {text}", text) for text in given]
        if path:
            try:
                with open(path, encoding="utf-8") as lines:
                    texts += [
                        (f"{path}, line {number}", line)
                        for number, line in enumerate(lines, start=1)
                        if line.strip() and not line.lstrip().startswith("#")
                    ]
            except (OSError, UnicodeDecodeError) as error:
                reason = (
                    "not UTF-8 text" if isinstance(error, UnicodeDecodeError) else error.strerror
                )
                raise CommandError(f"Cannot read {path}: {reason}.") from None
        held = {}
        for where, text in texts:
            try:
                seq, value = ledger.parse_anchor(text)
            except ValueError as error:
                raise CommandError(f"{where}: {error}") from None
            if held.setdefault(seq, value) != value:
                raise CommandError(f"{where}: another anchor gives entry #{seq} another hash.")
        return held

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
