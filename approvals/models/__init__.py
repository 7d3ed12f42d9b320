from .accounts import (
    Membership,
    SocialAccount,
    Team,
    TeamGroupObjectPermission,
    TeamUserObjectPermission,
)
from .credentials import AccountCredential
from .ledger import LedgerEntry, LedgerExport, LedgerHead
from .notifications import Notification, NotificationPreference
from .policy import ConfigVersion, Disclaimer, LexiconEntry, NetworkRule, RevisionFinding
from .posts import Post, Revision, RevisionView
from .publishing import DeliveryAttempt, Publication, SandboxPost
from .reviews import Decision, ReviewStep, StepClaim
from .rules import ApprovalRule, RuleStep, Tag

__all__ = [
    "AccountCredential",
    "ConfigVersion",
    "Disclaimer",
    "LexiconEntry",
    "NetworkRule",
    "RevisionFinding",
    "ApprovalRule",
    "ReviewStep",
    "RuleStep",
    "StepClaim",
    "Tag",
    "Decision",
    "DeliveryAttempt",
    "LedgerEntry",
    "LedgerExport",
    "LedgerHead",
    "Membership",
    "Notification",
    "NotificationPreference",
    "Post",
    "Publication",
    "Revision",
    "RevisionView",
    "SandboxPost",
    "SocialAccount",
    "Team",
    "TeamGroupObjectPermission",
    "TeamUserObjectPermission",
]
