"""The app end to end through ``gradio_client``: a real server, the offline demo, tiny CPU runs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.app_harness import TINY_OVERRIDES, gradio_client, run_dir_named, running_app

pytestmark = pytest.mark.slow
EXTRA = "\n".join(TINY_OVERRIDES)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory):
    with running_app(tmp_path_factory.mktemp("app-outputs")) as handle:
        yield handle


def _generate(client, prompt: str, steps: int, preview_every: int = 2):
    return client.submit(prompt=prompt, preset="demo", model="", steps=steps, seed=0, preview_every=preview_every,
                         extra_overrides=EXTRA, api_name="/generate")


def test_live_guidance_change_reaches_the_trainer(app) -> None:
    jobs, url = app
    client = gradio_client(url)
    stream = _generate(client, "a snowman", steps=40)
    previews: set[int] = set()
    reply = None
    last = None
    for out in stream:
        last = out[0]
        if isinstance(out[3], str):
            previews.add(last["preview_step"])
        if reply is None and last.get("preview_step", 0) > 0 and last["state"] == "running":
            # Pause first so the change lands mid-run however fast the machine is (tiny steps take ~50 ms).
            client.predict(api_name="/pause")
            reply = client.predict(12.0, 60, api_name="/set_controls")
            client.predict(api_name="/resume")
    assert reply and "guidance scale 12" in reply
    assert last["state"] == "done" and last["outcome"] == "done", last
    assert len(previews) >= 2

    records = [json.loads(line)
               for line in (run_dir_named(jobs, last["run"]) / "metrics.jsonl").read_text().splitlines()]
    change = next(r for r in records if "controls" in r)
    assert change["controls"] == {"guidance_scale": 12.0, "delta_t": 60}
    steps = [r for r in records if "guidance_scale" in r]
    assert {r["guidance_scale"] for r in steps if r["step"] < change["step"]} == {7.5}
    assert {r["guidance_scale"] for r in steps if r["step"] >= change["step"]} == {12.0}
    assert last["step_guidance_scale"] == 12.0


def test_second_job_queues_and_stop_exports(app) -> None:
    jobs, url = app
    first, second = gradio_client(url), gradio_client(url)
    stream = _generate(first, "a red toy car", steps=300, preview_every=0)
    for out in stream:
        if out[0]["state"] == "running" and out[0]["step"] >= 1:
            break
    queued = _generate(second, "a potted flower", steps=300)
    head = next(queued)
    assert (head[0]["state"], head[0]["position"]) == ("queued", 1)
    assert "position 1" in head[2]

    # Stop on a queued job cancels it; on the running one it ends the run, which exports what exists.
    assert second.predict(api_name="/stop").startswith("Cancelled: the job left the queue")
    assert [out[0]["state"] for out in queued][-1] == "cancelled"
    assert "Stopping" in first.predict(api_name="/stop")
    # Stop hands back control once model.ply exists: the stream ends there, the export goes on in the background
    # (on an idle machine it may already have finished by the stream's last update).
    final = [out[0] for out in stream][-1]
    assert final["state"] in ("exporting", "done") and final["outcome"] == "stopped", final
    assert "ply" in final["files"]
    deadline = time.monotonic() + 300
    summary = first.predict("", api_name="/result")[-1]
    while summary["state"] != "done":
        assert time.monotonic() < deadline, summary
        time.sleep(0.5)
        summary = first.predict("", api_name="/result")[-1]
    ply, video, config, mesh, summary = first.predict("", api_name="/result")
    assert Path(ply).suffix == ".ply" and Path(ply).stat().st_size > 0
    assert Path(video).suffix == ".mp4" and Path(video).stat().st_size > 0
    assert Path(config).name == "config.yaml" and summary["outcome"] == "stopped"
    assert Path(mesh).suffix == ".glb" and Path(mesh).stat().st_size > 0  # the app exports a mesh by default
    assert summary["run"] == final["run"] and (run_dir_named(jobs, final["run"]) / "model.ply").is_file()
