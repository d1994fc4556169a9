"""Shared helpers of the app tests: Gradio's environment, tiny run settings, launching the app on a free port.

Import this module before anything that imports gradio: Gradio reads ``GRADIO_TEMP_DIR`` when it is imported.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("GRADIO_TEMP_DIR", tempfile.mkdtemp(prefix="lucid-gradio-"))
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# A closed page is noticed within about a second, so its session's unload handler runs promptly.
os.environ.setdefault("GRADIO_HEARTBEAT_INTERVAL", "1")

# A CPU run of well under a second per step on the offline demo: 32 px renders, 2 views, 300 Gaussians,
# a tiny turntable; every step logged so metrics.jsonl shows each step's guidance scale.
TINY_OVERRIDES = (
    "render.width=32", "render.height=32", "cameras.batch_size=2", "init.num_points=300",
    "model.multiview_resolution=32", "export.turntable_size=32", "export.turntable_frames=6",
    "export.turntable_rings=1", "export.eval_views=2", "export.log_every=1", "export.checkpoint_every=0",
    "export.mesh_resolution=32", "export.mesh_texture=64",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_app(outputs: Path, device: str = "cpu", shared_runs: bool = False, models=None, auth=None, executor=None,
               limits=None):
    """Start a JobManager (``executor``, ``limits``: its own, default in-process and unlimited) and the app on a free
    local port, launched as ``app.py`` launches it (no ``allowed_paths``); returns (demo, jobs, url). Close both when
    done (and the executor, if one was given)."""
    from lucid_app.app.jobs import JobManager
    from lucid_app.ui.layout import build_demo

    from lucid_app.ui.layout import APP_CSS, ZOOM_JS

    jobs = JobManager(outputs, device, executor=executor, limits=limits).start()
    demo = build_demo(jobs, shared_runs=shared_runs, models=models)
    port = free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                        css=APP_CSS, js=ZOOM_JS, auth=auth)
    return demo, jobs, f"http://127.0.0.1:{port}/"


@contextmanager
def running_app(outputs: Path, device: str = "cpu", **options) -> Iterator[tuple]:
    """:func:`launch_app` (with its keyword ``options``) as a context: yields (jobs, url) and closes the app and the
    job manager on exit."""
    demo, jobs, url = launch_app(outputs, device, **options)
    try:
        yield jobs, url
    finally:
        demo.close()
        jobs.close()


def run_dir_named(jobs, run: str) -> Path:  # noqa: ANN001
    """The folder of the caller's run named ``run`` (the app names a client's runs without their owner folder)."""
    return next(view.run_dir for view in jobs.views() if view.run_dir.name == run)


def gradio_client(url: str):  # noqa: ANN201
    """A quiet ``gradio_client.Client`` on ``url`` (one client = one browser session)."""
    from gradio_client import Client

    return Client(url, verbose=False)
