"""Gaussians -> mesh: the density against a brute-force oracle, iso-surface radius, components and floaters,
colours, the upright .glb, clear errors, the ``mesh`` command and ``generate`` with ``export.mesh``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import plyfile
import pytest
import torch
from scipy.optimize import brentq
from scipy.spatial.transform import Rotation

from lucid_app.cli.main import main
from lucid_app.config import OptimConfig
from lucid_app.scene.gaussians import GaussianModel, rgb_to_sh_dc
from lucid_app.io.ply import gaussian_property_names, write_gaussian_ply
from lucid_app.render.base import Splats
from tests.helpers import (
    BALL_OPACITY,
    BALL_SIGMA,
    BALL_SPACING,
    TINY,
    glb_json_and_colors,
    last_json,
    lattice_ball,
    splats_at,
)

if TYPE_CHECKING:  # annotations only: their modules load in the tests that use them
    import trimesh

    from lucid_app.mesh import Grid

ISO = 2.0
RESOLUTION = 48


def expected_iso_radius(n_points: int) -> float:
    """Radius where a uniform ball of centres (continuum limit), convolved with the Gaussian, has density ISO.

    D(r) = rho o (2 pi sigma^2)^(3/2) P(|X| <= R), X ~ N(r e, sigma^2 I): P is a non-central chi-square CDF. R is
    the radius of the ball with the lattice's volume (n spacing^3).
    """
    from scipy.stats import ncx2

    big_r = (3.0 * n_points * BALL_SPACING**3 / (4.0 * np.pi)) ** (1.0 / 3.0)
    peak = BALL_OPACITY * (2.0 * np.pi) ** 1.5 * BALL_SIGMA**3 / BALL_SPACING**3

    def excess(r: float) -> float:
        return peak * ncx2.cdf((big_r / BALL_SIGMA) ** 2, 3, (r / BALL_SIGMA) ** 2) - ISO

    return brentq(excess, 0.5, 2.0)


@pytest.fixture(scope="module")
def ball() -> tuple[torch.Tensor, Splats]:
    points = lattice_ball(1.0)
    return points, splats_at(points)


def radii(mesh: trimesh.Trimesh, centre: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.asarray(mesh.vertices) - centre, axis=1)


def test_ball_is_one_watertight_red_component_at_the_iso_radius(ball, tmp_path: Path) -> None:
    from lucid_app.mesh import mesh_from_splats

    points, splats = ball
    result = mesh_from_splats(splats, resolution=RESOLUTION, iso=ISO)
    mesh = result.mesh
    assert result.components_kept == result.components_found == 1
    assert mesh.is_watertight and mesh.volume > 0, "closed, with outward normals"
    expected = expected_iso_radius(points.shape[0])
    r = radii(mesh, np.zeros(3))
    assert np.all(np.abs(r / expected - 1.0) < 0.05), (r.min(), r.max(), expected)
    colors = np.asarray(mesh.visual.vertex_colors)
    assert np.all(colors == [255, 0, 0, 255])


def test_glb_is_upright_and_keeps_vertex_colours(ball, tmp_path: Path) -> None:
    import trimesh
    from lucid_app.mesh import mesh_from_splats, write_mesh

    points, splats = ball
    shifted = splats_at(points + torch.tensor([0.0, 0.0, 0.5]))
    base = write_mesh(tmp_path / "ball.glb", mesh_from_splats(splats, resolution=24, iso=ISO).mesh)
    up = write_mesh(tmp_path / "up.glb", mesh_from_splats(shifted, resolution=24, iso=ISO).mesh)
    loaded = [trimesh.load(p, force="mesh") for p in (base, up)]
    for path in (base, up):
        assert np.all(glb_json_and_colors(path)[1] == [1.0, 0.0, 0.0, 1.0])  # pure red is red in linear RGB too
    delta = loaded[1].vertices.mean(axis=0) - loaded[0].vertices.mean(axis=0)
    np.testing.assert_allclose(delta, [0.0, 0.5, 0.0], atol=0.02)  # world +z (up) -> glTF +y (up)
    # The front (world +y) faces glTF's +z.
    front = write_mesh(tmp_path / "front.obj", mesh_from_splats(
        splats_at(points + torch.tensor([0.0, 0.5, 0.0])), resolution=24, iso=ISO).mesh)
    moved = trimesh.load(front, force="mesh", process=False).vertices.mean(axis=0) - loaded[0].vertices.mean(axis=0)
    np.testing.assert_allclose(moved, [0.0, 0.0, 0.5], atol=0.02)
    assert not list(tmp_path.glob(".*")), "no temporary files left"


def test_two_balls_are_two_components_and_a_floater_is_dropped() -> None:
    from lucid_app.mesh import mesh_from_splats

    left, right = lattice_ball(0.5, (-1.0, 0.0, 0.0)), lattice_ball(0.5, (1.0, 0.0, 0.0))
    floater = torch.tensor([[0.0, 0.0, 1.2], [0.05, 0.0, 1.2]])
    points = torch.cat([left, right, floater])
    colors = [(1.0, 0.0, 0.0)] * len(left) + [(0.0, 0.0, 1.0)] * len(right) + [(0.0, 1.0, 0.0)] * 2
    splats = splats_at(points)
    splats.sh = rgb_to_sh_dc(torch.tensor(colors))[:, None, :]
    splats.opacities = torch.cat([torch.full((len(points) - 2,), BALL_OPACITY), torch.full((2,), 1.0)])
    result = mesh_from_splats(splats, resolution=RESOLUTION, iso=ISO / 2)
    assert result.components_found == 3 and result.components_kept == 2
    parts = result.mesh.split(only_watertight=False)
    assert len(parts) == 2 and all(p.is_watertight for p in parts)
    for part in parts:
        x = part.vertices[:, 0].mean()
        expected = [255, 0, 0, 255] if x < 0 else [0, 0, 255, 255]
        assert abs(abs(x) - 1.0) < 0.02
        assert np.all(np.asarray(part.visual.vertex_colors) == expected)
    assert np.all(np.abs(result.mesh.vertices[:, 2]) < 0.8), "the floater at z = 1.2 is gone"


def _random_gaussians(n: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 3, generator=g) * 1.2 - 0.6
    quats = torch.randn(n, 4, generator=g)
    scales = 0.04 + 0.12 * torch.rand(n, 3, generator=g)
    opacities = torch.rand(n, generator=g)
    return means, quats, scales, opacities


def brute_force_density(means, quats, scales, opacities, grid: Grid, cutoff: float) -> np.ndarray:
    """Every grid point against every Gaussian, float64, covariances built with scipy's rotations."""
    axes = [grid.origin[i] + grid.voxel_size * np.arange(grid.shape[i]) for i in range(3)]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    q = quats.double().numpy()
    rot = Rotation.from_quat(q[:, [1, 2, 3, 0]]).as_matrix()  # scipy wants (x, y, z, w)
    cov = rot @ (scales.double().numpy()[:, :, None] ** 2 * np.transpose(rot, (0, 2, 1)))
    prec = np.linalg.inv(cov)
    d = points[:, None, :] - means.double().numpy()[None]  # [V, N, 3]
    m = np.einsum("vni,nij,vnj->vn", d, prec, d)
    values = opacities.double().numpy()[None] * np.exp(-0.5 * m) * (m <= cutoff**2)
    return values.sum(axis=1).reshape(grid.shape)


@pytest.mark.parametrize(("pairs_per_chunk", "shared_half_width"), [(1 << 22, 48), (37, 48), (200, 2)])
def test_density_matches_brute_force(pairs_per_chunk: int, shared_half_width: int,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Small chunks, and half-widths beyond the shared offsets (done in slabs), must not change anything.
    from lucid_app.mesh import Grid, density as mesh_density, density_grid

    monkeypatch.setattr(mesh_density, "SHARED_HALF_WIDTH", shared_half_width)
    gaussians = _random_gaussians(12, seed=3)
    # A grid smaller than the Gaussians' reach, so boxes crossing its border are exercised too.
    grid = Grid(origin=np.array([-0.6, -0.5, -0.55]), voxel_size=0.07, shape=(17, 16, 15))
    fast = density_grid(*gaussians, grid, cutoff_sigma=3.0, pairs_per_chunk=pairs_per_chunk).double().numpy()
    slow = brute_force_density(*gaussians, grid, cutoff=3.0)
    assert fast.shape == slow.shape and slow.max() > 1.0
    np.testing.assert_allclose(fast, slow, atol=2e-5, rtol=1e-4)


def _ply(path: Path, n: int, opacity_logit: float = 2.0) -> Path:
    """A 3DGS .ply of ``n`` Gaussians on a small lattice ball (an empty one written with plyfile directly)."""
    if n == 0:
        vertex = np.empty(0, dtype=[(name, "f4") for name in gaussian_property_names(0)])
        plyfile.PlyData([plyfile.PlyElement.describe(vertex, "vertex")]).write(str(path))
        return path
    raw = GaussianModel.from_points(lattice_ball(0.3)[:n], OptimConfig(), opacity=0.5).to_raw()
    raw.opacity_logits[:] = opacity_logit
    return write_gaussian_ply(path, raw)


@pytest.mark.parametrize(
    ("n", "logit", "message"),
    [(0, 0.0, "holds no Gaussians"), (50, -30.0, "all 50 Gaussians are transparent")],
)
def test_empty_or_transparent_ply_is_a_clear_error(n: int, logit: float, message: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    ply = _ply(tmp_path / "in.ply", n, logit)
    assert main(["mesh", "--ply", str(ply), "--out", str(tmp_path / "out.glb")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out.glb").exists()


def test_density_below_iso_and_bad_options_are_mesh_errors(ball) -> None:
    import trimesh
    from lucid_app.mesh import MeshError, mesh_from_splats, write_mesh

    _, splats = ball
    with pytest.raises(MeshError, match="not above the iso-level 100"):
        mesh_from_splats(splats, resolution=16, iso=100.0)
    with pytest.raises(MeshError, match="between 8 and 512"):
        mesh_from_splats(splats, resolution=1024)
    with pytest.raises(MeshError, match=".glb, .obj"):
        write_mesh("x.stl", trimesh.creation.box())


def test_corrupt_ply_is_the_engines_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 10\nproperty float x\nend_header\n\x00")
    assert main(["mesh", "--ply", str(bad), "--out", str(tmp_path / "out.glb")]) == 2
    err = capsys.readouterr().err
    assert "not a readable .ply file" in err and "Traceback" not in err


def test_mesh_command_writes_the_file_and_prints_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import trimesh

    ply = _ply(tmp_path / "in.ply", 200)
    out = tmp_path / "sub" / "ball.glb"
    assert main(["mesh", "--ply", str(ply), "--out", str(out), "--resolution", "40", "--iso", "0.3"]) == 0
    result = last_json(capsys)
    assert result["path"] == str(out) and out.is_file()
    assert result["vertices"] > 100 and result["faces"] > 100 and result["components_kept"] == 1
    loaded = trimesh.load(out, force="mesh")
    assert len(loaded.faces) == result["faces"]
    assert main(["mesh", "--ply", str(ply), "--out", str(tmp_path / "small.obj"), "--resolution", "40",
                 "--iso", "0.3", "--faces", "200"]) == 0
    small = last_json(capsys)
    assert 100 <= small["faces"] <= 200 and (tmp_path / "small.obj").is_file()
    assert small["watertight"] and small["resolution"] < 40, "the budget is met by a coarser grid"


def test_generate_with_export_mesh_writes_mesh_glb(dataset: Path, tmp_path: Path,  # noqa: F811
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import trimesh

    args = ["generate", "--prompt", "a red chair", "--negative", "", "--model", f"multiview:{dataset}",
            "--out", str(tmp_path / "run")]
    for item in [*TINY, "init.opacity=0.9", "export.mesh=true"]:
        args += ["--set", item]
    assert main(args) == 0
    files = last_json(capsys)["files"]
    assert files["mesh"] == str(tmp_path / "run" / "mesh.glb")
    assert len(trimesh.load(files["mesh"], force="mesh").faces) > 0


def test_a_mesh_failure_during_export_keeps_the_other_outputs(dataset: Path, tmp_path: Path,  # noqa: F811
                                                              capsys: pytest.CaptureFixture[str],
                                                              caplog: pytest.LogCaptureFixture) -> None:
    args = ["generate", "--prompt", "a red chair", "--negative", "", "--model", f"multiview:{dataset}",
            "--out", str(tmp_path / "run")]
    for item in [*TINY, "optim.steps=1", "init.opacity=0.01", "export.mesh=true"]:  # density below the iso-level
        args += ["--set", item]
    assert main(args) == 0
    result = last_json(capsys)
    assert result["status"] == "done" and "mesh" not in result["files"]
    assert "mesh export skipped" in caplog.text and "iso" in caplog.text
    for key in ("ply", "video", "checkpoint"):
        assert Path(result["files"][key]).is_file(), key
    assert not (tmp_path / "run" / "mesh.glb").exists()


def lumpy_cloud(n: int = 3000) -> Splats:
    """Random anisotropic Gaussians of random opacity: thin parts and many small components."""
    g = torch.Generator().manual_seed(0)
    return Splats(means=torch.randn(n, 3, generator=g) * 0.4, quats=torch.randn(n, 4, generator=g),
                  scales=torch.rand(n, 3, generator=g) * 0.08 + 0.01, opacities=torch.rand(n, generator=g),
                  sh=torch.zeros(n, 1, 3), sh_degree=0)


@pytest.mark.parametrize("max_faces", [20000, 5000, 1000])
def test_a_face_budget_keeps_the_mesh_watertight(max_faces: int) -> None:
    from lucid_app.mesh import mesh_from_splats

    splats = lumpy_cloud()
    full = mesh_from_splats(splats, resolution=96, iso=0.5)
    assert len(full.mesh.faces) > 20000 and full.mesh.is_watertight
    result = mesh_from_splats(splats, resolution=96, iso=0.5, max_faces=max_faces)
    faces = len(result.mesh.faces)
    assert result.mesh.is_watertight, "the face budget tore the surface open"
    assert max_faces / 3 <= faces <= max_faces, faces
    assert result.resolution < 96 and result.components_kept == full.components_kept == 1
    assert len(result.mesh.split(only_watertight=False)) == 1


def test_a_face_budget_below_the_coarsest_grid_is_a_clear_error(ball) -> None:  # noqa: ANN001
    from lucid_app.mesh import MeshError, mesh_from_splats

    _, splats = ball
    with pytest.raises(MeshError, match="ask for more faces"):
        mesh_from_splats(splats, resolution=RESOLUTION, iso=ISO, max_faces=20)


def test_glb_colours_are_linear_under_a_matte_material_so_viewers_show_the_files_colours(tmp_path: Path) -> None:
    """glTF reads COLOR_0 as linear RGB and a missing material as metallic: a mid-grey mesh must go in as linear
    0.2158 (what a display encodes back to sRGB 0.5) under a material with metallic 0."""
    import trimesh

    from lucid_app.mesh import write_mesh
    from lucid_app.mesh.write import srgb_to_linear

    box = trimesh.creation.box()
    box.visual.vertex_colors = np.tile([128, 64, 255, 255], (len(box.vertices), 1)).astype(np.uint8)
    gltf, colors = glb_json_and_colors(write_mesh(tmp_path / "grey.glb", box))
    material = gltf["materials"][gltf["meshes"][0]["primitives"][0]["material"]]["pbrMetallicRoughness"]
    assert material["metallicFactor"] == 0.0 and material["roughnessFactor"] == 1.0
    stored = colors[0]
    # Independent closed form: the sRGB transfer function's inverse at 128/255, 64/255, 1.
    expected = [((128 / 255 + 0.055) / 1.055) ** 2.4, ((64 / 255 + 0.055) / 1.055) ** 2.4, 1.0, 1.0]
    np.testing.assert_allclose(stored, expected, atol=1 / 255)
    np.testing.assert_allclose(srgb_to_linear(np.array([0.0, 0.04045, 1.0])), [0.0, 0.04045 / 12.92, 1.0])


def test_the_viewer_copy_is_unlit_with_the_files_colours_softly_shaded(tmp_path: Path) -> None:
    """The app's mesh viewer lights with a tinted environment: its copy is unlit, and each vertex keeps its colour's
    hue at 75-100 % of its brightness (the baked shading), lit side brightest."""
    import trimesh

    from lucid_app.mesh.write import SHADE_FLOOR, VIEW_LIGHT, write_viewer_mesh

    sphere = trimesh.creation.icosphere(subdivisions=2)
    sphere.visual.vertex_colors = np.tile([200, 100, 50, 255], (len(sphere.vertices), 1)).astype(np.uint8)
    path = write_viewer_mesh(tmp_path / "view.glb", sphere)
    gltf, colors = glb_json_and_colors(path)
    assert "KHR_materials_unlit" in gltf["extensionsUsed"]
    assert "KHR_materials_unlit" in gltf["materials"][0]["extensions"]
    loaded = trimesh.load(path, force="mesh", process=False)
    linear = colors[:, :3]
    srgb = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055) * 255.0
    ratio = srgb / np.array([200.0, 100.0, 50.0])
    assert np.all(ratio > SHADE_FLOOR - 0.03) and np.all(ratio < 1.03)
    assert np.allclose(ratio[:, 0], ratio[:, 1], atol=0.06), "the hue is kept"
    # The vertex facing the light (after the y-up turn) is the brightest.
    normals = np.asarray(loaded.vertex_normals)
    assert ratio[np.argmax(normals @ VIEW_LIGHT), 0] > ratio[np.argmin(normals @ VIEW_LIGHT), 0] + 0.15
