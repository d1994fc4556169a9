"""`.ply` files: Gaussians in the INRIA 3DGS layout, and plain point clouds.

Layout of a Gaussian file (one ``vertex`` element, float32 properties, binary little-endian), as written by
the reference 3DGS code and read by common splat viewers:

    x y z  nx ny nz  f_dc_0..2  f_rest_0..(3*(K-1)-1)  opacity  scale_0..2  rot_0..3

- values are *raw* (pre-activation): ``opacity`` is a logit, ``scale_*`` are natural logs, ``rot_*`` is a
  (w, x, y, z) quaternion, not necessarily normalised; the normals are written as zeros and ignored on read;
- ``f_rest`` is **channel-major**: the K-1 higher-band coefficients of red, then those of green, then blue, i.e.
  ``f_rest_{c*(K-1)+k}`` holds band coefficient ``k+1`` of channel ``c``;
- the SH degree is inferred from the number of ``f_rest`` properties (0, 9, 24, 45 -> degree 0..3).

Every failure is a :class:`PlyError` naming the path (and the property, for a NaN or infinite value). Writes are atomic
(temp file + ``os.replace``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import plyfile

from lucid_app.io.files import DISK_FULL_ERRNOS, disk_full

logger = logging.getLogger(__name__)

_REST_COUNT_TO_DEGREE = {3 * ((d + 1) ** 2 - 1): d for d in range(4)}


class PlyError(ValueError):
    """A .ply file is missing, unreadable or not in the expected layout; the message names the path."""


@dataclass
class GaussianPly:
    """Raw (pre-activation) Gaussian parameters as stored in a 3DGS ``.ply``; all arrays float32.

    Attributes:
        means: [N, 3] centres.
        sh_dc: [N, 1, 3] band-0 SH coefficients.
        sh_rest: [N, K-1, 3] higher-band SH coefficients, K = (sh_degree + 1) ** 2 ([N, 0, 3] for degree 0).
        opacity_logits: [N] opacity before the sigmoid.
        log_scales: [N, 3] natural log of the standard deviations.
        quats: [N, 4] (w, x, y, z) rotations, not necessarily normalised.
    """

    means: np.ndarray
    sh_dc: np.ndarray
    sh_rest: np.ndarray
    opacity_logits: np.ndarray
    log_scales: np.ndarray
    quats: np.ndarray

    @property
    def count(self) -> int:
        return int(self.means.shape[0])

    @property
    def sh_degree(self) -> int:
        return int(round((self.sh_rest.shape[1] + 1) ** 0.5)) - 1


@dataclass
class PointCloud:
    """Points of a plain ``.ply`` point cloud.

    Attributes:
        points: [N, 3] float32 positions.
        colors: [N, 3] float32 RGB in [0, 1], or None when the file has no red/green/blue.
    """

    points: np.ndarray
    colors: np.ndarray | None


def gaussian_property_names(sh_degree: int) -> list[str]:
    """Vertex property names of a 3DGS file of the given SH degree, in file order."""
    if sh_degree not in range(4):
        raise ValueError(f"sh_degree must be 0..3, got {sh_degree}")
    n_rest = 3 * ((sh_degree + 1) ** 2 - 1)
    return (
        ["x", "y", "z", "nx", "ny", "nz"]
        + [f"f_dc_{i}" for i in range(3)]
        + [f"f_rest_{i}" for i in range(n_rest)]
        + ["opacity"]
        + [f"scale_{i}" for i in range(3)]
        + [f"rot_{i}" for i in range(4)]
    )


def _check_shapes(g: GaussianPly) -> None:
    n = g.means.shape[0]
    expected = {
        "means": (n, 3),
        "sh_dc": (n, 1, 3),
        "opacity_logits": (n,),
        "log_scales": (n, 3),
        "quats": (n, 4),
    }
    for name, shape in expected.items():
        if tuple(getattr(g, name).shape) != shape:
            raise ValueError(f"GaussianPly.{name} has shape {tuple(getattr(g, name).shape)}, expected {shape}")
    rest = g.sh_rest.shape
    if len(rest) != 3 or rest[0] != n or rest[2] != 3 or 3 * rest[1] not in _REST_COUNT_TO_DEGREE:
        raise ValueError(f"GaussianPly.sh_rest has shape {tuple(rest)}, expected [{n}, K-1, 3] with K in 1, 4, 9, 16")


def write_gaussian_ply(path: str | os.PathLike[str], gaussians: GaussianPly) -> Path:
    """Write Gaussians in the INRIA 3DGS layout, atomically. Returns the path written.

    Arrays may be numpy or torch (they are converted to float32 numpy on the CPU).
    """
    g = GaussianPly(*(_to_numpy(getattr(gaussians, f)) for f in
                      ("means", "sh_dc", "sh_rest", "opacity_logits", "log_scales", "quats")))
    _check_shapes(g)
    n = g.count
    names = gaussian_property_names(g.sh_degree)
    # Channel-major f_rest: [N, K-1, 3] -> [N, 3, K-1] -> flat.
    rest = np.ascontiguousarray(g.sh_rest.transpose(0, 2, 1)).reshape(n, -1)
    columns = np.concatenate(
        [g.means, np.zeros((n, 3), np.float32), g.sh_dc.reshape(n, 3), rest, g.opacity_logits[:, None],
         g.log_scales, g.quats],
        axis=1,
    )
    vertex = np.empty(n, dtype=[(name, "f4") for name in names])
    for i, name in enumerate(names):
        vertex[name] = columns[:, i]
    data = plyfile.PlyData([plyfile.PlyElement.describe(vertex, "vertex")], text=False, byte_order="<")
    return _atomic_write(Path(path), data)


def _to_numpy(x: object) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()  # type: ignore[union-attr]
    return np.asarray(x, dtype=np.float32)


def _atomic_write(path: Path, data: plyfile.PlyData) -> Path:
    """Write to a temporary file in the destination folder, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            data.write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600 files; results are meant to be shared like any other output.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
            raise disk_full(path) from None
        raise
    return path


def _read(path: str | os.PathLike[str]) -> tuple[Path, plyfile.PlyData]:
    p = Path(path)
    if not p.is_file():
        raise PlyError(f"{p}: no such .ply file")
    try:
        data = plyfile.PlyData.read(str(p))
    except plyfile.PlyParseError as err:
        raise PlyError(f"{p}: not a readable .ply file (truncated or corrupt): {err}") from None
    except (ValueError, EOFError) as err:  # numpy/decoding errors on malformed bodies
        raise PlyError(f"{p}: not a readable .ply file (truncated or corrupt): {err}") from None
    except OSError as err:
        raise PlyError(f"{p}: cannot read: {err}") from None
    if "vertex" not in [e.name for e in data.elements]:
        found = ", ".join(e.name for e in data.elements) or "none"
        raise PlyError(f"{p}: no 'vertex' element (elements found: {found})")
    return p, data


def _finite_column(path: Path, vertices: np.ndarray, name: str) -> np.ndarray:
    """The vertex property ``name`` as float32, or a PlyError naming the file, the property and where a value is NaN
    or infinite (after the cast: a float64 value beyond float32's range is infinite too)."""
    column = np.asarray(vertices[name], dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(column))
    if bad.size:
        raise PlyError(f"{path}: vertex property {name!r} is NaN or infinite at {bad.size} of {column.size} vertices "
                       f"(first: vertex {bad[0]}, value {column[bad[0]]})")
    return column


def _vertex_properties(data: plyfile.PlyData) -> list[str]:
    return [prop.name for prop in data["vertex"].properties]


def is_gaussian_ply(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a readable .ply whose vertices carry the 3DGS properties (any SH degree)."""
    _, data = _read(path)
    props = set(_vertex_properties(data))
    return set(gaussian_property_names(0)) - {"nx", "ny", "nz"} <= props


def read_gaussian_ply(path: str | os.PathLike[str]) -> GaussianPly:
    """Read a 3DGS ``.ply`` (INRIA layout) into raw float32 arrays; the SH degree is inferred.

    Raises:
        PlyError: missing file, truncated or corrupt file, missing properties (named), a foreign layout
            such as a mesh or a plain point cloud, a NaN or infinite value (the property named) or a zero rotation.
    """
    p, data = _read(path)
    props = _vertex_properties(data)
    n_rest = sum(1 for name in props if name.startswith("f_rest_"))
    if n_rest not in _REST_COUNT_TO_DEGREE:
        raise PlyError(
            f"{p}: {n_rest} f_rest_* properties; a 3DGS file has 0, 9, 24 or 45 (SH degree 0..3)"
        )
    degree = _REST_COUNT_TO_DEGREE[n_rest]
    # Normals are written for compatibility but carry nothing; do not require them.
    required = [name for name in gaussian_property_names(degree) if name not in ("nx", "ny", "nz")]
    missing = [name for name in required if name not in props]
    if missing:
        others = [e.name for e in data.elements if e.name != "vertex"]
        kind = ""
        if "face" in others:
            kind = " It looks like a mesh (it has faces), not 3D Gaussians; use init.shape='mesh' for meshes."
        elif {"x", "y", "z"} <= set(props):
            kind = " It looks like a plain point cloud; use init.shape='ply' to initialise from points."
        raise PlyError(
            f"{p}: not a 3DGS Gaussian file, missing vertex properties: {', '.join(missing)}.{kind}"
        )
    v = data["vertex"].data
    n = len(v)

    def cols(names: list[str]) -> np.ndarray:
        if not names:
            return np.zeros((n, 0), np.float32)
        return np.stack([_finite_column(p, v, name) for name in names], axis=1)

    k_rest = n_rest // 3
    rest = cols([f"f_rest_{i}" for i in range(n_rest)]).reshape(n, 3, k_rest).transpose(0, 2, 1)
    out = GaussianPly(
        means=cols(["x", "y", "z"]),
        sh_dc=cols([f"f_dc_{i}" for i in range(3)]).reshape(n, 1, 3),
        sh_rest=np.ascontiguousarray(rest),
        opacity_logits=_finite_column(p, v, "opacity").copy(),
        log_scales=cols([f"scale_{i}" for i in range(3)]),
        quats=cols([f"rot_{i}" for i in range(4)]),
    )
    zero = np.flatnonzero(~out.quats.any(axis=1))
    if zero.size:
        raise PlyError(f"{p}: rot_0..rot_3 are all zero at {zero.size} of {n} vertices (first: vertex {zero[0]}); "
                       "a rotation quaternion cannot be zero")
    logger.debug("read %d Gaussians (SH degree %d) from %s", n, degree, p)
    return out


def read_point_cloud(path: str | os.PathLike[str]) -> PointCloud:
    """Read the vertices of any ``.ply`` as points, with colours when it has red/green/blue.

    Integer colours are scaled by their type's maximum (uint8 -> /255); float colours are taken as [0, 1].

    Raises:
        PlyError: missing file, truncated or corrupt file, no x/y/z properties, or a NaN or infinite position or
            float colour (the property named).
    """
    p, data = _read(path)
    props = _vertex_properties(data)
    missing = [name for name in ("x", "y", "z") if name not in props]
    if missing:
        raise PlyError(f"{p}: missing vertex properties: {', '.join(missing)}")
    v = data["vertex"].data
    points = np.stack([_finite_column(p, v, c) for c in "xyz"], axis=1)
    colors = None
    if all(c in props for c in ("red", "green", "blue")):
        raw = np.stack([np.asarray(v[c]) for c in ("red", "green", "blue")], axis=1)
        if np.issubdtype(raw.dtype, np.integer):
            colors = raw.astype(np.float32) / float(np.iinfo(raw.dtype).max)
        else:
            colors = np.stack([_finite_column(p, v, c) for c in ("red", "green", "blue")], axis=1)
        colors = np.clip(colors, 0.0, 1.0)
    return PointCloud(points=points, colors=colors)
