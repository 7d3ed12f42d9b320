"""Print, as JSON, the route a post would get now: for bulk checks of the approval rules.

Exit 0 with the route on stdout; 1 (CommandError) on bad input; 2 with {"error": ...} on stderr
when no rule routes the post.
"""

import json
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from approvals import routing
from approvals.models import Membership, SocialAccount, Tag

NO_ROUTE_EXIT = 2


class Command(BaseCommand):
    help = (
        "Print the review route a post would get, as JSON: the steps, the rules (and versions) "
        "that produced each step, the rules that matched. Exit 2 when no rule routes the post."
    )

    def add_arguments(self, parser):
        parser.add_argument("--author", required=True, metavar="USERNAME", help="The advisor.")
        parser.add_argument(
            "--account",
            required=True,
            type=int,
            action="append",
            dest="accounts",
            metavar="ID",
            help="A target social account id; repeat for several.",
        )
        parser.add_argument(
            "--text-file", required=True, metavar="FILE", help="The post text (UTF-8)."
        )
        parser.add_argument("--link", default="", metavar="URL", help="The post's link, if any.")
        parser.add_argument(
            "--tag",
            action="append",
            dest="tags",
            default=[],
            metavar="NAME",
            help="A tag the advisor chose; repeat for several.",
        )

    def handle(self, *args, author, accounts, text_file, link, tags, **options):
        user = get_user_model().objects.filter(username=author).first()
        if user is None:
            raise CommandError(f'Unknown author "{author}".')
        membership = Membership.objects.filter(user=user).select_related("team").first()
        if membership is None:
            raise CommandError(f'"{author}" is in no team, so is not an advisor.')
        found = {
            account.pk: account
            for account in SocialAccount.objects.filter(pk__in=accounts).select_related("team")
        }
        if missing := sorted(set(accounts) - set(found)):
            raise CommandError(f"Unknown account id: {', '.join(map(str, missing))}.")
        known_tags = set(Tag.objects.filter(name__in=tags).values_list("name", flat=True))
        if missing := sorted(set(tags) - known_tags):
            raise CommandError(f"Unknown tag: {', '.join(missing)}.")
        try:
            text = Path(text_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise CommandError(f"Cannot read the text file {text_file}: {error}") from None

        try:
            route = routing.simulate(
                author=user, account_ids=accounts, text=text, link=link, tag_names=tags
            )
        except routing.NoRoute as error:
            self.stderr.write(_json({"error": str(error)}))
            raise SystemExit(NO_ROUTE_EXIT) from None
        result = {
            "author": user.get_username(),
            "team": membership.team.name,
            "accounts": [
                {"id": a.pk, "name": a.name, "network": a.network, "team": a.team.name}
                for a in (found[pk] for pk in dict.fromkeys(accounts))
            ],
            **route.as_json(),
        }
        self.stdout.write(_json(result))


def _json(value):
    return json.dumps(value, indent=2, ensure_ascii=False)
