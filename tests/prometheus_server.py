"""Start a real Prometheus (Debian's `prometheus` package) on 127.0.0.1 for a test: a temporary
config scraping the given targets, a free port, bounded in time, stopped by its pid."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

BINARY = shutil.which("prometheus")
SKIP_REASON = ("the `prometheus` binary is not installed (Debian: apt-get install prometheus; "
               ".ci/run installs it when apt is reachable)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    def __init__(self, workdir: Path, targets: list[str], scrape_interval: str = "200ms") -> None:
        assert BINARY, SKIP_REASON
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        # scrape_timeout may not exceed the interval; dcgm-exporter's metrics are not relabelled
        config.write_text(
            "global:\n"
            f"  scrape_interval: {scrape_interval}\n"
            f"  scrape_timeout: {scrape_interval}\n"
            "scrape_configs:\n"
            "  - job_name: dcgm\n"
            "    static_configs:\n"
            f"      - targets: [{', '.join(repr(t) for t in targets)}]\n"
        )
        self.log = workdir / "prometheus.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [BINARY, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def ready(self, timeout_s: float = 30.0) -> None:
        """Wait until it answers /-/ready, then until it holds a few samples of every target."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                query = urllib.request.quote("count_over_time(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION[30s])")
                with urllib.request.urlopen(f"{self.url}/api/v1/query?query={query}", timeout=1) as r:
                    result = json.loads(r.read())["data"]["result"]
                if result and min(float(s["value"][1]) for s in result) >= 5:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"prometheus at {self.url} did not become ready in {timeout_s:g} s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
