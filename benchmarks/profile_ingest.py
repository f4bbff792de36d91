"""Profile ``POST /v1/traces`` of the service under load with py-spy, and group the samples.

``python -m benchmarks.profile_ingest --seconds 8`` starts the service as benchmarks/ingest.py
does, posts protobuf batches of 512 SERVER spans with ``wrk -t1 -c4`` while ``py-spy record
--gil`` samples the service, and prints the same summary as benchmarks/profile_app.py.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from benchmarks.ingest import POST_SCRIPT, ServiceProcess, batches
from benchmarks.profile_app import summarize


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=8, help="load and sampling time in s")
    arguments = parser.parse_args(argv)

    py_spy, wrk = shutil.which("py-spy"), shutil.which("wrk")
    if py_spy is None or wrk is None:
        raise SystemExit(
            "py-spy and wrk are needed: pip install -e '.[bench]'; apt-get install wrk"
        )
    service = ServiceProcess()
    with tempfile.TemporaryDirectory() as directory:
        body_path = Path(directory) / "batch.bin"
        body_path.write_bytes(batches(1)[0])
        script_path = Path(directory) / "post.lua"
        script_path.write_text(POST_SCRIPT.format(body=body_path))
        output = Path(directory) / "profile.txt"
        command = [wrk, "-t1", "-c4", "-s", str(script_path), service.url + "/v1/traces"]
        try:
            service.wait_ready()
            subprocess.run([*command[:1], "-d2s", *command[1:]], capture_output=True, check=True)
            recorder = subprocess.Popen(
                [
                    py_spy,
                    "record",
                    "--pid",
                    str(service.process.pid),
                    "--duration",
                    str(arguments.seconds),
                    "--rate",
                    "100",
                    "--format",
                    "raw",
                    "--full-filenames",
                    "--gil",
                    "--output",
                    str(output),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            load = threading.Thread(
                target=subprocess.run,
                args=([*command[:1], f"-d{arguments.seconds}s", *command[1:]],),
                kwargs={"capture_output": True, "check": True},
            )
            load.start()
            load.join()
            _, errors = recorder.communicate(timeout=arguments.seconds + 60)
            if recorder.returncode != 0:
                raise SystemExit(f"py-spy failed: {errors}")
            print("POST /v1/traces, batches of 512 SERVER spans")
            print(summarize(output.read_text()))
        finally:
            service.stop()


if __name__ == "__main__":
    main()
