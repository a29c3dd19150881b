"""Device twins: desired and reported state per device, versioned, persisted, working offline."""

from twin.errors import TwinServiceError, TwinStoreError, TwinUpdateRefused
from twin.service import TwinService
from twin.settings import TwinSettings
from twin.store import DesiredOutcome, ReportedValue, TwinStore

__all__ = [
    "DesiredOutcome",
    "ReportedValue",
    "TwinService",
    "TwinServiceError",
    "TwinSettings",
    "TwinStore",
    "TwinStoreError",
    "TwinUpdateRefused",
]
