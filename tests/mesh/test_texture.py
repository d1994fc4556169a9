"""Textured mesh export (issue 26): the UV layout, the bake (flat colour, closed-form stripes), the padding fill,
the .glb / .obj files, the ``mesh --texture`` command's errors and JSON, and ``generate`` with ``export.mesh``."""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from lucid_app.cli.main import main
from lucid_app.config import ConfigError, OptimConfig, TrainConfig, apply_overrides
from lucid_app.scene.gaussians import GaussianModel, sh_dc_to_rgb
from lucid_app.mesh import mesh_from_splats, vertex_colors
from lucid_app.mesh.bake import bake_texture
from lucid_app.mesh.fill import fill_unused
from lucid_app.mesh.raster import rasterize, render_mesh, sample_bilinear, texture_shader, uv_to_pixels
from lucid_app.mesh.textured import texture_mesh
from lucid_app.mesh.uv import unwrap
from lucid_app.mesh.write import Z_UP_TO_Y_UP
from lucid_app.mesh.write_textured import write_mesh_files, write_textured_mesh
from lucid_app.io.ply import write_gaussian_ply
from lucid_app.render.base import Splats
from tests.helpers import TINY, glb_json_and_colors, last_json, lattice_ball, splats_at

GREEN = (0.2, 0.6, 0.4)
STRIPE = 0.125
RING_STEP = STRIPE / 5  # rings of Gaussians between stripe boundaries, never on one
RED, BLUE = np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0])


@pytest.fixture(scope="module")
def green_ball() -> tuple[trimesh.Trimesh, Splats]:
    """A solid lattice ball of one colour and its watertight mesh (~1.5k faces)."""
    splats = splats_at(lattice_ball(1.0), rgb=GREEN)
    return mesh_from_splats(splats, resolution=20, iso=2.0).mesh, splats


def striped_shell() -> Splats:
    """Gaussians on rings of the unit sphere at z = (k + 1/2) RING_STEP, about RING_STEP apart along each ring,
    red where ``floor(z / STRIPE)`` is even, else blue: the colour changes exactly halfway between two rings."""
    z = np.arange(-1.0 + RING_STEP / 2, 1.0, RING_STEP)
    points, colors = [], []
    for height in z:
        radius = math.sqrt(1.0 - height * height)
        count = max(3, round(2 * math.pi * radius / RING_STEP))
        phi = 2 * math.pi * (np.arange(count) + 0.5 * (round(height / RING_STEP) % 2)) / count
        points.append(np.stack([radius * np.cos(phi), radius * np.sin(phi), np.full(count, height)], axis=1))
        colors.append(np.tile(RED if math.floor(height / STRIPE) % 2 == 0 else BLUE, (count, 1)))
    model = GaussianModel.from_points(torch.tensor(np.concatenate(points), dtype=torch.float32), OptimConfig(),
                                      colors=torch.tensor(np.concatenate(colors), dtype=torch.float32), opacity=0.98)
    splats = model.splats()
    return Splats(*(t.detach() for t in (splats.means, splats.quats, splats.scales, splats.opacities, splats.sh)))


def stripe_of(points: np.ndarray) -> np.ndarray:
    """0 (red) / 1 (blue): the stripe of each point's radial projection on the unit sphere."""
    z = points[:, 2] / np.linalg.norm(points, axis=1)
    return np.floor(z / STRIPE).astype(np.int64) % 2


def surface_samples(vertices: np.ndarray, faces: np.ndarray, count: int) -> tuple[np.ndarray, ...]:
    """(face [P], barycentrics [P, 3], points [P, 3]) uniform by area, from a seeded numpy Generator."""
    rng = np.random.default_rng(0)
    corners = vertices[faces]
    area = np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    face = rng.choice(len(faces), size=count, p=area / area.sum())
    s, t = np.sqrt(rng.random(count)), rng.random(count)
    bary = np.stack([1 - s, s * (1 - t), s * t], axis=1)
    return face, bary, np.einsum("pk,pkc->pc", bary, corners[face])


def test_uvs_lie_in_the_unit_square_with_non_degenerate_faces_and_separate_islands(green_ball) -> None:
    mesh, _ = green_ball
    size = 256
    uv = unwrap(np.asarray(mesh.vertices), np.asarray(mesh.faces), size)
    assert len(uv.faces) == len(mesh.faces) and uv.charts > 1 and uv.seam_edges > 0
    assert uv.uvs.min() >= 0.0 and uv.uvs.max() <= 1.0
    np.testing.assert_array_equal(uv.source_vertex[uv.faces], mesh.faces)
    np.testing.assert_allclose(uv.vertices, np.asarray(mesh.vertices)[uv.source_vertex])
    corners = uv_to_pixels(uv.uvs, size, size)[uv.faces]
    e1, e2 = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    area_px = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    assert area_px.min() > 1e-6, "a face's UV triangle is degenerate"
    assert (uv.chart >= 0).all()
    # Each chart rasterised on its own: no texel is covered by two charts, and two charts are > 2 texels apart.
    owner = np.full(size * size, -1)
    for chart in range(uv.charts):
        frags = rasterize(uv_to_pixels(uv.uvs, size, size), uv.faces[uv.chart == chart], size, size)
        assert (owner[frags.pixel] == -1).all(), f"chart {chart} overlaps another"
        owner[frags.pixel] = chart
    owner = np.pad(owner.reshape(size, size), 2, constant_values=-1)
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            shifted = owner[2 + dy:2 + dy + size, 2 + dx:2 + dx + size]
            centre = owner[2:2 + size, 2:2 + size]
            assert not ((centre >= 0) & (shifted >= 0) & (centre != shifted)).any(), "islands closer than the padding"


def test_a_flat_coloured_ball_bakes_to_one_colour(green_ball) -> None:
    mesh, splats = green_ball
    textured = texture_mesh(mesh, splats, 128)
    image, used = textured.texture.image.astype(np.float64), textured.texture.used
    assert 0.3 < textured.texture.coverage == used.mean() < 0.9
    target = np.round(np.array(GREEN) * 255.0)
    assert np.abs(image[used] - target).max() <= 2.0, "a texel in use is off the ball's colour"
    assert np.abs(image - target).max() <= 2.0, "the fill brought in another colour"
    assert textured.watertight and textured.report()["texture_px"] == 128


def test_closed_form_stripes_bake_accurately_where_vertex_colours_cannot() -> None:
    splats = striped_shell()
    sphere = trimesh.creation.icosphere(subdivisions=3)  # 1280 faces on the Gaussians' sphere
    vertices, faces = np.asarray(sphere.vertices), np.asarray(sphere.faces)
    uv = unwrap(vertices, faces, 512)
    baked = bake_texture(uv, splats)
    face, bary, points = surface_samples(vertices, faces, 50_000)
    truth = stripe_of(points)
    colors = sample_bilinear(baked.image / 255.0, np.einsum("pk,pkc->pc", bary, uv.uvs[uv.faces[face]]))
    palette = np.stack([RED, BLUE])
    right = np.linalg.norm(colors - palette[truth], axis=1)
    accuracy = (right < np.linalg.norm(colors - palette[1 - truth], axis=1)).mean()
    purity = (right < 0.25 * np.linalg.norm(RED - BLUE)).mean()
    assert accuracy >= 0.95 and purity >= 0.80, (accuracy, purity)
    per_vertex = vertex_colors(vertices, splats.means, splats.quats, splats.scales, splats.opacities,
                               sh_dc_to_rgb(splats.sh[:, 0]))
    blended = np.einsum("pk,pkc->pc", bary, per_vertex[faces[face]])
    vertex_accuracy = (np.linalg.norm(blended - palette[truth], axis=1)
                       < np.linalg.norm(blended - palette[1 - truth], axis=1)).mean()
    assert vertex_accuracy < accuracy - 0.1, (vertex_accuracy, accuracy)


def test_the_fill_keeps_used_texels_and_spreads_their_colours() -> None:
    image = np.zeros((8, 8, 3))
    used = np.zeros((8, 8), dtype=bool)
    image[2, 2], used[2, 2] = (1.0, 0.0, 0.0), True
    image[6, 6], used[6, 6] = (0.0, 0.0, 1.0), True
    filled = fill_unused(image, used, rings=1)
    np.testing.assert_array_equal(filled[used], image[used])
    np.testing.assert_allclose(filled[1, 1], (1.0, 0.0, 0.0))
    np.testing.assert_allclose(filled[7, 7], (0.0, 0.0, 1.0))
    assert np.all((filled >= 0.0) & (filled <= 1.0)) and np.all(filled.sum(axis=-1) > 0.99)


@pytest.fixture(scope="module")
def textured_ball(green_ball):  # noqa: ANN001, ANN201
    mesh, splats = green_ball
    return texture_mesh(mesh, splats, 64)


def _expected_corners(textured) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    uv = textured.uv_mesh
    return uv.vertices[uv.faces] @ Z_UP_TO_Y_UP.T, uv.uvs[uv.faces]


def test_obj_round_trip_gives_the_same_uvs_and_image(textured_ball, tmp_path: Path) -> None:
    files = write_textured_mesh(tmp_path / "my ball.obj", textured_ball)
    assert [p.name for p in files] == ["my ball.obj", "my_ball.mtl", "my_ball.png"]
    text = files[0].read_text()
    assert "mtllib my_ball.mtl" in text and "map_Kd my_ball.png" in files[1].read_text()
    assert "Kd 1.00000000 1.00000000 1.00000000" in files[1].read_text()
    loaded = trimesh.load(files[0], force="mesh", process=False)
    positions, uvs = _expected_corners(textured_ball)
    np.testing.assert_allclose(loaded.vertices[loaded.faces], positions, atol=1e-6)
    np.testing.assert_allclose(loaded.visual.uv[loaded.faces], uvs, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(loaded.visual.material.image.convert("RGB")), textured_ball.texture.image)
    assert not list(tmp_path.glob(".*")), "no temporary files left"


def test_glb_has_a_base_colour_texture_and_keeps_vertex_colours_aside(textured_ball, tmp_path: Path) -> None:
    path = write_textured_mesh(tmp_path / "ball.glb", textured_ball)[0]
    loaded = trimesh.load(path, force="mesh", process=False)
    texture = loaded.visual.material.baseColorTexture
    np.testing.assert_array_equal(np.asarray(texture.convert("RGB")), textured_ball.texture.image)
    positions, uvs = _expected_corners(textured_ball)
    np.testing.assert_allclose(loaded.vertices[loaded.faces], positions, atol=1e-5)
    np.testing.assert_allclose(loaded.visual.uv[loaded.faces], uvs, atol=1e-6)
    data = path.read_bytes()
    header = json.loads(data[20:20 + struct.unpack("<I", data[12:16])[0]])
    attributes = header["meshes"][0]["primitives"][0]["attributes"]
    assert "TEXCOORD_0" in attributes and "_VERTEX_COLOR" in attributes
    assert "COLOR_0" not in attributes, "glTF multiplies the texture by COLOR_0"
    pbr = header["materials"][0]["pbrMetallicRoughness"]
    assert "baseColorTexture" in pbr and pbr["metallicFactor"] == 0.0


def test_the_textured_mesh_renders_in_its_one_colour(textured_ball) -> None:  # noqa: ANN001
    from lucid_app.render.cameras import orbit_cameras

    cams = orbit_cameras(torch.tensor([0.0, 120.0]), torch.tensor([80.0, 60.0]), torch.full((2,), 4.0),
                         torch.full((2,), 0.6), 32, 32)
    uv = textured_ball.uv_mesh
    shader = texture_shader(uv.faces, uv.uvs, textured_ball.texture.image / 255.0)
    rgb, cover = render_mesh(uv.vertices, uv.faces, cams, shader, (1.0, 1.0, 1.0))
    assert 0.1 < cover.mean() < 0.9
    np.testing.assert_allclose(rgb[cover == 1.0], np.broadcast_to(np.round(np.array(GREEN) * 255) / 255,
                                                                  (int((cover == 1.0).sum()), 3)), atol=1e-6)


def _ball_ply(path: Path, n: int = 200) -> Path:
    raw = GaussianModel.from_points(lattice_ball(0.3)[:n], OptimConfig(), opacity=0.5).to_raw()
    raw.opacity_logits[:] = 2.0
    return write_gaussian_ply(path, raw)


def test_mesh_command_writes_a_textured_obj_set_and_reports_it(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    ply = _ball_ply(tmp_path / "in.ply")
    out = tmp_path / "sub" / "ball.obj"
    assert main(["mesh", "--ply", str(ply), "--out", str(out), "--resolution", "24", "--iso", "0.3",
                 "--texture"]) == 0
    result = last_json(capsys)
    assert result["texture_px"] == 512 and result["watertight"] and result["bake"] == "normal"
    assert 0.2 < result["uv_coverage"] < 1.0 and result["seam_edges"] > 0 and result["charts"] >= 1
    assert result["files"] == [str(out), str(out.with_suffix(".mtl")), str(out.with_suffix(".png"))]
    assert all(Path(p).is_file() for p in result["files"]) and result["path"] == str(out)
    assert main(["mesh", "--ply", str(ply), "--out", str(tmp_path / "plain.glb"), "--resolution", "24",
                 "--iso", "0.3"]) == 0
    plain = last_json(capsys)
    assert plain["texture_px"] == 0 and _has_vertex_colours_only(plain["path"])


def _empty_ply(path: Path) -> Path:
    import plyfile

    from lucid_app.io.ply import gaussian_property_names

    vertex = np.empty(0, dtype=[(name, "f4") for name in gaussian_property_names(0)])
    plyfile.PlyData([plyfile.PlyElement.describe(vertex, "vertex")]).write(str(path))
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [("--texture 0", "texture size must be between 16 and 8192 px, got 0"),
     ("--texture 100000", "texture size must be between 16 and 8192 px, got 100000"),
     ("--bake splat", "unknown bake method 'splat'; valid: normal, views"),
     ("empty", "holds no Gaussians"),
     ("read-only", "is not writable")],
)
def test_bad_input_is_one_clear_line(case: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    ply = _empty_ply(tmp_path / "empty.ply") if case == "empty" else _ball_ply(tmp_path / "in.ply")
    folder = tmp_path / "locked"
    folder.mkdir()
    args = ["mesh", "--ply", str(ply), "--out", str(folder / "m.obj"), "--resolution", "16", "--iso", "0.3"]
    args += case.split() if case.startswith("--") else ["--texture"]
    if case == "read-only":
        folder.chmod(0o555)  # root ignores the mode, so the access check is told the truth the mode states
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == folder and mode & os.W_OK
                            else real_access(p, mode, **kw))
    assert main(args) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err
    assert not list(folder.iterdir())


def _has_vertex_colours_only(path: str | Path) -> bool:
    """A .glb with COLOR_0 vertex colours (read from the file: trimesh drops them beside the matte material) and no
    texture."""
    gltf, colours = glb_json_and_colors(Path(path))
    return "textures" not in gltf and len(colours) > 0


def test_write_mesh_files_without_a_texture_keeps_vertex_colours(green_ball, tmp_path: Path) -> None:
    mesh, splats = green_ball
    written = write_mesh_files(tmp_path / "m.glb", mesh, splats, 0)
    assert written == {"texture_px": 0, "files": [str(tmp_path / "m.glb")]}
    assert _has_vertex_colours_only(tmp_path / "m.glb")


def test_export_mesh_texture_is_bounded() -> None:
    assert TrainConfig().export.mesh_texture == 1024 and TrainConfig().export.mesh_faces == 20_000
    assert apply_overrides(TrainConfig(), ["export.mesh_texture=0"]).export.mesh_texture == 0
    with pytest.raises(ConfigError, match=r"mesh_texture: 0 \(vertex colours\) or 16..8192 px, got 8"):
        apply_overrides(TrainConfig(), ["export.mesh_texture=8"])
    with pytest.raises(ConfigError, match="mesh_texture: must be <= 8192"):
        apply_overrides(TrainConfig(), ["export.mesh_texture=100000"])


def test_generate_with_export_mesh_writes_a_textured_glb_by_default(dataset: Path, tmp_path: Path,  # noqa: F811
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    args = ["generate", "--prompt", "a red chair", "--negative", "", "--model", f"multiview:{dataset}",
            "--out", str(tmp_path / "run")]
    # The texture at its default size; a lighter face budget than the default (20 000) keeps the test quick.
    for item in [*TINY, "init.opacity=0.9", "export.mesh=true", "export.mesh_faces=2000"]:
        args += ["--set", item]
    assert main(args) == 0
    path = Path(last_json(capsys)["files"]["mesh"])
    assert path == tmp_path / "run" / "mesh.glb"
    loaded = trimesh.load(path, force="mesh")
    assert loaded.visual.kind == "texture" and loaded.visual.material.baseColorTexture.size == (1024, 1024)
    assert 0 < len(loaded.faces) <= 2000
    # The app's viewer copy carries the texture too, and the .obj set is zipped beside it.
    view = trimesh.load(tmp_path / "run" / "mesh_view.glb", force="mesh")
    assert view.visual.kind == "texture" and view.visual.material.baseColorTexture.size == (1024, 1024)
    assert (tmp_path / "run" / "mesh_obj.zip").is_file()


def test_obj_zip_members_load_with_the_same_uvs_and_image(textured_ball, tmp_path: Path) -> None:
    import zipfile

    from lucid_app.mesh.write_textured import write_obj_zip

    path = write_obj_zip(tmp_path / "mesh_obj.zip", textured_ball)
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == ["mesh.png", "mesh.mtl", "mesh.obj"]
        archive.extractall(tmp_path / "unpacked")
    loaded = trimesh.load(tmp_path / "unpacked" / "mesh.obj", force="mesh", process=False)
    positions, uvs = _expected_corners(textured_ball)
    np.testing.assert_allclose(loaded.vertices[loaded.faces], positions, atol=1e-6)
    np.testing.assert_allclose(loaded.visual.uv[loaded.faces], uvs, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(loaded.visual.material.image.convert("RGB")), textured_ball.texture.image)
    assert not list(tmp_path.glob(".*")), "no temporary files left"


def test_zip_member_names_must_be_bare_file_names(tmp_path: Path) -> None:
    from lucid_app.io.files import write_zip

    for name in ("../evil.obj", "sub/mesh.obj", "", ".."):
        with pytest.raises(ValueError, match="bare file names"):
            write_zip(tmp_path / "x.zip", {name: b"x"})
    assert not (tmp_path / "x.zip").exists()


def test_the_textured_viewer_copy_is_unlit_with_its_texture_and_a_grey_shading(textured_ball,
                                                                              tmp_path: Path) -> None:
    from lucid_app.mesh.write import SHADE_FLOOR, srgb_to_linear
    from lucid_app.mesh.write_textured import write_textured_viewer_mesh

    path = write_textured_viewer_mesh(tmp_path / "view.glb", textured_ball)
    gltf, colors = glb_json_and_colors(path)
    assert "KHR_materials_unlit" in gltf["extensionsUsed"]
    material = gltf["materials"][0]
    assert "KHR_materials_unlit" in material["extensions"] and "baseColorTexture" in material["pbrMetallicRoughness"]
    loaded = trimesh.load(path, force="mesh", process=False)
    np.testing.assert_array_equal(np.asarray(loaded.visual.material.baseColorTexture.convert("RGB")),
                                  textured_ball.texture.image)
    _, uvs = _expected_corners(textured_ball)
    np.testing.assert_allclose(loaded.visual.uv[loaded.faces], uvs, atol=1e-6)
    # COLOR_0 multiplies the texture in linear RGB: grey, between the shading floor's linear value and 1.
    assert np.allclose(colors[:, 0], colors[:, 1]) and np.allclose(colors[:, 1], colors[:, 2])
    assert colors[:, :3].min() >= srgb_to_linear(SHADE_FLOOR) - 1 / 255 and colors[:, 3].min() == 1.0
    assert colors[:, 0].max() - colors[:, 0].min() > 0.2, "lit and unlit sides differ"


def test_the_export_bake_methods_are_the_bakers() -> None:
    import typing

    from lucid_app.config.schema import ExportConfig
    from lucid_app.mesh.bake import BAKE_METHODS, DEFAULT_BAKE_METHOD

    hints = typing.get_type_hints(ExportConfig, include_extras=True)
    assert typing.get_args(hints["mesh_bake"]) == BAKE_METHODS
    assert ExportConfig().mesh_bake == DEFAULT_BAKE_METHOD
    with pytest.raises(ConfigError, match="normal"):
        apply_overrides(TrainConfig(), ["export.mesh_bake=sides"])


def test_mesh_files_for_the_app_textured_and_not(green_ball, tmp_path: Path) -> None:
    import zipfile

    mesh, splats = green_ball
    written = write_mesh_files(tmp_path / "mesh.glb", mesh, splats, 64, viewer=tmp_path / "view.glb",
                               obj_zip=tmp_path / "mesh_obj.zip")
    assert written["files"] == [str(tmp_path / n) for n in ("mesh.glb", "view.glb", "mesh_obj.zip")]
    with zipfile.ZipFile(tmp_path / "mesh_obj.zip") as archive:
        assert sorted(archive.namelist()) == ["mesh.mtl", "mesh.obj", "mesh.png"]
    # Vertex colours only: the viewer's copy without a texture, and no .zip of another state's mesh left behind.
    written = write_mesh_files(tmp_path / "mesh.glb", mesh, splats, 0, viewer=tmp_path / "view.glb",
                               obj_zip=tmp_path / "mesh_obj.zip")
    assert written["files"] == [str(tmp_path / "mesh.glb"), str(tmp_path / "view.glb")]
    assert not (tmp_path / "mesh_obj.zip").exists()
    assert trimesh.load(tmp_path / "view.glb", force="mesh").visual.material.baseColorTexture is None
