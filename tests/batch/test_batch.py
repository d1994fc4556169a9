"""``batch``: the prompts file (no Ray), then batches on a local Ray with the offline demo and a few steps each."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

from lucid_app.batch.prompts_file import read_batch
from tests.app_harness import TINY_OVERRIDES
from tests.ray_harness import local_ray

SETS = [*TINY_OVERRIDES, "optim.steps=4"]


# ------------------------------------------------------------------ the prompts file (no Ray)


def test_text_entries_with_presets_settings_repeats_and_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_text("# props\n\na red toy car\na red toy car | demo | seed=3 prompt.negative=\"dull, blurry\"\n"
                    "a snowman | nosuchpreset\na cup | | nosuchkey=1\n | demo\n", encoding="utf-8")
    entries, bad = read_batch(path, "demo", ["optim.steps=4"])
    assert [(e.line, e.name, e.config.seed) for e in entries] == [(3, "a-red-toy-car", 0), (4, "a-red-toy-car-2", 3)]
    assert entries[1].config.prompt.negative == "dull, blurry" and entries[1].config.optim.steps == 4
    assert [b.line for b in bad] == [5, 6, 7]
    assert "nosuchpreset" in bad[0].message and "available presets" in bad[0].message
    assert "nosuchkey" in bad[1].message and "no prompt" in bad[2].message


def test_yaml_and_csv_entries_keep_their_line_numbers(tmp_path: Path) -> None:
    yaml_path = tmp_path / "prompts.yaml"
    yaml_path.write_text("- a red toy car\n- prompt: a potted flower\n  set: {seed: 5}\n- prompt: a snowman\n"
                         "  preset: nosuchpreset\n- {prompt: x, colour: red}\n", encoding="utf-8")
    entries, bad = read_batch(yaml_path, "demo")
    assert [(e.line, e.prompt) for e in entries] == [(1, "a red toy car"), (2, "a potted flower")]
    assert entries[1].config.seed == 5
    assert [(b.line, "nosuchpreset" in b.message) for b in bad] == [(4, True), (6, False)]
    assert "colour" in bad[1].message

    csv_path = tmp_path / "prompts.csv"
    csv_path.write_text("prompt,preset,set\na red toy car,demo,seed=2\n\"a snowman, small\",nosuchpreset,\n",
                        encoding="utf-8")
    entries, bad = read_batch(csv_path)
    assert [(e.line, e.prompt, e.config.seed) for e in entries] == [(2, "a red toy car", 2)]
    assert [b.line for b in bad] == [3]


def test_missing_ray_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from lucid_app.batch.cluster import RayError, import_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(RayError, match="pip install ray"):
        import_ray()


def test_a_file_of_only_bad_lines_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lucid_app.cli.main import main

    path = tmp_path / "prompts.txt"
    path.write_text("a snowman | nosuchpreset\n", encoding="utf-8")
    assert main(["batch", str(path), "--out", str(tmp_path / "out"), "--ray", "local"]) == 2
    err = capsys.readouterr().err
    assert "line 1" in err and "error: " in err and "no prompt can run" in err


# ------------------------------------------------------------------ on a local Ray


@pytest.fixture(scope="module")
def ray_module():
    with local_ray() as ray:
        yield ray


def _batch(capsys: pytest.CaptureFixture[str], prompts: Path, out: Path) -> tuple[int, dict, str]:
    from lucid_app.cli.main import main

    args = ["batch", str(prompts), "--out", str(out), "--preset", "demo", "--ray", "local", "--retries", "1"]
    for value in SETS:
        args += ["--set", value]
    status = main(args)
    captured = capsys.readouterr()
    return status, json.loads(captured.out.strip().splitlines()[-1]), captured.err


@pytest.mark.ray
def test_batch_runs_good_lines_reports_the_bad_one_and_a_rerun_skips_finished_runs(
    ray_module, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red toy car\na potted flower | demo | seed=3\na snowman | nosuchpreset\n", encoding="utf-8")
    out = tmp_path / "out"
    status, summary, _ = _batch(capsys, prompts, out)
    assert status == 1 and summary["exit_status"] == 1  # one invalid entry
    assert (summary["done"], summary["invalid"], summary["failed"]) == (2, 1, 0)
    assert "prompts.txt line 3: preset 'nosuchpreset' not found" in caplog.text  # logged before anything ran
    assert summary["runs"][2]["line"] == 3 and summary["runs"][2]["status"] == "invalid"

    index = json.loads((out / "index.json").read_text())
    runs = {r["line"]: r for r in index["runs"]}
    assert runs[3]["status"] == "invalid" and "nosuchpreset" in runs[3]["message"]
    for line, name in ((1, "a-red-toy-car"), (2, "a-potted-flower")):
        run = runs[line]
        assert (run["status"], run["name"], run["n_gaussians"]) == ("done", name, 300)
        assert run["seconds"] > 0 and run["metrics"]["step"] == 4 and "loss_total" in run["metrics"]
        assert run["files"]["ply"] == f"{name}/model.ply" and (out / run["files"]["ply"]).is_file()
        assert (out / run["files"]["video"]).is_file() and run["files"]["views"]
    html = (out / "index.html").read_text()
    assert 'src="a-red-toy-car/turntable.mp4"' in html and 'href="a-potted-flower/model.ply"' in html
    assert "nosuchpreset" in html

    # The same command again: both finished runs are skipped (their files untouched), nothing is trained.
    stamp = (out / "a-red-toy-car" / "model.ply").stat().st_mtime_ns
    status, again, _ = _batch(capsys, prompts, out)
    assert (status, again["ran"], again["skipped"], again["done"]) == (1, 0, 2, 2)
    assert (out / "a-red-toy-car" / "model.ply").stat().st_mtime_ns == stamp
    assert json.loads((out / "index.json").read_text())["runs"][0]["seconds"] == runs[1]["seconds"]


@pytest.mark.ray
def test_killed_worker_resumes_from_its_checkpoint_and_ends_bit_identical(
    ray_module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lucid_app.batch import run as batch
    from lucid_app.batch.run import plan_runs, run_batch
    from lucid_app.io.ply import read_gaussian_ply

    prompts = tmp_path / "prompts.txt"
    # The same run twice (same seed): the first is killed mid-run, the second is the uninterrupted reference.
    # A third entry names a model no worker can load: it fails once, clearly, and is not retried.
    prompts.write_text("a red toy car\na red toy car\na red toy car | | model.id=/no/such/model\n", encoding="utf-8")
    steps = 80
    monkeypatch.setattr(batch, "POLL_S", 0.05)  # progress often enough to catch the job mid-run (steps take ~50 ms)
    entries, bad = read_batch(prompts, "demo", [*TINY_OVERRIDES, f"optim.steps={steps}", "export.checkpoint_every=8",
                                                "export.checkpoint_every_s=0"])
    assert not bad
    runs, finished, unusable = plan_runs(entries, tmp_path / "out")
    assert len(runs) == 3 and not finished and not unusable
    killed: dict[str, int] = {}

    def kill_mid_run(progress: dict) -> None:
        job = progress.get("a-red-toy-car", {})
        if not killed and 10 <= job.get("step", 0) < steps - 8:
            killed[job["pid"]] = job["step"]
            os.kill(job["pid"], signal.SIGKILL)

    results, interrupted = run_batch(runs, "local", retries=2, on_progress=kill_mid_run)
    assert killed, "the job ended before the test could kill its worker"
    assert interrupted is None
    first, reference, no_model = (results[r.entry.name] for r in runs)
    assert (first["status"], first["step"], first["attempts"]) == ("done", steps, 2)
    assert (reference["status"], reference["attempts"]) == ("done", 1)
    assert no_model["status"] == "failed" and no_model["user_error"]
    assert "could not load the model" in no_model["message"] and no_model.get("attempts", 1) == 1

    # Resumed from the last checkpoint (every 8 steps) before the kill: the same model as the uninterrupted run.
    a, b = (read_gaussian_ply(r.run_dir / "model.ply") for r in runs[:2])
    assert a.count == b.count
    for name in ("means", "sh_dc", "sh_rest", "opacity_logits", "log_scales", "quats"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    records = [json.loads(line) for line in (runs[0].run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss_total" in r] == list(range(1, steps + 1))
