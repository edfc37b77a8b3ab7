"""One router per resource."""

from ordonum.service.routes import dispensations, me, prescriptions, scan

__all__ = ["dispensations", "me", "prescriptions", "scan"]
