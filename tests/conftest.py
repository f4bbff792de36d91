pytest_plugins = ["tests.support.sentry_fixtures"]
