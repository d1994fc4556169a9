"""No client-named file reaches an unpickler (issue 13, docs/SECURITY.md).

A "plant" is a pickle whose unpickling creates a marker file. It is put in every place a client (or a CLI user
without ``--allow-pickle``) can name — a single-file ``.ckpt`` model, a diffusers folder with pickled ``.bin``
weights, a textual-inversion ``.pt``, a LoRA ``.bin``, a ControlNet folder, a run's ``checkpoint.pt`` — and every
loader, endpoint and command that could load it is called. The marker must never appear; the first test proves
that a plant does create it when unpickled, so the others can fail.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

import tests.app_harness  # noqa: F401  (Gradio's environment before gradio is imported)

from lucid_app.cli.main import main as cli_main  # noqa: E402
from lucid_app.config import ModelConfig  # noqa: E402
from lucid_app.priors import PriorError, load_prior  # noqa: E402
from lucid_app.config.trust import check_weights, UnsafeWeightsError  # noqa: E402
from tests.app_harness import TINY_OVERRIDES, gradio_client, running_app  # noqa: E402
from tests.helpers import plant  # noqa: E402




@pytest.fixture()
def evil(tmp_path: Path, marker: Path, tiny_sd_dir: Path, tiny_controlnet_dir: Path) -> SimpleNamespace:
    """Every kind of planted weight file, each a pickle that creates ``marker`` when loaded."""
    model_dir = tmp_path / "evil_sd"
    shutil.copytree(tiny_sd_dir, model_dir)
    for weights in model_dir.glob("unet/*.safetensors"):
        weights.unlink()
    plant(model_dir / "unet" / "diffusion_pytorch_model.bin", marker)
    controlnet_dir = tmp_path / "evil_controlnet"
    shutil.copytree(tiny_controlnet_dir, controlnet_dir)
    for weights in controlnet_dir.glob("*.safetensors"):
        weights.unlink()
    plant(controlnet_dir / "diffusion_pytorch_model.bin", marker)
    return SimpleNamespace(
        ckpt=plant(tmp_path / "model.ckpt", marker),
        model_dir=model_dir,
        controlnet_dir=controlnet_dir,
        embedding=plant(tmp_path / "token.pt", marker),
        embedding_dir=plant(tmp_path / "token_repo" / "learned_embeds.bin", marker).parent,
        lora=plant(tmp_path / "lora.bin", marker),
        lora_dir=plant(tmp_path / "lora_repo" / "pytorch_lora_weights.bin", marker).parent,
    )


def test_a_plant_does_run_code_when_unpickled(tmp_path: Path, marker: Path) -> None:
    with plant(tmp_path / "x.pkl", marker).open("rb") as handle:
        pickle.load(handle)  # noqa: S301 - the point of the test
    assert marker.exists()


def test_the_loader_refuses_every_planted_weight_file(evil: SimpleNamespace, tiny_sd_dir: Path, marker: Path) -> None:
    cases = [
        (str(evil.ckpt), ModelConfig()),
        (str(evil.model_dir), ModelConfig()),
        (str(tiny_sd_dir), ModelConfig(textual_inversion=(str(evil.embedding),))),
        (str(tiny_sd_dir), ModelConfig(textual_inversion=(str(evil.embedding_dir),))),
        (str(tiny_sd_dir), ModelConfig(lora=str(evil.lora))),
        (str(tiny_sd_dir), ModelConfig(lora=str(evil.lora_dir))),
        (str(tiny_sd_dir), ModelConfig(controlnet=str(evil.controlnet_dir))),
    ]
    for model_id, config in cases:
        with pytest.raises(PriorError) as info:
            load_prior(model_id, config, "cpu")
        assert "\n" not in str(info.value).split("\n")[0] and "Traceback" not in str(info.value)
        assert not marker.exists(), f"{model_id} / {config} unpickled a planted file"


def test_pickle_files_are_named_in_the_message() -> None:
    with pytest.raises(UnsafeWeightsError, match=r"model.lora: 'x.bin' is a pickle.*--allow-pickle"):
        check_weights(ModelConfig(lora="/somewhere/x.bin"))
    check_weights(ModelConfig(lora="/somewhere/x.bin"), allow_pickle=True)
    check_weights(ModelConfig(id="owner/name", lora="x.safetensors"))


def test_cli_refuses_pickles_without_allow_pickle(evil: SimpleNamespace, marker: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    runs = [
        ["generate", "--prompt", "a cat", "--model", str(evil.ckpt), "--out", str(tmp_path / "r1")],
        ["generate", "--prompt", "a cat", "--model", str(evil.model_dir), "--out", str(tmp_path / "r2")],
        ["inspect", "--ply", str(tmp_path / "none.ply"), "--model", str(evil.ckpt), "--prompt", "a cat",
         "--out", str(tmp_path / "r3")],
    ]
    for argv in runs:
        assert cli_main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "error: " in err and "Traceback" not in err
        assert not marker.exists(), argv


def test_cli_resume_never_unpickles_a_planted_checkpoint(marker: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model:\n  id: multiview:assets/demo\nprompt:\n  text: a red toy car\n")
    plant(run / "checkpoint.pt", marker)
    assert cli_main(["generate", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "error: " in err and "weights_only" not in err and "Traceback" not in err
    assert not marker.exists()


def test_app_form_refuses_pickles_and_server_paths(evil: SimpleNamespace, tmp_path: Path, marker: Path) -> None:
    import gradio as gr
    from lucid_app.ui.handlers import AppHandlers

    handlers = AppHandlers(SimpleNamespace(outputs=tmp_path / "outputs"))
    form = {"prompt": "a red toy car", "preset": "demo"}
    refused = {
        "model": [str(evil.ckpt), "weights.bin", "x.pt"],
        "extra_overrides": [f"model.lora={evil.lora}", f"model.textual_inversion=[{evil.embedding}]",
                            f"init.path={tmp_path / 'elsewhere.ply'}", f"avatar.smpl_dir={tmp_path}"],
        "preset": [str(tmp_path / "any.yaml"), "../presets/demo"],
    }
    for field, values in refused.items():
        for value in values:
            with pytest.raises(gr.Error):
                handlers.resolve_form({**form, field: value})
    # The server's own models file is checked too: a pickle is refused when the app starts.
    from lucid_app.app.model_registry import load_models_file
    from lucid_app.config import ConfigError

    models = tmp_path / "models.yaml"
    models.write_text(f"evil: {evil.ckpt}\n")
    with pytest.raises(ConfigError, match="pickle"):
        load_models_file(models)
    assert not marker.exists()


def test_no_endpoint_unpickles_a_client_file(evil: SimpleNamespace, marker: Path, tmp_path: Path,
                                            tiny_sd_dir: Path) -> None:
    """Every endpoint that takes a model, a file or overrides, through the HTTP API as an attacker calls it."""
    from gradio_client import handle_file

    with running_app(tmp_path / "outputs") as (jobs, url):
        client = gradio_client(url)
        extra = "\n".join(TINY_OVERRIDES)
        attempts = [
            dict(model=str(evil.ckpt), extra_overrides=extra),
            dict(model="", extra_overrides=f"{extra}\nmodel.lora={evil.lora}"),
            dict(model="", extra_overrides=f"{extra}\nmodel.textual_inversion=[{evil.embedding}]"),
        ]
        for kwargs in attempts:
            with pytest.raises(Exception):
                client.predict(prompt="a red toy car", preset="demo", steps=2, api_name="/generate", **kwargs)
        # Models are the server's, by name: a client's folder is an unknown model, its ControlNet a refused key.
        for model, more in ((evil.model_dir, ""), ("", f"\nmodel.controlnet={evil.controlnet_dir}")):
            with pytest.raises(Exception, match="unknown model|cannot set"):
                client.predict(prompt="a red toy car", preset="demo", steps=2, model=str(model),
                               extra_overrides=extra + more, api_name="/generate")
        with pytest.raises(Exception):
            client.predict(source="upload", run=None, ply_file=handle_file(str(evil.ckpt)), prompt="a cat",
                           model=str(evil.ckpt), camera="orbit", azimuth_deg=0, elevation_deg=0, radius=4.0,
                           timesteps="200", delta_ts="20", seeds=1, variants="both", negative="",
                           api_name="/inspect")
        with pytest.raises(Exception):
            client.predict(prompt="a cat", negative="", preset="demo", model=str(evil.ckpt), mode="method",
                           steps=2, seed=0, extra_overrides=extra, api_name="/ab_run")
        # Values an attacker sends over raw HTTP get one clear line each, not a generic error.
        for name in ("a\x00b", "x" * 5000, "../../etc/passwd"):
            with pytest.raises(Exception, match="not a run name"):
                client.predict(name, api_name="/result")
        # (NaN is refused by the client library itself; the handler's own check is tested below.)
        with pytest.raises(Exception, match="seed"):
            client.predict(prompt="a red toy car", preset="demo", seed=2**70, extra_overrides=extra,
                           api_name="/generate")
        endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
        for name in ("/avatar_preview", "/generate_avatar"):
            params = [p["parameter_name"] for p in endpoints[name]["parameters"]]
            assert "smpl_dir" not in params, f"{name} takes a folder from the client"
    assert not marker.exists()


def test_run_names_from_clients_are_checked(tmp_path: Path) -> None:
    from lucid_app.app.run_folders import JobError, resolve_run

    outputs = tmp_path / "outputs"
    own = outputs / "sess-a" / "20260101-000000-a-cat-12345678"
    other = outputs / "sess-b" / "20260101-000000-a-dog-87654321"
    for run in (own, other):
        run.mkdir(parents=True)
        (run / "config.yaml").write_text("seed: 0\n")
    assert resolve_run(outputs, "sess-a/20260101-000000-a-cat-12345678", owner="sess-a") == own.resolve()
    bad = ["sess-b/20260101-000000-a-dog-87654321", "sess-a/..", "../x/y", "sess-a/a\x00b", "a" * 5000,
           "/etc/passwd", "sess-a/.hidden"]
    for name in bad:
        with pytest.raises(JobError) as info:
            resolve_run(outputs, name, owner="sess-a")
        assert len(str(info.value)) < 200
    # A single-user desktop (--shared-runs) opens every session's runs.
    assert resolve_run(outputs, "sess-b/20260101-000000-a-dog-87654321") == other.resolve()


def _run_folder(outputs: Path, session: str, name: str) -> Path:
    run = outputs / session / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("prompt:\n  text: a cat\n")
    (run / "model.ply").write_bytes(b"ply\n")
    return run


def test_each_session_lists_and_opens_only_its_own_runs(tmp_path: Path) -> None:
    import gradio as gr
    from lucid_app.ui.handlers import AppHandlers

    outputs = tmp_path / "outputs"
    jobs = SimpleNamespace(outputs=outputs, latest=lambda session: None)
    alice, bob = SimpleNamespace(session_hash="sess-a"), SimpleNamespace(session_hash="sess-b")
    private, shared = AppHandlers(jobs), AppHandlers(jobs, shared_runs=True)
    a_run = "20260101-000000-a-cat-11111111"
    _run_folder(outputs, private.owner_of(alice), a_run)
    _run_folder(outputs, private.owner_of(bob), "20260101-000000-a-cat-22222222")
    assert [name for _, name in private.runs_choices(alice).choices] == [a_run]
    assert len(shared.runs_choices(alice).choices) == 2
    with pytest.raises(gr.Error, match="not a run folder of yours"):
        private.result(f"{private.owner_of(bob)}/20260101-000000-a-cat-22222222", alice)
    with pytest.raises(gr.Error, match="not a run folder of yours"):
        private.open_run(a_run, bob)
    assert Path(private.result(a_run, alice)[0]).read_bytes() == b"ply\n"
    # A signed-in user is one owner across page loads, whatever characters the name holds.
    first = private.owner_of(SimpleNamespace(session_hash="x", username="a.b"))
    assert first == private.owner_of(SimpleNamespace(session_hash="y", username="a.b")) != private.owner_of(
        SimpleNamespace(session_hash="x", username="ab"))


def test_errors_reach_a_client_as_one_line_without_server_paths(tmp_path: Path) -> None:
    import gradio as gr
    from lucid_app.ui.handlers import AppHandlers

    from lucid_app.ui.errors import public_text, user_errors

    assert public_text("cannot read /tmp/gradio/4f2a/upload.ply: bad header\nmore") == \
        "cannot read upload.ply: bad header"
    assert public_text("see https://smpl.is.tue.mpg.de and owner/name") == \
        "see https://smpl.is.tue.mpg.de and owner/name"

    @user_errors
    def crashes() -> None:
        raise KeyError("/srv/secret/path internal detail")

    with pytest.raises(gr.Error) as info:
        crashes()
    assert "Internal error" in info.value.message and "/srv" not in info.value.message

    @user_errors
    def streams():
        yield 1
        raise ValueError("bad value in /home/me/x.yaml")

    with pytest.raises(gr.Error) as info:
        list(streams())
    assert info.value.message == "bad value in x.yaml"
    handlers = AppHandlers(SimpleNamespace(outputs=tmp_path))
    for field, value in (("steps", float("nan")), ("seed", float("inf")), ("guidance_scale", float("nan")),
                         ("steps", "many")):
        with pytest.raises(gr.Error, match=field):
            handlers.resolve_form({"prompt": "a red toy car", "preset": "demo", field: value})


def test_cli_allow_pickle_is_the_operators_explicit_opt_in(tiny_sd_dir: Path, tmp_path: Path) -> None:
    import torch

    from lucid_app.cli.main import build_parser
    from tests.tiny_sd import HIDDEN_SIZE

    embedding = tmp_path / "dog_toy.bin"
    torch.save({"string_to_param": {"*": torch.randn(1, HIDDEN_SIZE)}, "name": "<dog-toy>"}, embedding)
    config = ModelConfig(textual_inversion=(str(embedding),))
    with pytest.raises(PriorError, match="--allow-pickle"):
        load_prior(str(tiny_sd_dir), config, "cpu")
    assert "<dog-toy>" in load_prior(str(tiny_sd_dir), config, "cpu", allow_pickle=True).tokenizer.get_vocab()
    parser = build_parser()
    assert parser.parse_args(["generate", "--out", "x"]).allow_pickle is False
    assert parser.parse_args(["generate", "--out", "x", "--allow-pickle"]).allow_pickle is True
    assert parser.parse_args(["inspect", "--ply", "a", "--model", "m", "--prompt", "p",
                              "--out", "o"]).allow_pickle is False
