# The public names of ``loop``, for type checkers and for the lazy loader in __init__.py
# (lazy_loader.attach_stub reads the imports below): a name is importable from the package
# exactly when it is listed here.
from .config import Budget, Campaign, LoadedCampaign, load_campaign, parse_campaign
from .errors import CampaignConfigError, ClosedLoopError, StoreError
from .results import trial_records
from .runner import CampaignSummary, Runner, TrialReport, TrialTiming
from .scheduler import PlannerError
from .store import DEFAULT_STORE, Store

__all__ = [
    "DEFAULT_STORE",
    "Budget",
    "Campaign",
    "CampaignConfigError",
    "CampaignSummary",
    "ClosedLoopError",
    "LoadedCampaign",
    "PlannerError",
    "Runner",
    "Store",
    "StoreError",
    "TrialReport",
    "TrialTiming",
    "load_campaign",
    "parse_campaign",
    "trial_records",
]
