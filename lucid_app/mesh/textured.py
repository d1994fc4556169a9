"""A textured mesh of Gaussians: the watertight mesh, unwrapped (:mod:`lucid_app.mesh.uv`) and baked
(:mod:`lucid_app.mesh.bake`), as one value with the figures the ``mesh`` command reports.

The geometry is the vertex-coloured mesh's (:func:`lucid_app.mesh.mesh_from_splats`); the unwrapped copy splits
vertices along UV seams, so ``watertight`` is reported for the welded mesh (the same surface).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import trimesh

from lucid_app.mesh.bake import DEFAULT_BAKE_METHOD, BakedTexture, BakeMethod, bake_texture
from lucid_app.mesh.uv import UVMesh, check_texture_size, unwrap
from lucid_app.render.base import Splats

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TexturedMesh:
    """A UV-mapped mesh (world frame, z up) with its baked texture.

    Attributes:
        uv_mesh: vertices split along seams, faces, UVs, charts.
        texture: the baked texture (``image`` [S, S, 3] uint8, row 0 at the top).
        vertex_colors: [V', 4] uint8 RGBA, the welded mesh's vertex colours per split vertex (a fallback).
        watertight: whether the welded mesh is closed.
    """

    uv_mesh: UVMesh
    texture: BakedTexture
    vertex_colors: np.ndarray
    watertight: bool

    def report(self) -> dict[str, Any]:
        """The figures of the ``mesh`` command's JSON: faces, texture size, UV coverage, seams, charts, watertight."""
        return {
            "faces": int(len(self.uv_mesh.faces)), "uv_vertices": int(len(self.uv_mesh.vertices)),
            "texture_px": self.uv_mesh.size_px, "uv_coverage": round(self.texture.coverage, 4),
            "seam_edges": self.uv_mesh.seam_edges, "charts": self.uv_mesh.charts, "bake": self.texture.method,
            "unseen": round(self.texture.unseen, 4), "watertight": self.watertight,
        }


def texture_mesh(mesh: trimesh.Trimesh, splats: Splats, size_px: int,
                 method: BakeMethod = DEFAULT_BAKE_METHOD) -> TexturedMesh:
    """Unwrap ``mesh`` into a ``size_px`` square texture and bake ``splats``' colours into it.

    Args:
        mesh: a world-frame mesh of ``splats`` (``mesh_from_splats(...).mesh``, vertex colours [V, 4] uint8).
        splats: the activated Gaussians.
        size_px: texture size in pixels (``lucid_app.mesh.uv`` bounds).
        method: the bake method (:mod:`lucid_app.mesh.bake`).

    Raises:
        MeshError: a bad texture size or method, or a mesh that cannot be unwrapped.
    """
    size_px = check_texture_size(size_px)
    uv_mesh = unwrap(np.asarray(mesh.vertices), np.asarray(mesh.faces), size_px)
    texture = bake_texture(uv_mesh, splats, method)
    colors = np.asarray(mesh.visual.vertex_colors, dtype=np.uint8)[uv_mesh.source_vertex]
    return TexturedMesh(uv_mesh=uv_mesh, texture=texture, vertex_colors=colors, watertight=bool(mesh.is_watertight))


def to_trimesh(textured: TexturedMesh) -> trimesh.Trimesh:
    """The textured mesh as a ``trimesh.Trimesh`` (world frame) with a PBR material whose ``baseColorTexture`` is
    the texture (metallic 0, roughness 1: a plain diffuse look), and the vertex colours as the custom vertex
    attribute ``_VERTEX_COLOR``.

    The vertex colours are not glTF's ``COLOR_0``: glTF 2.0 multiplies the base colour by ``COLOR_0``, so viewers
    (three.js, Blender's importer) would darken the texture by them; a custom attribute (underscore prefix, which
    viewers ignore) carries them for tools that want a fallback.
    """
    from PIL import Image

    material = trimesh.visual.material.PBRMaterial(
        name="baked", baseColorTexture=Image.fromarray(textured.texture.image, mode="RGB"),
        metallicFactor=0.0, roughnessFactor=1.0,
    )
    uv = textured.uv_mesh
    visual = trimesh.visual.TextureVisuals(uv=uv.uvs, material=material)
    return trimesh.Trimesh(uv.vertices, uv.faces, visual=visual, process=False,
                           vertex_attributes={"_VERTEX_COLOR": textured.vertex_colors})
