"""The campaign model, the loop, the store and the command line of closedloop."""

from loop.config import Budget, Campaign, LoadedCampaign, load_campaign, parse_campaign
from loop.errors import CampaignConfigError, ClosedLoopError, StoreError
from loop.runner import CampaignSummary, Runner, TrialReport, TrialTiming
from loop.store import DEFAULT_STORE, Store

__all__ = [
    "DEFAULT_STORE",
    "Budget",
    "Campaign",
    "CampaignConfigError",
    "CampaignSummary",
    "ClosedLoopError",
    "LoadedCampaign",
    "Runner",
    "Store",
    "StoreError",
    "TrialReport",
    "TrialTiming",
    "load_campaign",
    "parse_campaign",
]
