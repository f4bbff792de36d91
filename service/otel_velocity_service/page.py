"""The velocity page: ``GET /velocity`` and the files it loads from ``static/``.

``velocity.html`` loads ``static/velocity.css`` and ``static/velocity.js`` and fetches
``ops/velocity``, all relative to its own URL, so the page works under any router prefix.
The page itself needs no token: it reads the token from ``#token=...`` and sends it with its
data requests.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import HTTPException
from fastapi.responses import FileResponse

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
PAGE_FILE = "velocity.html"

# The page sets its own Content-Security-Policy in a meta tag; these headers add what a meta
# tag cannot. "no-cache" lets browsers keep the files but revalidate them with the ETag.
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def page_response() -> FileResponse:
    """Return ``velocity.html``, or raise 500 naming the file when the install lacks it."""
    return FileResponse(_static_path(PAGE_FILE), headers=PAGE_HEADERS)


def static_response(filename: str) -> FileResponse:
    """Return one file of ``static/``, or raise 404 for any other name."""
    return FileResponse(_static_path(filename), headers=PAGE_HEADERS)


def _static_path(filename: str) -> Path:
    # Only names listed in the folder are served, so no path can leave it.
    available = set()
    if STATIC_DIR.is_dir():
        available = {path.name for path in STATIC_DIR.iterdir() if path.is_file()}
    if filename not in available:
        if filename == PAGE_FILE:
            logger.error(
                "otel-velocity service: the page file %s is missing", STATIC_DIR / PAGE_FILE
            )
            raise HTTPException(
                status_code=500,
                detail=(
                    f"the page file {STATIC_DIR / PAGE_FILE} is missing: reinstall "
                    "otel-velocity-service"
                ),
            )
        raise HTTPException(
            status_code=404,
            detail=f"no static file {filename!r}; the page files are {sorted(available)}",
        )
    return STATIC_DIR / filename
