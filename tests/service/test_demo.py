"""``otel-velocity demo`` end to end, and the command line's option checks.

The demo test runs the installed command as a subprocess with 1-second buckets, so its short
window is 6 s and the orders slowdown shows as a regression within seconds. It takes about
35 s.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

COMMAND = Path(sys.executable).with_name("otel-velocity")
DURATION_S = 30
SLOW_AFTER_S = 12
EXIT_TIMEOUT_S = DURATION_S + 30

EXPECTED_KEYS = {
    "GET /items/{item_id}",
    "GET /users/{user_id}/orders",
    "POST /cart/{cart_id}/checkout",
    "GET /search",
    "GET /health",
    "GET (unmatched)",
}
SLOW_KEY = "GET /users/{user_id}/orders"


@pytest.fixture(scope="module")
def command() -> Path:
    if not COMMAND.exists():
        pytest.fail(
            f"{COMMAND} not found: install the service with 'pip install -e ./service'",
            pytrace=False,
        )
    return COMMAND


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def is_listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_demo_populates_table_and_regresses(command, tmp_path):
    port = free_port()
    output_path = tmp_path / "demo.out"
    with output_path.open("wb") as output:
        demo = subprocess.Popen(
            [
                str(command),
                "demo",
                "--port",
                str(port),
                "--duration",
                str(DURATION_S),
                "--slow-after",
                str(SLOW_AFTER_S),
                "--bucket-s",
                "1",
                "--min-samples",
                "10",
                "--baseline-s",
                "30",
            ],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    seen_keys: set[str] = set()
    regressed_keys: set[str] = set()
    error_keys: set[str] = set()
    deadline = time.monotonic() + EXIT_TIMEOUT_S
    try:
        while demo.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/ops/velocity", timeout=5).json()
            except httpx.HTTPError:
                continue
            for row in body["rows"]:
                assert row["service"] == "shop"
                seen_keys.add(row["key"])
                if row["is_regress"]:
                    regressed_keys.add(row["key"])
                if row["errors"]:
                    error_keys.add(row["key"])
        exit_code = demo.wait(max(deadline - time.monotonic(), 1.0))
    finally:
        if demo.poll() is None:
            demo.send_signal(signal.SIGINT)
            demo.wait(15)

    output_text = output_path.read_text()
    assert exit_code == 0, output_text
    assert seen_keys >= EXPECTED_KEYS, output_text
    assert SLOW_KEY in regressed_keys, output_text
    # Checkout raises and search returns 503 for 5% of requests each.
    assert error_keys & {"POST /cart/{cart_id}/checkout", "GET /search"}, output_text
    assert f"page:        http://127.0.0.1:{port}/velocity" in output_text
    assert f"regression: shop {SLOW_KEY}" in output_text
    shop_port = int(re.search(r"shop: +http://127\.0\.0\.1:(\d+)", output_text).group(1))
    assert not is_listening(shop_port), "the demo left its shop running"
    assert not is_listening(port), "the demo left its service running"


def test_demo_stops_on_sigint(command, tmp_path):
    port = free_port()
    output_path = tmp_path / "demo.out"
    with output_path.open("wb") as output:
        demo = subprocess.Popen(
            [str(command), "demo", "--port", str(port), "--duration", "60"],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while "Runs for" not in output_path.read_text() and time.monotonic() < deadline:
            assert demo.poll() is None, output_path.read_text()
            time.sleep(0.2)
        demo.send_signal(signal.SIGINT)
        exit_code = demo.wait(20)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()

    output_text = output_path.read_text()
    assert exit_code == 0, output_text
    assert "sent" in output_text
    shop_port = int(re.search(r"shop: +http://127\.0\.0\.1:(\d+)", output_text).group(1))
    assert not is_listening(shop_port), "the demo left its shop running"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["demo", "--rate", "500"], "invalid rate '500': use 1 to 50 requests/s"),
        (["demo", "--duration", "-3"], "invalid value '-3': use a positive number"),
        (["serve", "--port", "70000"], "invalid port '70000': use 0 to 65535"),
        (["serve", "--port", "http"], "invalid value 'http': expected a whole number"),
    ],
)
def test_cli_rejects_invalid_option(command, arguments, message):
    result = subprocess.run([str(command), *arguments], capture_output=True, text=True, timeout=30)

    assert result.returncode == 2
    assert message in result.stderr


def test_cli_serve_rejects_invalid_environment(command):
    result = subprocess.run(
        [str(command), "serve", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "", "VELOCITY_MAX_BODY_BYTES": "lots"},
    )

    assert result.returncode == 2
    assert "VELOCITY_MAX_BODY_BYTES='lots' is not an integer" in result.stderr
