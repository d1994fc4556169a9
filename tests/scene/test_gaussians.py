"""GaussianModel: activations, LR schedules, optimiser surgery, checkpoints, and the initial shapes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import plyfile
import pytest
import torch

from lucid_app.config import ConfigError, InitConfig, OptimConfig
from lucid_app.scene.gaussians import (
    PARAM_NAMES,
    SH_C0,
    GaussianModel,
    inverse_sigmoid,
    knn_mean_distance,
    lr_at,
    rgb_to_sh_dc,
    sh_dc_to_rgb,
)
from lucid_app.scene.init_shapes import init_gaussians, sample_mesh_surface, sample_volume
from lucid_app.scene.pointe_init import resample_cloud
from lucid_app.io.ply import read_gaussian_ply, write_gaussian_ply
from lucid_app.render.projection import quat_to_rotmat


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def small_model(n: int = 64, degree: int = 0, seed: int = 0) -> GaussianModel:
    return GaussianModel.from_points(sample_volume("sphere", n, (1.0, 1.0, 1.0), gen(seed)), OptimConfig(),
                                     sh_degree=degree)


# ---------------------------------------------------------------- activations


def test_activations_and_inverses() -> None:
    x = torch.tensor([0.001, 0.1, 0.5, 0.9, 0.999], dtype=torch.float64)
    torch.testing.assert_close(torch.sigmoid(inverse_sigmoid(x)), x)
    assert inverse_sigmoid(torch.tensor(0.5)).item() == 0.0
    rgb = torch.rand(10, 3, generator=gen(), dtype=torch.float64)
    torch.testing.assert_close(sh_dc_to_rgb(rgb_to_sh_dc(rgb)), rgb)
    assert rgb_to_sh_dc(torch.tensor([0.5])).item() == 0.0
    assert math.isclose(SH_C0, 0.5 / math.sqrt(math.pi))


def test_model_activations() -> None:
    points = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    colors = torch.tensor([[1.0, 0.0, 0.0]] * 4)
    m = GaussianModel.from_points(points, OptimConfig(), colors=colors, opacity=0.1, sh_degree=2)
    s = m.splats()
    assert s.sh.shape == (4, 9, 3) and s.sh_degree == 2
    torch.testing.assert_close(s.opacities, torch.full((4,), 0.1))
    torch.testing.assert_close(sh_dc_to_rgb(s.sh[:, 0]), colors)
    assert torch.all(s.sh[:, 1:] == 0)
    torch.testing.assert_close(s.quats, torch.tensor([[1.0, 0, 0, 0]] * 4))
    # Isotropic kNN scale: point 0's neighbours are at distances 1, 2, 3.
    torch.testing.assert_close(s.scales[0], torch.full((3,), 2.0))
    # Non-normalised raw quaternions come out unit length, and gradients reach the raw parameters.
    with torch.no_grad():
        m.params["quats"].mul_(3.0)
    assert torch.allclose(m.splats().quats.norm(dim=-1), torch.ones(4))
    s = m.splats()
    (s.means.sum() + s.scales.sum() + s.opacities.sum() + s.sh.sum() + s.quats.sum()).backward()
    assert all(m.params[name].grad is not None for name in PARAM_NAMES)


def test_quat_to_rotmat() -> None:
    q = torch.randn(20, 4, generator=gen(), dtype=torch.float64)
    r = quat_to_rotmat(q)
    torch.testing.assert_close(r @ r.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(20, 3, 3))
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(20, dtype=torch.float64))
    # 90 degrees about z maps x to y.
    half = math.sqrt(0.5)
    rz = quat_to_rotmat(torch.tensor([[half, 0.0, 0.0, half]]))[0]
    torch.testing.assert_close(rz @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]))


# ---------------------------------------------------------------- learning rates


def test_lr_closed_form() -> None:
    assert lr_at(0, 5.6e-4, 5.6e-6, 5000) == pytest.approx(5.6e-4, rel=1e-12)
    assert lr_at(2500, 5.6e-4, 5.6e-6, 5000) == pytest.approx(math.sqrt(5.6e-4 * 5.6e-6), rel=1e-12)
    assert lr_at(1250, 1e-2, 1e-4, 5000) == pytest.approx(1e-2 * (1e-2) ** 0.25, rel=1e-12)
    assert lr_at(5000, 5.6e-4, 5.6e-6, 5000) == pytest.approx(5.6e-6, rel=1e-12)
    assert lr_at(9000, 5.6e-4, 5.6e-6, 5000) == pytest.approx(5.6e-6, rel=1e-12)
    assert lr_at(123, 0.05, 0.05, 5000) == 0.05
    assert lr_at(123, 0.0, 0.0, 5000) == 0.0
    with pytest.raises(ValueError, match="positive"):
        lr_at(1, 0.0, 1e-3, 10)


def test_update_learning_rates_per_group() -> None:
    optim = OptimConfig()
    m = small_model()
    rates = m.update_learning_rates(2500)
    by_group = {g["name"]: g["lr"] for g in m.optimizer.param_groups}
    assert by_group == rates
    assert set(by_group) == set(PARAM_NAMES)
    assert all(len(g["params"]) == 1 for g in m.optimizer.param_groups)
    assert rates["means"] == pytest.approx(math.sqrt(optim.means_lr * optim.means_lr_final))
    assert rates["log_scales"] == pytest.approx(math.sqrt(optim.scales_lr * optim.scales_lr_final))
    assert rates["quats"] == pytest.approx(math.sqrt(optim.quats_lr * optim.quats_lr_final))
    assert rates["sh_dc"] == pytest.approx(math.sqrt(optim.colors_lr * optim.colors_lr_final))
    assert rates["sh_rest"] == pytest.approx(rates["sh_dc"] * optim.sh_rest_lr_ratio)
    assert rates["opacity_logits"] == optim.opacities_lr
    assert m.update_learning_rates(optim.steps)["means"] == pytest.approx(optim.means_lr_final)


# ---------------------------------------------------------------- optimiser surgery and checkpoints


def take_step(m: GaussianModel, seed: int = 0) -> None:
    g = gen(seed)
    s = m.splats()
    loss = sum((t * torch.randn(t.shape, generator=g)).sum() for t in (s.means, s.scales, s.quats, s.opacities, s.sh))
    m.optimizer.zero_grad()
    loss.backward()
    m.optimizer.step()


def moments(m: GaussianModel, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    state = m.optimizer.state[m.params[name]]
    return state["exp_avg"], state["exp_avg_sq"]


def test_append_keep_and_reset_keep_moments_aligned() -> None:
    m = small_model(10, degree=1)
    take_step(m)
    before = {name: [t.clone() for t in moments(m, name)] for name in PARAM_NAMES}
    m.append(m.raw_subset(torch.tensor([0, 3])))
    assert m.count == 12
    for name in PARAM_NAMES:
        avg, sq = moments(m, name)
        assert avg.shape == sq.shape == m.params[name].shape
        torch.testing.assert_close(avg[:10], before[name][0])
        assert torch.all(avg[10:] == 0) and torch.all(sq[10:] == 0)
    keep = torch.ones(12, dtype=torch.bool)
    keep[[1, 11]] = False
    m.keep(keep)
    assert m.count == 10
    for name in PARAM_NAMES:
        avg, sq = moments(m, name)
        assert avg.shape == m.params[name].shape
        torch.testing.assert_close(sq[:9], before[name][1][[0, 2, 3, 4, 5, 6, 7, 8, 9]])
    # The optimiser holds exactly the model's parameters, and it still steps.
    assert [g["params"][0] for g in m.optimizer.param_groups] == [m.params[n] for n in PARAM_NAMES]
    take_step(m, seed=1)
    m.reset_opacity(0.01)
    assert m.opacities.max().item() <= 0.01 + 1e-7
    avg, sq = moments(m, "opacity_logits")
    assert torch.all(avg == 0) and torch.all(sq == 0)
    assert moments(m, "means")[0].abs().sum() > 0
    with pytest.raises(ValueError, match="bool mask"):
        m.keep(torch.ones(3, dtype=torch.bool))


def test_state_dict_round_trip_with_other_count() -> None:
    m = small_model(20, degree=1)
    take_step(m)
    m.keep(torch.arange(20) % 3 != 0)
    m.update_learning_rates(1000)
    state = m.state_dict()
    fresh = small_model(5)
    fresh.load_state_dict(state)
    assert fresh.count == m.count and fresh.sh_degree == 1
    for name in PARAM_NAMES:
        torch.testing.assert_close(fresh.params[name], m.params[name])
        torch.testing.assert_close(moments(fresh, name)[1], moments(m, name)[1])
    assert [g["lr"] for g in fresh.optimizer.param_groups] == [g["lr"] for g in m.optimizer.param_groups]
    take_step(m, seed=3)
    take_step(fresh, seed=3)
    torch.testing.assert_close(fresh.params["means"], m.params["means"])


def test_raw_round_trip_through_ply(tmp_path: Path) -> None:
    m = small_model(30, degree=2)
    path = write_gaussian_ply(tmp_path / "m.ply", m.to_raw())
    back = GaussianModel.from_raw(read_gaussian_ply(path), OptimConfig())
    for name in PARAM_NAMES:
        assert torch.equal(back.params[name].detach(), m.params[name].detach())
    lower = GaussianModel.from_raw(read_gaussian_ply(path), OptimConfig(), sh_degree=1)
    assert lower.sh.shape == (30, 4, 3)
    torch.testing.assert_close(lower.sh, m.sh[:, :4].detach())


# ---------------------------------------------------------------- initial shapes


@pytest.mark.parametrize("shape", ["sphere", "ellipsoid", "box"])
def test_volumes_inside_and_uniform(shape: str) -> None:
    size = (1.0, 2.0, 0.5) if shape != "sphere" else (1.5, 1.5, 1.5)
    n = 20000
    p = sample_volume(shape, n, size, gen())
    assert p.shape == (n, 3) and p.dtype == torch.float32
    u = p / torch.tensor(size)  # map to the unit ball / unit cube
    if shape == "box":
        assert torch.all(u.abs() <= 1.0)
        # Uniform in the cube: each coordinate's mean |u| is 1/2, and an inner half-size box holds 1/8.
        torch.testing.assert_close(u.abs().mean(0), torch.full((3,), 0.5), atol=0.02, rtol=0)
        frac = (u.abs() <= 0.5).all(-1).float().mean().item()
        assert abs(frac - 1 / 8) < 0.01
    else:
        r = u.norm(dim=-1)
        assert torch.all(r <= 1.0 + 1e-6)
        # Uniform in the ball: P(r <= a) = a^3, and the centroid is at the origin.
        for a in (0.5, 0.8):
            assert abs((r <= a).float().mean().item() - a**3) < 0.015
        assert u.mean(0).abs().max() < 0.02
        # Octants equally populated (isotropic).
        octant = ((u > 0).long() * torch.tensor([1, 2, 4])).sum(-1)
        counts = torch.bincount(octant, minlength=8).float() / n
        assert torch.all((counts - 1 / 8).abs() < 0.015)


def test_volume_determinism() -> None:
    a = sample_volume("ellipsoid", 100, (1.0, 2.0, 3.0), gen(7))
    b = sample_volume("ellipsoid", 100, (1.0, 2.0, 3.0), gen(7))
    c = sample_volume("ellipsoid", 100, (1.0, 2.0, 3.0), gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ConfigError, match="sphere, ellipsoid, box"):
        sample_volume("torus", 10, (1.0, 1.0, 1.0), gen())


def test_knn_matches_brute_force() -> None:
    p = torch.rand(300, 3, generator=gen(3), dtype=torch.float64)
    d = torch.cdist(p, p)
    d.fill_diagonal_(float("inf"))
    brute = d.topk(3, largest=False).values.mean(-1)
    torch.testing.assert_close(knn_mean_distance(p), brute)
    m = GaussianModel.from_points(p.float(), OptimConfig())
    torch.testing.assert_close(m.params["log_scales"], torch.log(brute.float())[:, None].expand(300, 3))
    # Duplicates do not give log(0); a lone point gets a finite scale.
    dup = torch.zeros(5, 3)
    assert torch.isfinite(torch.log(knn_mean_distance(dup))).all()
    assert torch.isfinite(knn_mean_distance(torch.zeros(1, 3))).all()


def write_tetra_obj(path: Path) -> np.ndarray:
    verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)
    faces = [(1, 3, 2), (1, 2, 4), (1, 4, 3), (2, 3, 4)]
    path.write_text(
        "".join(f"v {x} {y} {z}\n" for x, y, z in verts) + "".join(f"f {a} {b} {c}\n" for a, b, c in faces)
    )
    return verts


def test_mesh_samples_lie_on_surface(tmp_path: Path) -> None:
    write_tetra_obj(tmp_path / "tet.obj")
    pts, colors = sample_mesh_surface(tmp_path / "tet.obj", 2000, gen(1))
    assert pts.shape == (2000, 3) and colors is None
    x, y, z = pts.double().unbind(-1)
    # Each point lies on one of the four faces: x=0, y=0, z=0 or x+y+z=1, inside the tetrahedron.
    on_face = torch.stack([x.abs(), y.abs(), z.abs(), (x + y + z - 1).abs()], -1).min(-1).values
    assert on_face.max() < 1e-6
    assert (pts >= -1e-6).all() and (pts.sum(-1) <= 1 + 1e-6).all()
    # The slanted face has area sqrt(3)/2 of the total 1.5 + sqrt(3)/2.
    frac = ((x + y + z - 1).abs() < 1e-6).double().mean().item()
    assert abs(frac - (math.sqrt(3) / 2) / (1.5 + math.sqrt(3) / 2)) < 0.04
    again, _ = sample_mesh_surface(tmp_path / "tet.obj", 2000, gen(1))
    assert torch.equal(pts, again)


def test_init_gaussians_shapes(tmp_path: Path) -> None:
    optim = OptimConfig()
    m = init_gaussians(InitConfig(shape="box", num_points=500, size=(1.0, 2.0, 3.0)), optim, gen(0))
    assert m.count == 500
    assert (m.means.detach().abs() <= torch.tensor([1.0, 2.0, 3.0])).all()
    torch.testing.assert_close(m.opacities, torch.full((500,), 0.1))
    torch.testing.assert_close(sh_dc_to_rgb(m.sh[:, 0]).detach(), torch.full((500, 3), 0.5))
    a = init_gaussians(InitConfig(num_points=200), optim, gen(5))
    b = init_gaussians(InitConfig(num_points=200), optim, gen(5))
    assert all(torch.equal(a.params[n], b.params[n]) for n in PARAM_NAMES)

    write_tetra_obj(tmp_path / "tet.obj")
    mesh = init_gaussians(InitConfig(shape="mesh", path=str(tmp_path / "tet.obj"), num_points=300), optim, gen(0))
    assert mesh.count == 300

    # A coloured point cloud: colours used only with use_file_colors.
    vertex = np.array(
        [(0, 0, 0, 255, 0, 0), (1, 0, 0, 255, 0, 0), (0, 1, 0, 255, 0, 0)],
        dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")],
    )
    cloud = tmp_path / "cloud.ply"
    plyfile.PlyData([plyfile.PlyElement.describe(vertex, "vertex")]).write(str(cloud))
    grey = init_gaussians(InitConfig(shape="ply", path=str(cloud)), optim, gen(0))
    red = init_gaussians(InitConfig(shape="ply", path=str(cloud), use_file_colors=True), optim, gen(0))
    torch.testing.assert_close(sh_dc_to_rgb(grey.sh[:, 0]).detach(), torch.full((3, 3), 0.5))
    torch.testing.assert_close(sh_dc_to_rgb(red.sh[:, 0]).detach(), torch.tensor([[1.0, 0.0, 0.0]] * 3))

    # A 3DGS file keeps its full parameters.
    src = small_model(40, degree=1)
    with torch.no_grad():
        src.params["log_scales"].add_(torch.linspace(-1, 1, 40)[:, None])
    gs_path = write_gaussian_ply(tmp_path / "gs.ply", src.to_raw())
    loaded = init_gaussians(InitConfig(shape="ply", path=str(gs_path), sh_degree=1), optim, gen(0))
    for name in PARAM_NAMES:
        assert torch.equal(loaded.params[name].detach(), src.params[name].detach())


def test_pointe_without_the_package_falls_back_with_a_notice(caplog: pytest.LogCaptureFixture) -> None:
    init = InitConfig(shape="pointe", shape_fallback="ellipsoid", num_points=300, size=(0.5, 0.2, 0.1))
    with caplog.at_level("WARNING"):
        model = init_gaussians(init, OptimConfig(), gen(3))
    assert "Point-E is not installed" in caplog.text and "shape_fallback='ellipsoid'" in caplog.text
    expected = init_gaussians(InitConfig(shape="ellipsoid", num_points=300, size=(0.5, 0.2, 0.1)), OptimConfig(),
                              gen(3))
    assert torch.equal(model.params["means"].detach(), expected.params["means"].detach())


def test_resample_cloud_fits_the_ball_and_keeps_colours() -> None:
    points = torch.tensor([[10.0, 0.0, 0.0], [12.0, 0.0, 0.0], [11.0, 1.0, 0.0]])
    colors = torch.eye(3)
    out, out_colors = resample_cloud(points, colors, 500, 0.8, gen(0))
    assert out.shape == (500, 3) and out.norm(dim=-1).max() < 0.8 * 1.1
    # Every output colour is one of the inputs, i.e. colours travel with their points.
    assert torch.all((out_colors[:, None, :] == colors[None]).all(-1).any(-1))


def test_init_errors() -> None:
    with pytest.raises(ConfigError, match="init.path"):
        init_gaussians(InitConfig(shape="mesh"), OptimConfig(), gen())
    with pytest.raises(ConfigError, match="no such mesh"):
        init_gaussians(InitConfig(shape="mesh", path="/nonexistent/x.obj"), OptimConfig(), gen())
