"""Device twins: desired and reported state per device, persisted, working offline."""

from twin.service import TwinService
from twin.store import ReportedValue, TwinStore

__all__ = ["ReportedValue", "TwinService", "TwinStore"]
