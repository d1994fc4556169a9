"""The textured mesh files: ``.glb`` (texture embedded) or ``.obj`` + ``.mtl`` + ``.png`` side by side, y up.

Both follow :mod:`lucid_app.mesh.write`'s frame (glTF's y up, the asset's front towards +z, which Blender's
importers expect). The OBJ set names its material library and texture after the ``.obj`` (characters other than
letters, digits, ``_``, ``-`` and ``.`` replaced by ``_``, as OBJ names end at white space) and references them by
bare file name, i.e. relative to the ``.obj``'s folder. Every file is written atomically, the texture and the
material library before the ``.obj``, so an ``.obj`` on disk never names a missing file.

For the app (:func:`write_mesh_files`' ``viewer`` and ``obj_zip``): the viewer's copy (``.glb``, textured, unlit
with a soft shading baked into grey vertex colours) and the ``.obj`` set as one flat ``.zip``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import trimesh

from lucid_app.io.files import atomic_path, remove_files, write_zip
from lucid_app.mesh.bake import DEFAULT_BAKE_METHOD, BakeMethod
from lucid_app.mesh.density import MeshError
from lucid_app.mesh.textured import TexturedMesh, texture_mesh, to_trimesh
from lucid_app.mesh.write import (
    baked_shading,
    mesh_suffix,
    srgb_to_linear,
    to_y_up,
    with_unlit_materials,
    write_mesh,
    write_viewer_mesh,
)
from lucid_app.render.base import Splats

OBJ_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
# The ``.obj``'s name inside the app's ``.zip`` of the OBJ set (its companions are named after it).
OBJ_ZIP_MEMBER = "mesh.obj"


def obj_companions(path: str | Path) -> tuple[Path, Path]:
    """The material library and texture an ``.obj`` at ``path`` is written with: (``<name>.mtl``, ``<name>.png``)."""
    path = Path(path)
    name = OBJ_NAME_UNSAFE.sub("_", path.stem) or "mesh"
    return path.with_name(f"{name}.mtl"), path.with_name(f"{name}.png")


def obj_set(textured: TexturedMesh, path: str | Path) -> dict[Path, bytes]:
    """The ``.obj`` set of a world-frame textured mesh, y up, as it is written at ``path``: {file: contents} for the
    texture, the material library and the ``.obj`` (in that order, the order they are written in), see
    :func:`obj_companions`.

    Raises:
        MeshError: the OBJ exporter named other companion files.
    """
    path = Path(path)
    mtl, png = obj_companions(path)
    upright = to_y_up(to_trimesh(textured))
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
    return {png: files[png.name], mtl: files[mtl.name], path: text.encode("utf-8")}


def write_textured_mesh(path: str | Path, textured: TexturedMesh) -> list[Path]:
    """Write a world-frame textured mesh as ``.glb`` or ``.obj`` (+ ``.mtl`` + ``.png``, :func:`obj_set`), y up,
    atomically.

    Returns:
        the files written, the mesh file first.

    Raises:
        MeshError: any other suffix.
    """
    path = Path(path)
    suffix = mesh_suffix(path)
    if suffix == ".glb":
        upright = to_y_up(to_trimesh(textured))
        with atomic_path(path) as tmp:
            upright.export(tmp, file_type="glb")
        return [path]
    files = obj_set(textured, path)
    for file, data in files.items():
        with atomic_path(file) as tmp:
            tmp.write_bytes(data)
    return [path, *obj_companions(path)]


def write_obj_zip(path: str | Path, textured: TexturedMesh, obj_name: str = OBJ_ZIP_MEMBER) -> Path:
    """Write the ``.obj`` set of :func:`obj_set` (``obj_name`` and its ``.mtl`` and ``.png``) as one ``.zip``
    (flat: unpacked into one folder, the ``.obj`` finds its companions by their relative names), atomically."""
    files = obj_set(textured, obj_name)
    return write_zip(path, {file.name: data for file, data in files.items()})


def textured_viewer_mesh(textured: TexturedMesh) -> bytes:
    """The app viewer's copy of a textured mesh as ``.glb`` bytes: y up, the texture as ``baseColorTexture`` under
    an unlit material (``KHR_materials_unlit``, see :data:`lucid_app.mesh.write.VIEW_LIGHT` for why), and the soft
    shading of :func:`lucid_app.mesh.write.baked_shading` as grey vertex colours (glTF's ``COLOR_0``, which
    multiplies the base colour in linear RGB, hence linearised)."""
    upright = to_y_up(to_trimesh(textured))
    shade = srgb_to_linear(baked_shading(np.asarray(upright.vertex_normals)))
    gray = np.concatenate([np.repeat(shade[:, None], 3, axis=1), np.ones((len(shade), 1))], axis=1)
    upright.visual.vertex_attributes["color"] = np.round(gray * 255.0).astype(np.uint8)
    return with_unlit_materials(upright.export(file_type="glb"))


def write_textured_viewer_mesh(path: str | Path, textured: TexturedMesh) -> Path:
    """Write :func:`textured_viewer_mesh` at ``path`` (``.glb``) atomically."""
    data = textured_viewer_mesh(textured)
    with atomic_path(Path(path)) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_mesh_files(path: str | Path, mesh: trimesh.Trimesh, splats: Splats, texture_px: int,
                     method: BakeMethod = DEFAULT_BAKE_METHOD, viewer: str | Path | None = None,
                     obj_zip: str | Path | None = None) -> dict[str, Any]:
    """Write ``mesh`` (world frame, vertex colours) at ``path``: textured from ``splats`` when ``texture_px`` > 0
    (:func:`write_textured_mesh`), else with its vertex colours (:func:`lucid_app.mesh.write.write_mesh`).

    Args:
        viewer: where to write the app viewer's copy too (``.glb``, unlit: :func:`write_textured_viewer_mesh` with a
            texture, else :func:`lucid_app.mesh.write.write_viewer_mesh`).
        obj_zip: where to write the ``.zip`` of the textured ``.obj`` set too (:func:`write_obj_zip`); without a
            texture, an earlier one there is removed (it would offer another state's mesh).

    The viewer's copy and the ``.zip`` are written before the mesh at ``path``, so that once ``path`` exists (the
    app shows the mesh then) the others are there.

    Returns:
        the figures to report: ``texture_px`` (0 without texture), the textured mesh's :meth:`TexturedMesh.report`,
        and ``files``, the paths written (the mesh file first).
    """
    if texture_px <= 0:
        if obj_zip is not None:
            remove_files([Path(obj_zip)])
        extra = [write_viewer_mesh(viewer, mesh)] if viewer is not None else []
        return {"texture_px": 0, "files": [str(p) for p in [write_mesh(path, mesh), *extra]]}
    textured = texture_mesh(mesh, splats, texture_px, method)
    extra = []
    if viewer is not None:
        extra.append(write_textured_viewer_mesh(viewer, textured))
    if obj_zip is not None:
        extra.append(write_obj_zip(obj_zip, textured))
    files = [*write_textured_mesh(path, textured), *extra]
    return {**textured.report(), "files": [str(p) for p in files]}
