"""A real `pintor serve` in a subprocess on a free loopback port, for tests and benchmarks.

```py
with ServerProcess("--model", "path/to/model", outputs=tmp / "out") as server:
    httpx.get(f"{server.url}/health")
```
Standard library only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """Starts `python -m pintor serve ARGS --outputs OUTPUTS --port PORT` and waits until `/health` answers.

    Args:
        *args: more `pintor serve` arguments (`--model`, `--db`, `--api-key`, `--no-ui`...).
        outputs (`Path`): the outputs folder; the server's log goes to `outputs.parent / "server-<port>.log"`.
        api_key (`str`, *optional*): passed as `--api-key` and used for the health check.
        port (`int`, *optional*): default: a free port.
        env (`dict`, *optional*): extra environment variables.
        startup_timeout (`float`): seconds to wait for `/health`.
    """

    def __init__(self, *args, outputs: Path, api_key: str | None = None, port: int | None = None,
                 env: dict | None = None, startup_timeout: float = 180.0):
        self.args, self.outputs, self.api_key = [str(a) for a in args], Path(outputs), api_key
        self.port = port or free_port()
        self.env, self.startup_timeout = env, startup_timeout
        self.proc: subprocess.Popen | None = None
        self.log_path = self.outputs.parent / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def start(self) -> ServerProcess:
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore", GRADIO_ANALYTICS_ENABLED="False")
        env.update(self.env or {})
        cmd = [sys.executable, "-m", "pintor", "serve", *self.args, "--outputs", str(self.outputs),
               "--port", str(self.port), "--host", "127.0.0.1"]
        if self.api_key:
            cmd += ["--api-key", self.api_key]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pintor serve exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                self.get_json("/health", timeout=2)
                return self
            except (OSError, urllib.error.URLError):
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"pintor serve did not answer /health within {self.startup_timeout} s:\n"
                           f"{self.log()[-4000:]}")

    def get_json(self, path: str, timeout: float = 30):
        req = urllib.request.Request(self.url + path, headers=self.headers())
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up (what a crash or an OOM kill does)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
        self._close_log()

    def stop(self) -> None:
        """SIGTERM (uvicorn shuts down gracefully), then SIGKILL after 20 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close_log()

    def _close_log(self) -> None:
        log = getattr(self, "_log", None)
        if log is not None and not log.closed:
            log.close()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
