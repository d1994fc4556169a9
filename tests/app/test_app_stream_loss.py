"""A client stream that loses its server ends with a clear error, not a hang (issue 24), with the README's usage.

Measured first: a plain ``for out in job`` over gradio_client's ``/generate`` stream never ends once the server is
killed (gradio_client waits for a completion message; still waiting after 150 s) or frozen. The README reads the
stream with its ``updates`` helper and gives the client a read timeout; this test runs that very code (taken from
the README) against a real server process, then freezes it (SIGSTOP: no FIN, as a lost network) and kills it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.app_harness import free_port
from tests.helpers import REPO
READ_TIMEOUT_S = 6.0
pytestmark = pytest.mark.slow


def readme_updates():  # noqa: ANN201
    """The ``updates`` helper as the README's API example defines it (its code block up to the client)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "def updates(" in b)
    namespace: dict[str, object] = {}
    exec(block.split("client = Client(")[0], namespace)  # noqa: S102 - our own README
    return namespace["updates"]


def start_server(outputs: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(REPO),
           "GRADIO_HEARTBEAT_INTERVAL": "1"}
    server = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--port", str(port), "--in-process",
                               "--outputs", str(outputs)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert server.poll() is None, "the app did not start"
        try:
            httpx.get(url, timeout=2)
            return server, url
        except httpx.HTTPError:
            time.sleep(0.5)
    server.kill()
    raise AssertionError("the app did not answer within 300 s")


def test_a_stream_that_loses_its_server_ends_with_a_clear_error(tmp_path: Path) -> None:
    import httpx
    from gradio_client import Client

    updates = readme_updates()
    server, url = start_server(tmp_path / "out")
    ended: dict[str, tuple[float, str]] = {}
    streaming: dict[str, threading.Event] = {"timeout": threading.Event(), "no timeout": threading.Event()}

    def read(name: str, client: Client) -> None:
        job = client.submit(prompt="a red toy car", preset="demo", steps=20000, preview_every=0, export_mesh=False,
                            extra_overrides="render.width=16\nrender.height=16\ninit.num_points=100",
                            api_name="/generate")
        try:
            for _ in updates(job, poll_s=0.1):
                streaming[name].set()
            outcome = "ended normally"
        except ConnectionError as err:
            outcome = str(err)
        ended[name] = (time.monotonic(), outcome)

    timeout = httpx.Timeout(30.0, read=READ_TIMEOUT_S)
    readers = [threading.Thread(target=read, args=("timeout", Client(url, verbose=False,
                                                                      httpx_kwargs={"timeout": timeout})),
                                daemon=True),
               threading.Thread(target=read, args=("no timeout", Client(url, verbose=False)), daemon=True)]
    try:
        for reader in readers:
            reader.start()
        for event in streaming.values():
            assert event.wait(300), "no update arrived"
        frozen = time.monotonic()
        server.send_signal(signal.SIGSTOP)  # the server stays, silent: no FIN reaches the clients
        readers[0].join(READ_TIMEOUT_S + 30)
        assert "timeout" in ended and "server went away" in ended["timeout"][1]
        assert ended["timeout"][0] - frozen < READ_TIMEOUT_S + 30
        assert "no timeout" not in ended, "without a read timeout only a closed connection ends the stream"
        killed = time.monotonic()
        server.kill()
        readers[1].join(30)
        assert "server went away" in ended["no timeout"][1] and ended["no timeout"][0] - killed < 30
    finally:
        server.kill()
        server.wait()
