from otel_velocity.registry import OVERFLOW_SERVICE, VelocityRegistry
from otel_velocity.routes import OVERFLOW_KEY, RouteKey


def test_route_cap_sends_rest_to_overflow_row() -> None:
    registry = VelocityRegistry(max_routes=10, clock=lambda: 1000.0)
    for n in range(25):
        for _ in range(2):
            registry.record("shop", RouteKey("GET", f"/r{n}"), 5.0, False, 200)

    rows = {row.key: row.window for row in registry.rows()}

    assert len(rows) == 11
    assert rows[OVERFLOW_KEY].count == 30
    assert registry.overflow().routes == 15
    assert registry.overflow().spans == 30


def test_route_cap_is_per_service() -> None:
    registry = VelocityRegistry(max_routes=3, clock=lambda: 1000.0)
    for service in ("shop", "billing"):
        for n in range(3):
            registry.record(service, RouteKey("GET", f"/r{n}"), 5.0, False, 200)

    assert len(registry.rows()) == 6
    assert registry.overflow().spans == 0


def test_service_cap_sends_rest_to_overflow_service() -> None:
    registry = VelocityRegistry(max_services=2, clock=lambda: 1000.0)
    for service in ("a", "b", "c", "d"):
        registry.record(service, RouteKey("GET", "/x"), 5.0, False, 200)

    assert registry.services() == [OVERFLOW_SERVICE, "a", "b"]
    overflow_rows = registry.rows(OVERFLOW_SERVICE)
    assert overflow_rows[0].window.count == 2
    assert registry.overflow().services == 2


def test_rows_filter_by_service() -> None:
    registry = VelocityRegistry(clock=lambda: 1000.0)
    registry.record("shop", RouteKey("GET", "/a"), 5.0, False, 200)
    registry.record("billing", RouteKey("GET", "/b"), 5.0, False, 200)

    rows = registry.rows("billing")

    assert [(r.service, str(r.key)) for r in rows] == [("billing", "GET /b")]
