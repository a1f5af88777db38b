"""growth-sdk for Python: growth events (hashed users) as OpenTelemetry log
records over OTLP to a growth collector, with the Rust SDK's contract.

    from growth_sdk import Tracker
    tracker = Tracker("finbrain")          # OTEL_* / GROWTH_* variables apply
    tracker.expense_logged("u1", 12.5, "groceries", source="messenger")
    tracker.track("settings_opened", "u1", {"tab": "budget"})
    report = tracker.shutdown()            # raises UndeliveredError if anything was lost
"""

from .config import Config, ConfigError
from .hashing import UserHasher, hash_user
from .processor import DeliveryReport, GrowthBatchProcessor
from .tracker import Tracker, UndeliveredError

__all__ = [
    "Config",
    "ConfigError",
    "DeliveryReport",
    "GrowthBatchProcessor",
    "Tracker",
    "UndeliveredError",
    "UserHasher",
    "hash_user",
]
