"""Many visitors at once (issue 24): ``--sessions`` concurrent sessions on ``app.py`` as a user starts it, their
errors, the server's and the workers' peak resident size, and the latency of the cheap endpoints.

The server is ``python app.py`` in its own process (default executor: a capped worker process per job; a fresh
outputs folder and Gradio temp folder; ``HF_HUB_OFFLINE=1``; the built-in offline demo model), on a free local port.
Then ``--sessions`` threads start together, each with its own ``gradio_client.Client`` (its own Gradio session), and
each does what a visitor does in the first minute:

1. loads the API (``Client(url)``: the page's config and API description);
2. what the page does on load: the run list and the negative-prompt library (private events of the page, called by
   their index as the browser calls them);
3. ``/generate`` on the demo with small settings (the form's fields and extra overrides); all but the first queue
   behind the worker;
4. reads its stream (the newest update and the job's status) for ``--read-s`` seconds;
5. ``/result`` of its newest job and the run list again (read-only);
6. one bad value: ``/generate`` with ``steps=2.5`` (expects the one-line refusal naming ``steps``);
7. ``/stop``, then waits for its ``/generate`` stream to end (control back: the job left the queue, or stopped and
   exports in the background, or was done).

An error is any exception or unexpected reply, per session and step. Meanwhile the server process's ``VmRSS`` is
sampled every 50 ms (with its ``VmHWM`` at the end), and separately each worker process's (the server's
descendants); the whole app's at one instant too, as the sum of resident sizes (shared libraries counted in each
process) and, every 0.5 s, of proportional set sizes (counted once). Prints one JSON object (last line of stdout).

    python bench/session_load.py                 # 15 sessions
    python bench/session_load.py --sessions 2 --read-s 5    # a quick check
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("bench.session_load")
PROMPTS = ("a red toy car", "a potted flower", "a snowman")
# A cheap demo job: 32 px renders, 2 views, 300 Gaussians, a tiny export and no mesh.
SMALL = ("render.width=32\nrender.height=32\ncameras.batch_size=2\ninit.num_points=300\n"
         "model.multiview_resolution=32\nexport.turntable_size=32\nexport.turntable_frames=6\n"
         "export.turntable_rings=1\nexport.eval_views=2\nexport.checkpoint_every=0")
# How a stopped session's stream ends: left the queue, stopped (exporting in the background or exported), or done
# before Stop came.
FINAL_STATES = ("cancelled/", "cancelled/stopped", "exporting/stopped", "done/stopped", "done/done")
# Every this many samples, the proportional set sizes too (slower to read than the resident sizes).
PSS_EVERY = 10
STOP_REPLIES = ("Cancelled", "Stopping", "The run has already stopped")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def status_kb(pid: int, field: str) -> int | None:
    """``field`` (``VmRSS``, ``VmHWM``) of process ``pid`` in kB; None once it has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def pss_kb(pid: int) -> int:
    """The proportional set size of ``pid`` in kB (0 once it has gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0
    return 0


def descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (children of its threads, recursively)."""
    found: list[int] = []
    stack = [pid]
    while stack:
        parent = stack.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except (FileNotFoundError, ProcessLookupError):
                continue
            found.extend(children)
            stack.extend(children)
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


class MemorySampler:
    """Samples the server's resident size and its descendants' (each worker's peak, and the sum) every ``every_s``.

    A descendant is a ``worker`` (a spawned job worker), the ``resource_tracker``, or named by its program (the
    video encoder the export starts, say)."""

    def __init__(self, pid: int, every_s: float = 0.05) -> None:
        self.pid, self.every_s = pid, every_s
        self.server_peak_kb = 0
        self.worker_peak_kb: dict[int, int] = {}
        self.worker_kind: dict[int, str] = {}
        self.workers_sum_peak_kb = 0
        self.total_rss_peak_kb = 0
        self.total_pss_peak_kb = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> MemorySampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._done.set()
        self._thread.join(5)
        self.server_peak_kb = max(self.server_peak_kb, status_kb(self.pid, "VmHWM") or 0)

    def _run(self) -> None:
        for sample in itertools.count():
            if self._done.is_set():
                return
            server_kb = status_kb(self.pid, "VmRSS") or 0
            self.server_peak_kb = max(self.server_peak_kb, server_kb)
            total = 0
            children = descendants(self.pid)
            if sample % PSS_EVERY == 0:  # proportional set sizes: shared pages (libraries) counted once
                pss = sum(pss_kb(p) for p in (self.pid, *children))
                self.total_pss_peak_kb = max(self.total_pss_peak_kb, pss)
            for child in children:
                if child not in self.worker_kind:
                    cmd = command_line(child)
                    self.worker_kind[child] = ("worker" if "spawn_main" in cmd else
                                               "resource_tracker" if "resource_tracker" in cmd else
                                               Path(cmd.split(" ")[0]).name or "?")
                peak = max(status_kb(child, "VmHWM") or 0, status_kb(child, "VmRSS") or 0)
                self.worker_peak_kb[child] = max(self.worker_peak_kb.get(child, 0), peak)
                total += status_kb(child, "VmRSS") or 0
            self.workers_sum_peak_kb = max(self.workers_sum_peak_kb, total)
            self.total_rss_peak_kb = max(self.total_rss_peak_kb, server_kb + total)
            self._done.wait(self.every_s)


def start_server(outputs: Path, port: int, log_path: Path, timeout_s: float) -> subprocess.Popen:
    """``python app.py`` on ``port`` as a user starts it (its own process, the default executor), once it answers."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
               GRADIO_TEMP_DIR=tempfile.mkdtemp(prefix="lucid-load-gradio-"), PYTHONPATH=str(ROOT))
    command = [sys.executable, str(ROOT / "app.py"), "--port", str(port), "--outputs", str(outputs)]
    with log_path.open("wb") as server_log:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=server_log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"app.py exited with {server.returncode}: see {log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=5):
                return server
        except OSError:
            time.sleep(0.5)
    stop_server(server)
    raise RuntimeError(f"app.py did not answer within {timeout_s:.0f} s: see {log_path}")


def stop_server(server: subprocess.Popen) -> int:
    """Ctrl-C, as a user stops it; a kill after 60 s. Returns its exit status."""
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
    return server.returncode


def page_event(client: Any, outputs: list[int], inputs: list[int]) -> int:
    """The index of the page's (private) event with these output and input components, made callable by
    ``client`` as the browser calls it."""
    for dep in client.config["dependencies"]:
        if dep["outputs"] == outputs and dep["inputs"] == inputs and dep.get("backend_fn", True):
            index = dep.get("id")
            client.endpoints[index].is_valid = True
            return index
    raise RuntimeError(f"no event with outputs {outputs} and inputs {inputs}")


def component_id(client: Any, **props: str) -> int:
    for component in client.config["components"]:
        if all(component.get("props", {}).get(k) == v for k, v in props.items()):
            return component["id"]
    raise RuntimeError(f"no component with {props}")


class Session:
    """One visitor: its own client and session, the steps of its first minute, their latencies and errors."""

    def __init__(self, index: int, url: str, read_s: float, steps: int) -> None:
        self.index, self.url, self.read_s, self.steps = index, url, read_s, steps
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: list[str] = []
        self.seen_states: list[str] = []
        self.final_state = ""
        self.stop_reply = ""
        self.refusal = ""

    def timed(self, name: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            self.latency[name].append(time.perf_counter() - started)

    def check(self, ok: bool, step: str, detail: Any) -> None:
        if not ok:
            self.errors.append(f"{step}: unexpected reply {str(detail)[:300]!r}")

    def run(self, start: threading.Barrier) -> None:
        start.wait()
        try:
            self._visit()
        except Exception as err:  # noqa: BLE001 - any exception is this session's error; the others go on
            self.errors.append(f"{type(err).__name__}: {str(err)[:300]}")
            log.warning("session %d: %s: %s", self.index, type(err).__name__, err)

    def _visit(self) -> None:
        from gradio_client import Client
        from gradio_client.exceptions import AppError

        client = self.timed("connect", Client, self.url, verbose=False)
        runs_id = component_id(client, elem_id="lucid-runs")
        library_id = component_id(client, label="Library (built-in and yours)")
        runs_list = page_event(client, [runs_id], [])
        library_list = page_event(client, [library_id], [library_id])
        runs = self.timed("runs_list", client.predict, fn_index=runs_list)
        self.check(isinstance(runs, dict) and runs.get("choices") == [], "runs_list", runs)
        library = self.timed("negatives_list", client.predict, None, fn_index=library_list)
        self.check(isinstance(library, dict) and len(library.get("choices") or []) > 0, "negatives_list", library)

        job = client.submit(prompt=PROMPTS[self.index % len(PROMPTS)], preset="demo", steps=self.steps,
                            seed=self.index, preview_every=0, export_mesh=False, extra_overrides=SMALL,
                            api_name="/generate")
        deadline = time.monotonic() + self.read_s
        submitted = time.perf_counter()
        while time.monotonic() < deadline and not job.done():
            outputs = job.outputs()
            if outputs:
                if "first_update" not in self.latency:
                    self.latency["first_update"].append(time.perf_counter() - submitted)
                state = outputs[-1][0].get("state", "")
                if not self.seen_states or self.seen_states[-1] != state:
                    self.seen_states.append(state)
            job.status()
            time.sleep(0.5)
        self.check("first_update" in self.latency, "generate", "no update within the read time")

        result = self.timed("result", client.predict, "", api_name="/result")
        self.check(isinstance(result, (list, tuple)) and isinstance(result[-1], dict) and result[-1].get("id"),
                   "result", result)
        runs = self.timed("runs_list", client.predict, fn_index=runs_list)
        self.check(isinstance(runs, dict), "runs_list", runs)

        try:
            reply = self.timed("bad_value", client.predict, prompt="a red toy car", preset="demo", steps=2.5,
                               extra_overrides=SMALL, api_name="/generate")
            self.check(False, "bad_value", f"accepted: {reply!r}")
        except AppError as err:  # the refusal's one line
            self.refusal = str(err)
            self.check("steps" in self.refusal and "\n" not in self.refusal.strip(), "bad_value", self.refusal)

        finished = job.done()
        self.stop_reply = self.timed("stop", client.predict, api_name="/stop")
        expected = STOP_REPLIES + (("No running job.",) if finished else ())
        self.check(isinstance(self.stop_reply, str) and self.stop_reply.startswith(expected), "stop", self.stop_reply)
        job.result(timeout=300)
        final = (job.outputs() or [[{}]])[-1][0]
        # A stopped run's stream ends when control comes back: ``exporting`` (the export goes on in the background).
        self.final_state = f"{final.get('state', '')}/{final.get('outcome', '')}"
        self.check(self.final_state in FINAL_STATES, "final state", final)
        client.close()


def percentiles(values: list[float]) -> dict[str, float | int]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)], 3)

    return {"n": len(ordered), "p50_s": at(0.5), "p90_s": at(0.9), "p99_s": at(0.99), "max_s": round(ordered[-1], 3)}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=15)
    parser.add_argument("--read-s", type=float, default=15.0, help="how long each session reads its stream")
    parser.add_argument("--steps", type=int, default=2000, help="steps of each session's job (Stop ends it earlier)")
    parser.add_argument("--start-timeout-s", type=float, default=240.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

    work = Path(tempfile.mkdtemp(prefix="lucid-session-load-"))
    outputs, server_log = work / "outputs", work / "server.log"
    load_before = uptime()
    started = time.perf_counter()
    port = free_port()
    server = start_server(outputs, port, server_log, args.start_timeout_s)
    start_s = time.perf_counter() - started
    log.info("app.py (pid %d) answers on port %d after %.1f s", server.pid, port, start_s)
    sampler = MemorySampler(server.pid).start()
    sessions = [Session(i, f"http://127.0.0.1:{port}/", args.read_s, args.steps) for i in range(args.sessions)]
    barrier = threading.Barrier(len(sessions))
    threads = [threading.Thread(target=s.run, args=(barrier,), daemon=True) for s in sessions]
    try:
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(args.read_s + 600)
        wall_s = time.perf_counter() - began
        time.sleep(2.0)  # the stopped runs' background exports end meanwhile
    finally:
        sampler.stop()
        exit_status = stop_server(server)
    latency: dict[str, list[float]] = defaultdict(list)
    for session in sessions:
        for name, values in session.latency.items():
            latency[name].extend(values)
    text = server_log.read_text(errors="replace")
    others = sorted(set(sampler.worker_kind.values()) - {"worker", "resource_tracker", "?"})
    workers = {pid: kb for pid, kb in sampler.worker_peak_kb.items() if sampler.worker_kind[pid] == "worker"}
    result = {
        "bench": "session_load", "sessions": args.sessions, "read_s": args.read_s, "steps": args.steps,
        "errors": sum(len(s.errors) for s in sessions),
        "sessions_with_errors": sum(bool(s.errors) for s in sessions),
        "error_details": {s.index: s.errors for s in sessions if s.errors},
        "still_running": sum(t.is_alive() for t in threads),
        "server_rss_peak_gb": round(sampler.server_peak_kb * 1024 / 1e9, 3), "server_rss_target_gb": 1.0,
        "worker_processes": len(workers),
        "worker_rss_peak_gb": round(max(workers.values(), default=0) * 1024 / 1e9, 3),
        "other_descendants": others,
        "workers_sum_rss_peak_gb": round(sampler.workers_sum_peak_kb * 1024 / 1e9, 3),
        "total_rss_peak_gb": round(sampler.total_rss_peak_kb * 1024 / 1e9, 3),
        "total_pss_peak_gb": round(sampler.total_pss_peak_kb * 1024 / 1e9, 3),
        "latency": {name: percentiles(values) for name, values in sorted(latency.items())},
        "final_states": sorted(s.final_state for s in sessions),
        "stop_replies": sorted({s.stop_reply.split(":")[0] for s in sessions}),
        "refusal": next((s.refusal for s in sessions if s.refusal), ""),
        "server_start_s": round(start_s, 1), "wall_s": round(wall_s, 1), "server_exit_status": exit_status,
        "server_log_tracebacks": text.count("Traceback"), "server_log_errors": text.count(" ERROR "),
        "server_log": str(server_log),
        "load_before": load_before, "load_after": uptime(), "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
