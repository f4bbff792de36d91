"""The benchmark app with sentry-sdk's own tracing: every request becomes a transaction.

sentry-sdk enables its FastAPI and Starlette integrations by itself when it finds those
packages. The DSN comes from ``SENTRY_DSN``.
"""

from __future__ import annotations

import os

import sentry_sdk

from benchmarks.apps.plain import create_app

sentry_sdk.init(dsn=os.environ["SENTRY_DSN"], traces_sample_rate=1.0)
app = create_app()
