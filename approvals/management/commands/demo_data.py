"""Demo data for a development instance: teams, people, accounts and posts in several states.

Idempotent: when the demo users exist already it only prints the logins. Posts move through
approvals.workflow only, so the ledger records the demo's history like any other.
"""

from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone
from guardian.shortcuts import assign_perm

from approvals import ledger, workflow
from approvals.models import (
    ApprovalRule,
    LedgerEntry,
    LedgerHead,
    Post,
    RuleStep,
    SocialAccount,
    Tag,
    Team,
)
from approvals.models.accounts import Membership
from approvals.models.reviews import Decision
from reviewflow.celery import app as celery_app

PASSWORD = "demo"
LYON, PARIS = "Lyon branch", "Paris branch"
COMPLIANCE_GROUP = "Compliance admins"

# username, first name, last name, role shown in the logins table
PEOPLE = [
    ("alice", "Alice", "Martin", f"advisor, {LYON}"),
    ("bruno", "Bruno", "Lefèvre", f"advisor, {PARIS}"),
    ("rita", "Rita", "Moreau", f"reviewer, {LYON} and {PARIS}"),
    ("sam", "Sam", "Okafor", f"reviewer, {LYON}"),
    ("carla", "Carla", "Rossi", "compliance admin (staff, /admin/)"),
]

# Object-permission grants: a compliance admin may also revoke them.
GRANT_MODELS = {
    ("approvals", "teamuserobjectpermission"),
    ("approvals", "teamgroupobjectpermission"),
    ("guardian", "userobjectpermission"),
    ("guardian", "groupobjectpermission"),
}
# Configuration a compliance admin may also delete (rules, their steps, tags), claims, whose
# deletion in the admin releases them through the workflow, and the files of ledger exports.
DELETABLE_MODELS = {
    ("approvals", "approvalrule"),
    ("approvals", "rulestep"),
    ("approvals", "tag"),
    ("approvals", "stepclaim"),
    ("approvals", "ledgerexport"),
}


class Command(BaseCommand):
    help = "Create demo teams, users (password 'demo'), accounts and posts; safe to run twice."

    def handle(self, *args, **options):
        User = get_user_model()
        if User.objects.filter(username="alice").exists():
            self.stdout.write("demo data already present")
            self.print_logins()
            return
        # Publish the approved demo post now, without waiting for a worker.
        was_eager = celery_app.conf.task_always_eager
        celery_app.conf.task_always_eager = True
        try:
            # One transaction: a failure leaves nothing half-made, so running again works.
            # The approved post's release runs on commit, at the end of this block.
            with transaction.atomic():
                self.create()
        finally:
            celery_app.conf.task_always_eager = was_eager
        published = Post.objects.filter(state="published").count()
        broken = ledger.verify()
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo data created: {Team.objects.count()} teams, "
                f"{Post.objects.count()} posts ({published} published), "
                f"{LedgerEntry.objects.count()} ledger entries"
                + (", ledger chain verified." if broken is None else ".")
            )
        )
        if broken is not None:
            self.stderr.write(self.style.ERROR(f"Ledger check failed at {broken}"))
        self.print_logins()

    def print_logins(self):
        self.stdout.write("")
        self.stdout.write("Logins (password: demo):")
        width = max(len(username) for username, *_ in PEOPLE) + 2
        for username, _first, _last, role in PEOPLE:
            self.stdout.write(f"  {username:<{width}}{role}")

    def create(self):
        User = get_user_model()
        lyon = Team.objects.create(name=LYON)
        paris = Team.objects.create(name=PARIS)

        users = {}
        for username, first_name, last_name, _role in PEOPLE:
            users[username] = User.objects.create_user(
                username=username,
                password=PASSWORD,
                first_name=first_name,
                last_name=last_name,
                email=f"{username}@example.com",
                is_staff=username == "carla",
            )
        alice, bruno, rita, sam, carla = (
            users[name] for name in ("alice", "bruno", "rita", "sam", "carla")
        )

        Membership.objects.create(user=alice, team=lyon)
        Membership.objects.create(user=bruno, team=paris)
        assign_perm("approvals.review_team", rita, lyon)
        assign_perm("approvals.review_team", rita, paris)
        assign_perm("approvals.review_team", sam, lyon)
        self.create_compliance_group().user_set.add(carla)
        # Migration 0003's catch-all rule routes every post to "Compliance reviewers"; posts
        # with a link also need Legal, after compliance.
        Group.objects.get(name="Compliance reviewers").user_set.add(rita, sam)
        legal = Group.objects.create(name="Legal")
        legal.user_set.add(rita)
        links = ApprovalRule.objects.create(
            name="Links need Legal",
            description="A link can promise what the text does not: Legal checks its target.",
            priority=50,
            condition={"has_link": True},
        )
        RuleStep.objects.create(rule=links, group=legal, stage=2, due_hours=24)
        for name, kind in [
            ("Épargne retraite", "product"),
            ("Crédit immobilier", "product"),
            ("Portes ouvertes juin", "campaign"),
        ]:
            Tag.objects.create(name=name, kind=kind)

        lyon_sandbox = self.account(
            team=lyon, network="sandbox", name=f"{LYON} on Sandbox", handle="@lyon", by=carla
        )
        paris_sandbox = self.account(
            team=paris, network="sandbox", name=f"{PARIS} on Sandbox", handle="@paris", by=carla
        )
        # The connector generates the signing secret when it cleans the settings.
        self.account(
            team=lyon,
            network="webhook",
            name=f"{LYON} webhook",
            handle="",
            by=carla,
            settings={"url": "http://127.0.0.1:8765/hook", "secret": ""},
        )

        # A draft.
        workflow.create_post(
            alice,
            text=(
                "Nos conseillers vous accueillent samedi à Lyon pour parler épargne retraite. "
                "Rates < 3% & no fees? Ask us."
            ),
            account_ids=[lyon_sandbox.pk],
        )

        # In review.
        post = workflow.create_post(
            alice,
            text=(
                "Assurance-vie : les fonds en euros ont servi en moyenne 2,6 % en 2024. "
                "Les performances passées ne préjugent pas des performances futures. "
                "Prenez rendez-vous avec votre conseiller."
            ),
            link="https://example.com/lyon/assurance-vie",
            account_ids=[lyon_sandbox.pk],
        )
        workflow.submit(post.pk, alice, comment="Chiffres vérifiés avec le rapport annuel.")

        # Changes requested.
        post = workflow.create_post(
            bruno,
            text=(
                "Livret A, PEL or PEA: which savings account suits you? Our Paris team answers "
                "your questions live on Thursday at 6 pm."
            ),
            account_ids=[paris_sandbox.pk],
        )
        post = workflow.submit(post.pk, bruno)
        workflow.decide(
            post.pk,
            rita,
            outcome=Decision.Outcome.REQUEST_CHANGES,
            revision_hash=post.current_revision.content_hash,
            reason=(
                "Add the risk warning for the PEA (the capital is not guaranteed) and say "
                "that the session is free."
            ),
        )

        # Approved, then published on the sandbox (the release runs when this transaction
        # commits, eagerly).
        post = workflow.create_post(
            alice,
            text=(
                "Portes ouvertes à l'agence Lyon Bellecour le samedi 14 juin, de 9 h à 17 h : "
                "bilan patrimonial offert, sans engagement. Open day in Lyon: free wealth review."
            ),
            link="https://example.com/lyon/portes-ouvertes",
            account_ids=[lyon_sandbox.pk],
        )
        post = workflow.submit(post.pk, alice)
        for reviewer in (sam, rita):  # compliance, then Legal for the link
            workflow.decide(
                post.pk,
                reviewer,
                outcome=Decision.Outcome.APPROVE,
                revision_hash=post.current_revision.content_hash,
            )

        # Rejected.
        post = workflow.create_post(
            bruno,
            text=(
                "Double your savings before year end with our new fund. Our clients love it: "
                '"best advisor ever" - John D. DM us now 🚀'
                # ("Rendement garanti, zéro risque" would not even be submitted: the automated
                # checks block it; this one passes them with a warning and a reviewer rejects it.)
            ),
            account_ids=[paris_sandbox.pk],
        )
        post = workflow.submit(post.pk, bruno)
        workflow.decide(
            post.pk,
            rita,
            outcome=Decision.Outcome.REJECT,
            revision_hash=post.current_revision.content_hash,
            reason=(
                "Promising to double savings is misleading and the quote is an unverified "
                "testimonial (FINRA 2210, SEC 206(4)-1): not publishable in any form."
            ),
        )

    def account(self, *, team, network, name, handle, by, settings=None):
        account = SocialAccount(
            team=team,
            network=network,
            name=name,
            handle=handle,
            settings=settings or {},
            validated=True,
            validated_by=by,
            validated_at=timezone.now(),
        )
        account.full_clean()  # runs the connector's settings cleaning
        account.save()
        return account

    def create_compliance_group(self):
        group, _ = Group.objects.get_or_create(name=COMPLIANCE_GROUP)
        wanted = []
        for model in apps.get_app_config("approvals").get_models():
            key = (model._meta.app_label, model._meta.model_name)
            if model in (LedgerEntry, LedgerHead):
                actions = ["view"]  # the ledger is append-only, even for compliance
            elif key in GRANT_MODELS or key in DELETABLE_MODELS:
                actions = ["add", "change", "delete", "view"]
            else:
                actions = ["add", "change", "view"]
            wanted.append((model, actions))
        for model in apps.get_app_config("guardian").get_models():
            if (model._meta.app_label, model._meta.model_name) in GRANT_MODELS:
                wanted.append((model, ["add", "change", "delete", "view"]))
        for model in (get_user_model(), Group):
            wanted.append((model, ["add", "change", "view"]))

        permissions = []
        for model, actions in wanted:
            content_type = ContentType.objects.get_for_model(model)
            codenames = [f"{action}_{model._meta.model_name}" for action in actions]
            permissions += Permission.objects.filter(
                content_type=content_type, codename__in=codenames
            )
        # The approvals app's own permissions (oversee_posts, ...), except reviewing: reviewers
        # are granted per team.
        permissions += (
            Permission.objects.filter(content_type__app_label="approvals")
            .exclude(codename__regex=r"^(add|change|delete|view)_")
            .exclude(codename="review_team")
        )
        group.permissions.set(permissions)
        return group
