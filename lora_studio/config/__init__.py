"""Job schema, presets and validation. No Qt, no torch."""
from .findings import Finding, has_errors
from .parse import parse_job
from .schema import SCHEMA_VERSION, JobConfig

__all__ = ["Finding", "JobConfig", "SCHEMA_VERSION", "has_errors", "parse_job"]
