"""The HTTP service: ``create_app(settings)`` builds the FastAPI app; ``ordonum serve`` runs it.

See :mod:`ordonum.service.settings` for configuration and the README's "Run the service".
"""

from ordonum.service.app import create_app
from ordonum.service.settings import Settings
from ordonum.service.state import Services

__all__ = ["Services", "Settings", "create_app"]
