"""``python -m otel_velocity_service``: the same as the ``otel-velocity`` command."""

import sys

from otel_velocity_service.cli import main

sys.exit(main())
