"""The demo's traffic generator: a fixed-rate request mix to the shop on 127.0.0.1.

The rate is bounded (``MAX_RATE``), at most ``MAX_IN_FLIGHT`` requests are open at once (a tick
that finds them all busy is skipped and counted), and the loop stops at its deadline or when
``stop`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from otel_velocity_service.demo.shop import CATALOG_SIZE

logger = logging.getLogger(__name__)

MAX_RATE = 50.0
MAX_IN_FLIGHT = 64
REQUEST_TIMEOUT_S = 10.0
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost"})


@dataclass(frozen=True)
class RequestKind:
    """One entry of the mix: its share, method, the route it should hit and a path builder."""

    weight: float
    method: str
    route: str
    build_path: Callable[[], str]


SEARCH_TERMS = ("lamp", "desk", "chair", "mug")

# About 6% of item ids are outside the catalog (404), and one request in 27 goes to a path
# that matches no route of the shop, so it lands in the "(unmatched)" row.
REQUEST_MIX = [
    RequestKind(10.0, "GET", "/items/{item_id}", lambda: f"/items/{_item_id()}"),
    RequestKind(
        5.0, "GET", "/users/{user_id}/orders", lambda: f"/users/{random.randrange(1, 500)}/orders"
    ),
    RequestKind(
        3.0,
        "POST",
        "/cart/{cart_id}/checkout",
        lambda: f"/cart/{random.randrange(1, 10_000)}/checkout",
    ),
    RequestKind(6.0, "GET", "/search", lambda: f"/search?q={random.choice(SEARCH_TERMS)}"),
    RequestKind(2.0, "GET", "/health", lambda: "/health"),
    RequestKind(1.0, "GET", "(unmatched)", lambda: f"/old-api/v1/products/{random.randrange(100)}"),
]


def _item_id() -> int:
    return random.randrange(int(CATALOG_SIZE * 1.06))


@dataclass
class TrafficStats:
    """Requests sent by the generator: responses by status code, failures and skipped ticks."""

    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    skipped: int = 0

    @property
    def sent(self) -> int:
        return sum(self.statuses.values()) + sum(self.failures.values())


async def generate_traffic(
    base_url: str, rate_per_s: float, stop: asyncio.Event, duration_s: float | None
) -> TrafficStats:
    """Send the request mix to ``base_url`` until ``stop`` is set or ``duration_s`` passes."""
    host = urlsplit(base_url).hostname
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"the demo sends traffic only to 127.0.0.1, not to {base_url!r}")
    if not 0 < rate_per_s <= MAX_RATE:
        raise ValueError(f"rate {rate_per_s!r} requests/s is out of range: use 1 to {MAX_RATE:g}")

    stats = TrafficStats()
    weights = [kind.weight for kind in REQUEST_MIX]
    in_flight: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    interval_s = 1.0 / rate_per_s
    deadline = loop.time() + duration_s if duration_s is not None else None
    next_tick = loop.time()

    async with httpx.AsyncClient(
        base_url=base_url,
        timeout=REQUEST_TIMEOUT_S,
        limits=httpx.Limits(max_connections=MAX_IN_FLIGHT),
    ) as client:
        while not stop.is_set() and (deadline is None or loop.time() < deadline):
            if len(in_flight) >= MAX_IN_FLIGHT:
                stats.skipped += 1
            else:
                kind = random.choices(REQUEST_MIX, weights)[0]
                task = asyncio.create_task(_send(client, kind.method, kind.build_path(), stats))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)

            next_tick += interval_s
            delay_s = next_tick - loop.time()
            if delay_s > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay_s)
            else:
                # Behind schedule (a slow machine): start again from now instead of bursting.
                next_tick = loop.time()

        if in_flight:
            await asyncio.wait(in_flight, timeout=REQUEST_TIMEOUT_S)
    return stats


async def _send(client: httpx.AsyncClient, method: str, path: str, stats: TrafficStats) -> None:
    try:
        response = await client.request(method, path)
    except httpx.HTTPError as error:
        stats.failures[type(error).__name__] += 1
        logger.debug("demo traffic: %s %s failed: %r", method, path, error)
        return
    stats.statuses[response.status_code] += 1
