"""Shared fixtures for the service tests.

pyproject.toml puts ``service/`` on ``sys.path`` (pytest ``pythonpath``),
so these tests import ``otel_velocity_service`` without installing it.
"""

# Importing the fixtures here registers them for every test in this folder.
from page_fixtures import (  # noqa: F401
    browser_page,
    chromium_browser,
    velocity_server,
    velocity_server_session,
)
