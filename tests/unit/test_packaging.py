from importlib.metadata import entry_points, requires

WEB_STACK = ("fastapi", "starlette", "uvicorn", "pydantic")


def test_library_needs_no_web_stack() -> None:
    runtime = [r for r in requires("otel-velocity") or [] if "extra ==" not in r]
    names = {r.split(";")[0].split(">")[0].split("=")[0].split("[")[0].strip() for r in runtime}
    assert names
    assert not names & set(WEB_STACK)


def test_entry_points_registered() -> None:
    groups = {
        "opentelemetry_distro": "otel_velocity.autoinstrument:VelocityDistro",
        "opentelemetry_configurator": "otel_velocity.autoinstrument:VelocityConfigurator",
        "opentelemetry_post_instrument": "otel_velocity.autoinstrument:after_instrumentation",
    }
    for group, value in groups.items():
        found = {ep.name: ep.value for ep in entry_points(group=group)}
        assert found.get("otel_velocity") == value
