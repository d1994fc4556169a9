"""Helpers the test files share (data on disk, analytic priors, tiny configs, fakes of the app's job manager).

Test files import helpers from here and never from each other; fixtures live in ``conftest.py``."""

from __future__ import annotations

import json
import math
import pickle
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from lucid_app.app.job_board import JobView
from lucid_app.app.jobs import JobManager
from lucid_app.bench.demo_dataset import demo_cameras, opengl_c2w_from_viewmats, write_split
from lucid_app.avatar.body import SMPL_NUM_JOINTS, SMPL_NUM_VERTICES
from lucid_app.config import PromptConfig, TrainConfig, apply_overrides
from lucid_app.guidance.prompts import PromptEmbeddings, encode_prompt_set
from lucid_app.io.ply import GaussianPly
from lucid_app.priors.base import PriorError
from lucid_app.render.base import Splats
from lucid_app.render.cameras import look_at, orbit_positions
from lucid_app.scene.gaussians import rgb_to_sh_dc
from lucid_app.train.controls import ControlState, LiveControls
from lucid_app.train.events import DoneEvent, StepEvent
from lucid_app.train.prepare import resolve_config
from lucid_app.train.trainer import Trainer

# The repository root (assets/, presets/, bench/ scripts).
REPO = Path(__file__).resolve().parents[1]
# The side of write_object's images, and of the tiny training runs (tiny_config).
OBJECT_SIZE = 8
TRAIN_SIZE = 16


def opengl_c2w(azimuth_deg: float, polar_deg: float, radius: float = 4.0) -> list[list[float]]:
    """A Blender/OpenGL camera-to-world matrix looking at the origin from the given orbit angles."""
    eye = orbit_positions(torch.tensor([azimuth_deg]), torch.tensor([polar_deg]), torch.tensor([radius]))
    c2w_opencv = torch.linalg.inv(look_at(eye, torch.zeros_like(eye)))[0]
    return (c2w_opencv @ torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))).tolist()


def write_object(
    folder: Path,
    caption: str | None,
    views: list[tuple[float, float]],
    seed: int,
    size: int = OBJECT_SIZE,
    test_views: list[tuple[float, float]] | None = None,
) -> None:
    """An object folder with random RGBA images at (azimuth, polar) views; file paths without extension."""
    rng = np.random.default_rng(seed)
    for split, split_views in (("train", views), ("test", test_views)):
        if split_views is None:
            continue
        (folder / split).mkdir(parents=True, exist_ok=True)
        frames = []
        for i, (az, polar) in enumerate(split_views):
            image = rng.integers(0, 256, (size, size, 4), dtype=np.uint8)
            image[..., 3] = 255
            iio.imwrite(folder / split / f"r_{i}.png", image)
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": opengl_c2w(az, polar)})
        (folder / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": 0.7, "frames": frames}))
    if caption is not None:
        (folder / "caption.txt").write_text(caption + "\n")


def random_gaussians(n: int, degree: int, seed: int = 0) -> GaussianPly:
    rng = np.random.default_rng(seed)
    k = (degree + 1) ** 2
    f = np.float32
    return GaussianPly(
        means=rng.normal(size=(n, 3)).astype(f),
        sh_dc=rng.normal(size=(n, 1, 3)).astype(f),
        sh_rest=rng.normal(size=(n, k - 1, 3)).astype(f),
        opacity_logits=rng.normal(size=n).astype(f),
        log_scales=rng.normal(size=(n, 3)).astype(f),
        quats=rng.normal(size=(n, 4)).astype(f),
    )


WARM = 5000  # a step after the warm-up: δ_T = 80, t ∈ [20, 500)


class LinearPrior(torch.nn.Module):
    """ε(x, t, c) = k·(1 + t/1000)·x + c (c broadcast over the spatial dims): an analytic, learnable-looking prior."""

    def __init__(self) -> None:
        from diffusers import DDPMScheduler

        super().__init__()
        self.name = "linear"
        self.device = torch.device("cpu")
        self.k = torch.nn.Parameter(torch.tensor(0.3))
        self.alphas_cumprod = DDPMScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
        ).alphas_cumprod
        self.num_train_timesteps = 1000
        self.calls: list[int] = []

    def encode_images(self, rgb: torch.Tensor) -> torch.Tensor:
        return rgb.permute(0, 3, 1, 2) * 2 - 1

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        return ((x0 + 1) / 2).permute(0, 2, 3, 1)

    def encode_prompts(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor([[0.01 * len(t), 0.1, -0.02 * len(t), 0.05] for t in texts])

    def predict_noise(self, x_t, t, cond, control=None):  # noqa: ANN001, ANN201 - protocol signature
        assert not torch.is_grad_enabled() and not x_t.requires_grad
        self.calls.append(int(x_t.shape[0]))
        scale = (self.k * (1 + t.to(x_t.dtype) / 1000)).reshape(-1, *([1] * (x_t.dim() - 1)))
        return scale * x_t + cond.reshape(*cond.shape, *([1] * (x_t.dim() - 2)))


def linear_eps(prior: LinearPrior, x: torch.Tensor, t: int, cond: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return prior.predict_noise(x, torch.full((x.shape[0],), t), cond.expand(x.shape[0], -1))


def ddim_step(x: torch.Tensor, eps: torch.Tensor, a: float, b: float) -> torch.Tensor:
    x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
    return math.sqrt(b) * x0 + math.sqrt(1 - b) * eps


def linear_prompts(prior) -> PromptEmbeddings:  # noqa: ANN001
    return encode_prompt_set(prior, PromptConfig(text="a cat", negative="blurry", inverse_text="a photo"))


def last_json(capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


TINY = ["render.width=16", "render.height=16", "model.multiview_resolution=16", "cameras.batch_size=2",
        "init.shape=sphere", "init.num_points=100", "optim.steps=3", "export.turntable_frames=3",
        "export.turntable_size=16", "export.eval_views=2", "densify.enabled=false"]


def tiny_config(model: str, steps: int = 6, extra: tuple[str, ...] = ()) -> TrainConfig:
    return apply_overrides(TrainConfig(), [
        f"model.id={model}", f"model.multiview_resolution={TRAIN_SIZE}", f"render.width={TRAIN_SIZE}",
        f"render.height={TRAIN_SIZE}",
        "cameras.batch_size=2", "init.shape=sphere", "init.num_points=200", "init.size=[0.8, 0.8, 0.8]",
        f"optim.steps={steps}", "prompt.text=a red chair", "prompt.negative=", "guidance.warmup_steps=4",
        "densify.start_step=2", "densify.stop_step=4", "densify.every=2", "densify.opacity_reset_every=3",
        "densify.opacity_reset_until=4", "export.turntable_frames=4", "export.turntable_size=16",
        "export.eval_views=2", "export.log_every=1", "export.preview_every=2", "export.checkpoint_every=3",
        *extra,
    ])


def params(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in trainer.gaussians.params.items()}


WAIT_S = 20.0


class FakePrior:
    captions = ["a snowman"]

    def encode_prompts(self, prompts: list[str]) -> None:
        return None


class CountingLoader:
    """Returns a FakePrior per model id; raises PriorError for ids in ``missing``; counts calls."""

    def __init__(self, missing: tuple[str, ...] = ()) -> None:
        self.calls: list[str] = []
        self.missing = missing

    def __call__(self, model, config, device):
        self.calls.append(model)
        if model in self.missing:
            raise PriorError(f"no weights for {model}")
        return FakePrior()


class GatedTrainer:
    """Runs ``optim.steps`` steps, each only after the test opens its gate; honours pause and stop."""

    started: list[GatedTrainer] = []
    free_running = False  # True: steps run without waiting for the gate

    def __init__(self, config: TrainConfig, prior, *, run_dir: Path, controls: LiveControls, device) -> None:
        self.config, self.controls, self.run_dir = config, controls, run_dir
        self.gate = threading.Semaphore(0)
        GatedTrainer.started.append(self)

    def run(self, on_event):
        step, status = 0, "done"
        while step < self.config.optim.steps:
            self.controls.wait_while_paused()
            while not (GatedTrainer.free_running or self.gate.acquire(timeout=0.02)):
                if self.controls.snapshot().stop:
                    break
            if self.controls.snapshot().stop:
                status = "stopped"
                break
            step += 1
            on_event(StepEvent(step=step, total_steps=self.config.optim.steps, losses={"total": 1.0}, t=500.0,
                               s=420.0, delta_t=80.0, grad_norm=1.0,
                               guidance_scale=self.controls.snapshot().guidance_scale, n_gaussians=10, seconds=0.01))
        done = DoneEvent(status=status, step=step, message="" if status == "done" else "stopped", files={})
        on_event(done)
        return done


def job_config(prompt: str = "a snowman", steps: int = 2, model: str | None = None) -> TrainConfig:
    return resolve_config("demo", prompt, None, model, [f"optim.steps={steps}"])


def wait_state(jobs: JobManager, job_id: str, *states: str) -> JobView:
    view = jobs.view(job_id)
    while view.state not in states:
        previous = view.version
        view = jobs.wait(job_id, previous, WAIT_S)
        if view.version == previous:
            raise AssertionError(f"job {job_id} stayed {view.state}, expected {states}")
    return view


def release_trainers(steps: int = 100, trainers: int = 1) -> None:
    """Open every started trainer's gate ``steps`` times, once at least ``trainers`` trainers exist."""
    deadline = time.monotonic() + WAIT_S
    while len(GatedTrainer.started) < trainers and time.monotonic() < deadline:
        time.sleep(0.01)
    for trainer in GatedTrainer.started:
        for _ in range(steps):
            trainer.gate.release()


REQUEST = SimpleNamespace(session_hash="sess-a")


def job_view(state: str = "running", steps: int = 0, version: int = 1, **changes) -> JobView:
    events = tuple(StepEvent(step=k, total_steps=10, losses={"total": 0.5, "guidance": 0.4}, t=400.0, s=320.0,
                             delta_t=80.0, grad_norm=1.0, guidance_scale=7.5, n_gaussians=300, seconds=0.25)
                   for k in range(1, steps + 1))
    view = JobView(id="j1", session="sess-a", state=state, position=0, prompt="a snowman", total_steps=10,
                   run_dir=Path("/nowhere/run"), config_yaml="seed: 0\n", notice=None, message="", outcome="",
                   steps=events, preview=None, preview_step=0, files={},
                   controls=ControlState(guidance_scale=7.5, delta_t=80, delta_t_start=100, preview_every=2),
                   version=version)
    return replace(view, **changes)


class FakeJobs:
    """Records calls; ``wait`` plays back scripted snapshots."""

    def __init__(self, outputs: Path, script: list[JobView] = ()) -> None:
        self.outputs = outputs
        self.device = SimpleNamespace(type="cpu")
        self.script = list(script)
        self.calls: list[tuple] = []

    def submit(self, config, session="", allow_demo=True):
        self.calls.append(("submit", config, session))
        return self.script.pop(0)

    def wait(self, job_id, after_version=-1, timeout_s=None):
        return self.script.pop(0)

    def latest(self, session):
        self.calls.append(("latest", session))
        return job_view()

    def set_controls(self, job_id, **changes):
        self.calls.append(("set_controls", job_id, changes))
        return ControlState(guidance_scale=changes["guidance_scale"], delta_t=changes["delta_t"], delta_t_start=100,
                            preview_every=2)

    def cancel(self, job_id):
        self.calls.append(("cancel", job_id))

    def cancel_session(self, session):
        self.calls.append(("cancel_session", session))
        return 1


# Rest joints of the synthetic body in SMPL's frame (y up, facing +z, +x = the body's left), metres.
REST_JOINTS = np.array([
    [0.0, 0.0, 0.0], [0.09, -0.09, 0.0], [-0.09, -0.09, 0.0], [0.0, 0.11, 0.0], [0.1, -0.48, 0.0],
    [-0.1, -0.48, 0.0], [0.0, 0.24, 0.0], [0.1, -0.88, 0.0], [-0.1, -0.88, 0.0], [0.0, 0.3, 0.0],
    [0.1, -0.93, 0.12], [-0.1, -0.93, 0.12], [0.0, 0.5, 0.0], [0.07, 0.42, 0.0], [-0.07, 0.42, 0.0],
    [0.0, 0.6, 0.0], [0.18, 0.44, 0.0], [-0.18, 0.44, 0.0], [0.44, 0.44, 0.0], [-0.44, 0.44, 0.0],
    [0.68, 0.44, 0.0], [-0.68, 0.44, 0.0], [0.76, 0.44, 0.0], [-0.76, 0.44, 0.0],
])


PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]


TORSO_JOINTS = [0, 3, 6, 9, 12, 13, 14]


# (start, end, radius across x, radius across z, skinning joint or None = nearest torso joint)
PRIMITIVES = [
    ((0.0, -0.2, 0.0), (0.0, 0.52, 0.0), 0.17, 0.11, None),
    ((0.0, 0.55, 0.0), (0.0, 0.8, 0.0), 0.1, 0.1, 15),
    *[(tuple(REST_JOINTS[a]), tuple(REST_JOINTS[b]), r, r, a) for a, b, r in [
        (16, 18, 0.055), (17, 19, 0.055), (18, 20, 0.045), (19, 21, 0.045), (20, 22, 0.04), (21, 23, 0.04),
        (1, 4, 0.08), (2, 5, 0.08), (4, 7, 0.06), (5, 8, 0.06), (7, 10, 0.045), (8, 11, 0.045),
    ]],
]


def ellipsoid_mesh(start, end, r1, r2, n_lat, n_lon):  # noqa: ANN001, ANN202 - test geometry
    """A closed lat-long ellipsoid around a bone: vertices [(n_lat-1)·n_lon + 2, 3], faces (local indices)."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    axis = end - start
    half = np.linalg.norm(axis) / 2
    u = axis / np.linalg.norm(axis)
    e1 = np.cross(u, [0.0, 0.0, 1.0])
    e1 = e1 / np.linalg.norm(e1) if np.linalg.norm(e1) > 1e-6 else np.array([1.0, 0.0, 0.0])
    e2 = np.cross(u, e1)
    theta = np.linspace(0, np.pi, n_lat + 1)[1:-1]
    phi = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    th, ph = np.meshgrid(theta, phi, indexing="ij")
    length = half + min(r1, r2)
    pts = ((start + end) / 2 + np.cos(th)[..., None] * length * u + (np.sin(th) * np.cos(ph))[..., None] * r1 * e1
           + (np.sin(th) * np.sin(ph))[..., None] * r2 * e2).reshape(-1, 3)
    top, bottom = (start + end) / 2 + length * u, (start + end) / 2 - length * u
    verts = np.concatenate([pts, top[None], bottom[None]])
    idx = lambda i, j: i * n_lon + j % n_lon  # noqa: E731
    faces = []
    for i in range(n_lat - 2):
        for j in range(n_lon):
            faces += [(idx(i, j), idx(i + 1, j), idx(i + 1, j + 1)), (idx(i, j), idx(i + 1, j + 1), idx(i, j + 1))]
    n = len(pts)
    for j in range(n_lon):
        faces += [(n, idx(0, j + 1), idx(0, j)), (n + 1, idx(n_lat - 2, j), idx(n_lat - 2, j + 1))]
    return verts, np.array(faces)


def synthetic_smpl(seed: int = 0) -> dict[str, np.ndarray]:
    """The arrays of an SMPL model file, with SMPL's sizes (6890 vertices, 24 joints, 10 betas)."""
    rng = np.random.default_rng(seed)
    verts, faces, joint_of = [], [], []
    for k, (a, b, r1, r2, joint) in enumerate(PRIMITIVES):
        v, f = ellipsoid_mesh(a, b, r1, r2, 30 if k == 0 else 16, 40 if k == 0 else 24)
        faces.append(f + sum(len(x) for x in verts))
        verts.append(v)
        if joint is None:
            near = np.argmin(((v[:, None] - REST_JOINTS[TORSO_JOINTS][None]) ** 2).sum(-1), axis=1)
            joint_of.append(np.array(TORSO_JOINTS)[near])
        else:
            joint_of.append(np.full(len(v), joint))
    # One vertex at each joint (the joint regressor picks it), then unreferenced filler up to 6890.
    verts.append(REST_JOINTS)
    joint_of.append(np.arange(SMPL_NUM_JOINTS))
    used = sum(len(v) for v in verts)
    verts.append(np.zeros((SMPL_NUM_VERTICES - used, 3)))
    joint_of.append(np.zeros(SMPL_NUM_VERTICES - used, dtype=int))
    v_template = np.concatenate(verts)
    joint_of = np.concatenate(joint_of)
    assert v_template.shape == (SMPL_NUM_VERTICES, 3)
    j_regressor = np.zeros((SMPL_NUM_JOINTS, SMPL_NUM_VERTICES))
    j_regressor[np.arange(SMPL_NUM_JOINTS), used - SMPL_NUM_JOINTS + np.arange(SMPL_NUM_JOINTS)] = 1.0
    shapedirs = rng.normal(0.0, 1e-3, (SMPL_NUM_VERTICES, 3, 10))
    shapedirs[:, :, 0] = 0.03 * v_template  # β₀ scales the body
    return {
        "v_template": v_template,
        "shapedirs": shapedirs,
        "posedirs": rng.normal(0.0, 1e-5, (SMPL_NUM_VERTICES, 3, 207)),
        "J_regressor": j_regressor,
        "weights": np.eye(SMPL_NUM_JOINTS)[joint_of],
        "kintree_table": np.array([PARENTS, list(range(SMPL_NUM_JOINTS))], dtype=np.int64),
        "f": np.concatenate(faces).astype(np.uint32),
    }


def converted_smpl_dir(root: Path) -> Path:
    """Write the synthetic model as the download's ``SMPL_NEUTRAL.pkl`` under ``root/download`` and convert it
    (``smpl-convert``) into ``root/models``, the folder avatar mode reads; returns that folder."""
    from lucid_app.avatar.smpl_convert import convert_smpl_folder

    (root / "download").mkdir(parents=True)
    with open(root / "download" / "SMPL_NEUTRAL.pkl", "wb") as fh:
        pickle.dump(synthetic_smpl(), fh, protocol=2)
    convert_smpl_folder(root / "download", root / "models")
    return root / "models"


# write_bar_object's cameras: azimuths off the view sectors' boundaries (±45°, ±135°), plus one overhead camera.
BAR_AZIMUTHS = (0.0, 60.0, 90.0, 120.0, 180.0, -150.0, -90.0, -30.0, 10.0)


BAR_POLARS = (80.0,) * 8 + (20.0,)


def write_bar_object(folder: Path, caption: str, colour: tuple[int, int, int], size: int = TRAIN_SIZE) -> None:
    """Train views of a coloured bar whose position follows the azimuth, on white (RGBA PNGs + transforms)."""
    cameras = demo_cameras(torch.tensor(BAR_AZIMUTHS), torch.tensor(BAR_POLARS), size)
    images = np.full((len(BAR_AZIMUTHS), size, size, 4), 255, dtype=np.uint8)
    for i, azimuth in enumerate(BAR_AZIMUTHS):
        column = int((azimuth + 180.0) / 360.0 * (size - 4))
        images[i, size // 4 : 3 * size // 4, column : column + 4, :3] = colour
    write_split(folder, "train", images, opengl_c2w_from_viewmats(cameras.viewmats), {})
    (folder / "caption.txt").write_text(caption + "\n")


# Balls of isotropic Gaussians on a cubic lattice (the mesh tests): centre spacing, their σ and opacity.
BALL_SPACING = 0.1
BALL_SIGMA = 0.1
BALL_OPACITY = 0.5


def lattice_ball(radius: float, centre: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> torch.Tensor:
    """[N, 3] points of the cubic lattice of spacing BALL_SPACING inside the ball."""
    axis = torch.arange(-radius, radius + 1e-6, BALL_SPACING)
    points = torch.cartesian_prod(axis, axis, axis)
    return points[points.norm(dim=1) <= radius + 1e-6] + torch.tensor(centre)


def splats_at(points: torch.Tensor, rgb: tuple[float, float, float] = (1.0, 0.0, 0.0),
              opacity: float = BALL_OPACITY) -> Splats:
    n = points.shape[0]
    quats = torch.randn(n, 4, generator=torch.Generator().manual_seed(0))  # isotropic: rotations are irrelevant
    return Splats(means=points, quats=quats, scales=torch.full((n, 3), BALL_SIGMA), opacities=torch.full((n,), opacity),
                  sh=rgb_to_sh_dc(torch.tensor(rgb)).expand(n, 1, 3).clone(), sh_degree=0)


def glb_json_and_colors(path: Path) -> tuple[dict, np.ndarray]:
    """A .glb's JSON and its first primitive's COLOR_0 as [N, 4] floats in [0, 1], read from the file itself (trimesh
    drops vertex colours it finds beside a material)."""
    import json
    import struct

    data = Path(path).read_bytes()
    json_length = struct.unpack_from("<I", data, 12)[0]
    gltf = json.loads(data[20:20 + json_length])
    binary = data[20 + json_length + 8:]
    accessor = gltf["accessors"][gltf["meshes"][0]["primitives"][0]["attributes"]["COLOR_0"]]
    view = gltf["bufferViews"][accessor["bufferView"]]
    assert accessor["componentType"] == 5121 and accessor["type"] == "VEC4" and accessor.get("normalized")
    start = view.get("byteOffset", 0) + accessor.get("byteOffset", 0)
    values = np.frombuffer(binary, np.uint8, count=accessor["count"] * 4, offset=start).reshape(-1, 4)
    return gltf, values / 255.0
