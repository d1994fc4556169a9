"""The textured mesh files: ``.glb`` (texture embedded) or ``.obj`` + ``.mtl`` + ``.png`` side by side, y up.

Both follow :mod:`lucid_app.mesh.write`'s frame (glTF's y up, the asset's front towards +z, which Blender's
importers expect). The OBJ set names its material library and texture after the ``.obj`` (characters other than
letters, digits, ``_``, ``-`` and ``.`` replaced by ``_``, as OBJ names end at white space) and references them by
bare file name, i.e. relative to the ``.obj``'s folder. Every file is written atomically, the texture and the
material library before the ``.obj``, so an ``.obj`` on disk never names a missing file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import trimesh

from lucid_app.io.files import atomic_path
from lucid_app.mesh.bake import DEFAULT_BAKE_METHOD, BakeMethod
from lucid_app.mesh.density import MeshError
from lucid_app.mesh.textured import TexturedMesh, texture_mesh, to_trimesh
from lucid_app.mesh.write import MESH_FORMATS, to_y_up, write_mesh
from lucid_app.render.base import Splats

OBJ_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def obj_companions(path: str | Path) -> tuple[Path, Path]:
    """The material library and texture an ``.obj`` at ``path`` is written with: (``<name>.mtl``, ``<name>.png``)."""
    path = Path(path)
    name = OBJ_NAME_UNSAFE.sub("_", path.stem) or "mesh"
    return path.with_name(f"{name}.mtl"), path.with_name(f"{name}.png")


def write_textured_mesh(path: str | Path, textured: TexturedMesh) -> list[Path]:
    """Write a world-frame textured mesh as ``.glb`` or ``.obj`` (+ ``.mtl`` + ``.png``), y up, atomically.

    Returns:
        the files written, the mesh file first.

    Raises:
        MeshError: any other suffix.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MESH_FORMATS:
        raise MeshError(f"{path}: mesh format must be one of {', '.join(MESH_FORMATS)}, got {suffix or 'none'}")
    upright = to_y_up(to_trimesh(textured))
    if suffix == ".glb":
        with atomic_path(path) as tmp:
            upright.export(tmp, file_type="glb")
        return [path]
    mtl, png = obj_companions(path)
    # Diffuse white, no ambient or specular term: MTL viewers multiply the texture by Kd (trimesh's default 0.4).
    upright.visual.material = trimesh.visual.material.SimpleMaterial(
        name=png.stem, image=upright.visual.material.baseColorTexture, diffuse=(255, 255, 255, 255),
        ambient=(0, 0, 0, 255), specular=(0, 0, 0, 255),
    )
    text, files = trimesh.exchange.obj.export_obj(upright, include_normals=False, include_color=False,
                                                  include_texture=True, return_texture=True, mtl_name=mtl.name,
                                                  header=None)
    if set(files) != {mtl.name, png.name}:
        raise MeshError(f"the OBJ exporter wrote {sorted(files)}, expected {mtl.name} and {png.name}")
    for companion in (png, mtl):
        with atomic_path(companion) as tmp:
            tmp.write_bytes(files[companion.name])
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return [path, mtl, png]


def write_mesh_files(path: str | Path, mesh: trimesh.Trimesh, splats: Splats, texture_px: int,
                     method: BakeMethod = DEFAULT_BAKE_METHOD) -> dict[str, Any]:
    """Write ``mesh`` (world frame, vertex colours) at ``path``: textured from ``splats`` when ``texture_px`` > 0
    (:func:`write_textured_mesh`), else with its vertex colours (:func:`lucid_app.mesh.write.write_mesh`).

    Returns:
        the figures to report: ``texture_px`` (0 without texture), the textured mesh's :meth:`TexturedMesh.report`,
        and ``files``, the paths written (the mesh file first).
    """
    if texture_px <= 0:
        return {"texture_px": 0, "files": [str(write_mesh(path, mesh))]}
    textured = texture_mesh(mesh, splats, texture_px, method)
    return {**textured.report(), "files": [str(p) for p in write_textured_mesh(path, textured)]}
