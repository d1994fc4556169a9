"""INRIA-layout .ply I/O: exact round trip, channel-major f_rest, and clear errors for bad files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import plyfile
import pytest

from lucid_app.io.ply import (
    GaussianPly,
    PlyError,
    gaussian_property_names,
    is_gaussian_ply,
    read_gaussian_ply,
    read_point_cloud,
    write_gaussian_ply,
)
from tests.helpers import random_gaussians


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_round_trip_is_exact(tmp_path: Path, degree: int) -> None:
    g = random_gaussians(57, degree)
    path = write_gaussian_ply(tmp_path / "g.ply", g)
    back = read_gaussian_ply(path)
    assert back.sh_degree == degree
    for name in ("means", "sh_dc", "sh_rest", "opacity_logits", "log_scales", "quats"):
        a, b = getattr(g, name), getattr(back, name)
        assert b.dtype == np.float32 and b.shape == a.shape, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert is_gaussian_ply(path)
    # No temp file left beside the result.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.ply"]


def test_layout_names_order_and_channel_major_rest(tmp_path: Path) -> None:
    g = random_gaussians(4, 1)
    # Tag each rest coefficient with 10*band + channel so the file order is visible.
    for k in range(3):
        for c in range(3):
            g.sh_rest[:, k, c] = 10 * (k + 1) + c
    write_gaussian_ply(tmp_path / "g.ply", g)
    vertex = plyfile.PlyData.read(str(tmp_path / "g.ply"))["vertex"]
    names = [p.name for p in vertex.properties]
    assert names == gaussian_property_names(1)
    assert names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert names[-8:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    # Channel-major: f_rest_0..2 are red's bands 1..3, then green's, then blue's.
    values = [float(vertex.data[f"f_rest_{i}"][0]) for i in range(9)]
    assert values == [10, 20, 30, 11, 21, 31, 12, 22, 32]
    assert all(p.val_dtype in ("f4", "float32") for p in vertex.properties)


def test_accepts_torch_tensors(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    g = random_gaussians(5, 0)
    tg = GaussianPly(*(torch.from_numpy(getattr(g, f)) for f in
                       ("means", "sh_dc", "sh_rest", "opacity_logits", "log_scales", "quats")))
    back = read_gaussian_ply(write_gaussian_ply(tmp_path / "t.ply", tg))
    np.testing.assert_array_equal(back.means, g.means)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PlyError, match="no such .ply file") as err:
        read_gaussian_ply(tmp_path / "absent.ply")
    assert "absent.ply" in str(err.value)


def test_truncated_file(tmp_path: Path) -> None:
    path = write_gaussian_ply(tmp_path / "g.ply", random_gaussians(50, 0))
    data = path.read_bytes()
    cut = tmp_path / "cut.ply"
    cut.write_bytes(data[: len(data) - 100])
    with pytest.raises(PlyError, match="truncated or corrupt") as err:
        read_gaussian_ply(cut)
    assert str(cut) in str(err.value)
    header_only = tmp_path / "header.ply"
    header_only.write_bytes(data[:30])
    with pytest.raises(PlyError, match="truncated or corrupt"):
        read_point_cloud(header_only)
    junk = tmp_path / "junk.ply"
    junk.write_bytes(b"\x00\x01 not a ply at all")
    with pytest.raises(PlyError, match="truncated or corrupt"):
        read_gaussian_ply(junk)


def test_missing_properties_are_named(tmp_path: Path) -> None:
    names = [n for n in gaussian_property_names(0) if n not in ("opacity", "scale_1")]
    vertex = np.zeros(3, dtype=[(n, "f4") for n in names])
    path = tmp_path / "partial.ply"
    plyfile.PlyData([plyfile.PlyElement.describe(vertex, "vertex")]).write(str(path))
    with pytest.raises(PlyError) as err:
        read_gaussian_ply(path)
    message = str(err.value)
    assert "missing vertex properties: opacity, scale_1" in message
    assert str(path) in message


def test_mesh_is_a_foreign_layout(tmp_path: Path) -> None:
    vertex = np.array([(0, 0, 0), (1, 0, 0), (0, 1, 0)], dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    face = np.array([([0, 1, 2],)], dtype=[("vertex_indices", "i4", (3,))])
    path = tmp_path / "mesh.ply"
    plyfile.PlyData(
        [plyfile.PlyElement.describe(vertex, "vertex"), plyfile.PlyElement.describe(face, "face")]
    ).write(str(path))
    with pytest.raises(PlyError, match="looks like a mesh"):
        read_gaussian_ply(path)
    assert not is_gaussian_ply(path)
    # ... but it is a fine point cloud.
    cloud = read_point_cloud(path)
    assert cloud.points.shape == (3, 3) and cloud.colors is None


def test_wrong_rest_count(tmp_path: Path) -> None:
    names = gaussian_property_names(0) + ["f_rest_0", "f_rest_1"]
    vertex = np.zeros(2, dtype=[(n, "f4") for n in names])
    path = tmp_path / "odd.ply"
    plyfile.PlyData([plyfile.PlyElement.describe(vertex, "vertex")]).write(str(path))
    with pytest.raises(PlyError, match="2 f_rest_"):
        read_gaussian_ply(path)


def test_point_cloud_colors(tmp_path: Path) -> None:
    vertex = np.array(
        [(0.0, 1.0, 2.0, 255, 0, 51), (3.0, 4.0, 5.0, 0, 255, 102)],
        dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")],
    )
    path = tmp_path / "cloud.ply"
    plyfile.PlyData([plyfile.PlyElement.describe(vertex, "vertex")], text=True).write(str(path))
    cloud = read_point_cloud(path)
    np.testing.assert_array_equal(cloud.points, [[0, 1, 2], [3, 4, 5]])
    np.testing.assert_allclose(cloud.colors, [[1.0, 0.0, 0.2], [0.0, 1.0, 0.4]], atol=1e-6)


def test_failed_write_keeps_previous_file(tmp_path: Path) -> None:
    path = write_gaussian_ply(tmp_path / "g.ply", random_gaussians(10, 0))
    before = path.read_bytes()
    bad = random_gaussians(10, 0)
    bad.quats = bad.quats[:, :3]
    with pytest.raises(ValueError, match="quats"):
        write_gaussian_ply(path, bad)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["g.ply"]


def test_crash_mid_write_leaves_no_half_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_gaussian_ply(tmp_path / "g.ply", random_gaussians(10, 0))
    before = path.read_bytes()

    def crash(self: plyfile.PlyData, stream: object) -> None:
        stream.write(b"ply\nformat binary_little_endian 1.0\n")  # type: ignore[attr-defined]
        raise KeyboardInterrupt

    monkeypatch.setattr(plyfile.PlyData, "write", crash)
    with pytest.raises(KeyboardInterrupt):
        write_gaussian_ply(path, random_gaussians(20, 0, seed=1))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["g.ply"]
