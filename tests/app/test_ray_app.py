"""The app with ``--ray local``: jobs are Ray actors; controls, pause/resume, prompt changes and stop reach them by
method calls. Driven through ``gradio_client`` as in ``test_app_e2e.py``; the UI and API are the same."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.app_harness import TINY_OVERRIDES, free_port, gradio_client
from tests.ray_harness import local_ray

pytestmark = pytest.mark.ray
EXTRA = "\n".join(TINY_OVERRIDES)


@pytest.fixture(scope="module")
def ray_app(tmp_path_factory: pytest.TempPathFactory):
    from lucid_app.app.jobs import JobManager
    from lucid_app.app.ray_executor import RayExecutor
    from lucid_app.ui.layout import build_demo

    with local_ray():
        executor = RayExecutor("local", cpus_per_job=1)
        jobs = JobManager(tmp_path_factory.mktemp("ray-app"), "cpu", executor=executor).start()
        demo = build_demo(jobs)
        port = free_port()
        demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        try:
            yield jobs, f"http://127.0.0.1:{port}/"
        finally:
            demo.close()
            jobs.close()
            executor.close()


def test_the_executor_fits_the_local_cpus(ray_app) -> None:
    jobs, _ = ray_app
    assert jobs.executor.slots == 2 and jobs.executor.gpus_per_job == 0


def test_generate_change_controls_and_prompt_then_stop_and_result_on_a_ray_actor(ray_app) -> None:
    jobs, url = ray_app
    client = gradio_client(url)
    stream = client.submit(prompt="a red toy car", preset="demo", model="", steps=2000, seed=0, preview_every=2,
                           extra_overrides=EXTRA, api_name="/generate")
    for out in stream:
        if out[0]["state"] == "running" and out[0]["step"] >= 2:
            break
    job = jobs.latest(next(v.session for v in jobs.views()))
    assert job is not None and job.state == "running"
    assert job.controls.prompt is not None  # the actor's prompt state is mirrored for the UI

    client.predict(api_name="/pause")
    reply = client.predict(12.0, 60, api_name="/set_controls")
    # Steps the actor ran before the pause reached it arrive a moment later; after that, none may follow.
    time.sleep(1.0)
    paused_at = jobs.view(job.id).last_step.step
    time.sleep(1.0)
    assert jobs.view(job.id).state == "paused"
    assert jobs.view(job.id).last_step.step == paused_at  # the actor's trainer really waits
    change = jobs.set_prompt(job.id, negative="blurry")  # encoded on the actor, with its prior
    snapshot = jobs.live_gaussians(job.id, timeout_s=30)  # the inspector's copy, from the actor's trainer
    assert snapshot.step >= 2 and snapshot.gaussians.count == 300
    client.predict(api_name="/resume")
    assert "guidance scale 12" in reply
    assert jobs.view(job.id).controls.prompt.prompt.negative == "blurry"
    deadline = time.monotonic() + 60
    while jobs.view(job.id).last_step.step < change.step + 2 and time.monotonic() < deadline:
        time.sleep(0.1)

    assert "Stopping" in client.predict(api_name="/stop")
    final = jobs.wait(job.id, timeout_s=0)
    deadline = time.monotonic() + 60
    while not final.finished and time.monotonic() < deadline:
        final = jobs.wait(job.id, final.version, timeout_s=1)
    assert final.state == "done" and final.outcome == "stopped", final.message
    ply, video, config, mesh, summary = client.predict("", api_name="/result")
    assert Path(ply).stat().st_size > 0 and Path(video).stat().st_size > 0 and summary["outcome"] == "stopped"

    records = [json.loads(line) for line in (final.run_dir / "metrics.jsonl").read_text().splitlines()]
    control = next(r for r in records if "controls" in r and "guidance_scale" in r["controls"])
    assert control["controls"] == {"guidance_scale": 12.0, "delta_t": 60}
    steps = [r for r in records if "loss_total" in r]
    assert {r["guidance_scale"] for r in steps if r["step"] >= control["step"]} == {12.0}
    assert any(r.get("prompt_change", {}).get("negative") == "blurry" for r in records)
    assert "blurry" in Path(config).read_text()


def test_a_worker_that_cannot_load_the_model_fails_the_job_clearly(ray_app) -> None:
    from lucid_app.train.prepare import resolve_config

    jobs, _ = ray_app
    config = resolve_config("demo", overrides=[*TINY_OVERRIDES, "model.id=multiview:/no/such/folder"])
    view = jobs.submit(config, session="s", allow_demo=False)
    deadline = time.monotonic() + 120
    while not view.finished and time.monotonic() < deadline:
        view = jobs.wait(view.id, view.version, timeout_s=1)
    assert view.state == "failed" and "could not load the model" in view.message, view.message
