"""Pytest fixtures for the local Sentry ingest server, and a scoped sentry-sdk client.

Import both fixtures into a conftest, because ``sentry_dsn`` requests ``sentry_ingest``
by name::

    from tests.support.sentry_fixtures import sentry_dsn, sentry_ingest  # noqa: F401

A root conftest may instead list ``"tests.support.sentry_fixtures"`` in
``pytest_plugins``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sentry_sdk

from tests.support.sentry_ingest import SentryIngest

CLOSE_TIMEOUT_S = 10.0


@pytest.fixture
def sentry_ingest() -> Iterator[SentryIngest]:
    """A running `SentryIngest` with the default key and project, stopped after the test."""
    with SentryIngest() as ingest:
        yield ingest


@pytest.fixture
def sentry_dsn(sentry_ingest: SentryIngest) -> str:
    """The DSN of the ``sentry_ingest`` fixture's server."""
    return sentry_ingest.dsn


@contextmanager
def scoped_sentry_client(dsn: str, **options: Any) -> Iterator[sentry_sdk.Client]:
    """Bind a new ``sentry_sdk.Client`` to a forked isolation scope for the ``with`` block.

    Unlike ``sentry_sdk.init``, this leaves the global scope's client untouched, and
    tags or context set inside the block are dropped with the forked scope. On exit the
    client is closed, which sends everything it queued. Integrations patch libraries
    for the whole process and sentry-sdk sets each up only once, so default and
    auto-enabling integrations are off unless `options` turns them on.
    """
    options.setdefault("default_integrations", False)
    options.setdefault("auto_enabling_integrations", False)
    client = sentry_sdk.Client(dsn=dsn, **options)
    try:
        with sentry_sdk.isolation_scope() as scope:
            scope.set_client(client)
            yield client
    finally:
        client.close(timeout=CLOSE_TIMEOUT_S)
