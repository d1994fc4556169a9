"""DensePose-style body-part maps of the posed mesh, one per camera, for the ControlNet (DESIGN §1 avatar mode).

Parts follow DensePose's 24 surface parts (index 0 = background)::

     1 torso back          2 torso front         3 right hand          4 left hand
     5 left foot           6 right foot          7 upper leg R back    8 upper leg L back
     9 upper leg R front  10 upper leg L front  11 lower leg R back   12 lower leg L back
    13 lower leg R front  14 lower leg L front  15 upper arm L back   16 upper arm R back
    17 upper arm L front  18 upper arm R front  19 lower arm L back   20 lower arm R back
    21 lower arm L front  22 lower arm R front  23 head back          24 head front

Each SMPL vertex takes the joint with its largest skinning weight; :data:`JOINT_TO_PARTS` maps that joint to a
(back, front) pair, and the vertex is "front" when, in the rest pose, it lies in front of (world +y of) its joint.
This is an approximation of DensePose's charts (their exact per-vertex segmentation is not redistributable and
their head/limb halves are not all front/back), good enough to tell a ControlNet where each limb is.

The rasteriser is our own: a z-buffer over triangles, vectorised over (triangle, pixel-in-its-bounding-box) pairs
in chunks, nearest fragment by perspective-correct inverse depth, the label of the fragment's nearest vertex.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable

import torch

from lucid_app.avatar.body import Body
from lucid_app.render.cameras import CameraBatch

NUM_PARTS = 24
# SMPL joint index -> (back part, front part).
JOINT_TO_PARTS: dict[int, tuple[int, int]] = {
    0: (1, 2), 3: (1, 2), 6: (1, 2), 9: (1, 2), 13: (1, 2), 14: (1, 2),  # pelvis, spine, collars: torso
    12: (23, 24), 15: (23, 24),  # neck, head
    1: (8, 10), 2: (7, 9),  # hips: upper legs (left, right)
    4: (12, 14), 5: (11, 13),  # knees: lower legs
    7: (5, 5), 10: (5, 5), 8: (6, 6), 11: (6, 6),  # ankles and feet
    16: (15, 17), 17: (16, 18),  # shoulders: upper arms
    18: (19, 21), 19: (20, 22),  # elbows: lower arms
    20: (4, 4), 22: (4, 4), 21: (3, 3), 23: (3, 3),  # wrists and hands
}
TORSO_PARTS = (1, 2)
# Fragments per chunk of the rasteriser (triangles × bounding-box pixels): bounds the memory to ~100 MB.
CHUNK_FRAGMENTS = 1 << 21
NEAR = 1e-3
# Inverse depth is quantised to 2^-24 so that (inverse depth, label) packs into one int64 key for scatter_reduce.
_DEPTH_BITS = 24
_LABEL_BITS = 5


def part_palette() -> torch.Tensor:
    """[25, 3] fixed colours in [0, 1]: black background, then 24 hues spread round the colour wheel with
    alternating brightness so neighbouring parts differ."""
    colours = [(0.0, 0.0, 0.0)]
    for part in range(NUM_PARTS):
        hue = (part * 7 % NUM_PARTS) / NUM_PARTS
        colours.append(colorsys.hsv_to_rgb(hue, 0.85, 1.0 if part % 2 == 0 else 0.7))
    return torch.tensor(colours, dtype=torch.float32)


def vertex_parts(body: Body) -> torch.Tensor:
    """[V] int64 part id (1..24) of each vertex: argmax skinning joint -> (back, front) by the rest pose."""
    joint = body.skin_weights.argmax(dim=1)
    table = torch.zeros(len(JOINT_TO_PARTS), 2, dtype=torch.long)
    for j, pair in JOINT_TO_PARTS.items():
        table[j] = torch.tensor(pair)
    front = (body.rest_vertices[:, 1] > body.rest_joints[joint, 1]).long()
    return table[joint, front]


def rasterize_labels(
    pixels: torch.Tensor, depth: torch.Tensor, faces: torch.Tensor, labels: torch.Tensor, width: int, height: int
) -> torch.Tensor:
    """Z-buffered label image of a projected triangle mesh.

    Args:
        pixels: [V, 2] projected vertices (x = column, y = row, pixel centres at +0.5).
        depth: [V] camera-space depth (> 0 in front of the camera).
        faces: [F, 3] vertex indices.
        labels: [V] int64 labels in [1, 31].
        width, height: image size.

    Returns:
        [height, width] int64 labels, 0 where no triangle covers the pixel centre.
    """
    tri = pixels[faces].double()  # [F, 3, 2]
    z = depth[faces].double()  # [F, 3]
    lo = torch.ceil(tri.min(dim=1).values - 0.5).long()
    hi = torch.floor(tri.max(dim=1).values - 0.5).long()
    lo = torch.maximum(lo, torch.zeros_like(lo))
    hi = torch.minimum(hi, torch.tensor([width - 1, height - 1]))
    size = (hi - lo + 1).clamp_min(0)
    area = ((tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1])
            - (tri[:, 1, 1] - tri[:, 0, 1]) * (tri[:, 2, 0] - tri[:, 0, 0]))
    keep = (z > NEAR).all(dim=1) & (size > 0).all(dim=1) & (area.abs() > 1e-12)
    ids = keep.nonzero()[:, 0]
    ids = ids[torch.argsort(size[ids, 0] * size[ids, 1], descending=True)]
    key_buffer = torch.full((height * width,), -1, dtype=torch.long)
    start = 0
    while start < len(ids):
        # Triangles are sorted by bounding-box area, largest first: a chunk's first box bounds all of its boxes.
        box = int(size[ids[start], 0] * size[ids[start], 1])
        count = max(1, CHUNK_FRAGMENTS // box)
        bw, bh = int(size[ids[start:start + count], 0].max()), int(size[ids[start:start + count], 1].max())
        count = max(1, min(count, CHUNK_FRAGMENTS // (bw * bh)))  # wide and tall boxes in one chunk
        chunk = ids[start:start + count]
        start += count
        oy, ox = torch.meshgrid(torch.arange(bh), torch.arange(bw), indexing="ij")
        cols = lo[chunk, 0, None] + ox.reshape(1, -1)  # [T, B]
        rows = lo[chunk, 1, None] + oy.reshape(1, -1)
        inside_box = (cols <= hi[chunk, 0, None]) & (rows <= hi[chunk, 1, None])
        px, py = cols.double() + 0.5, rows.double() + 0.5
        a, b, c = tri[chunk, 0], tri[chunk, 1], tri[chunk, 2]  # [T, 2]

        def edge(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
            return (q[:, 0, None] - p[:, 0, None]) * (py - p[:, 1, None]) - (q[:, 1, None] - p[:, 1, None]) * (
                px - p[:, 0, None])

        doubled = area[chunk, None]
        w0, w1, w2 = edge(b, c) / doubled, edge(c, a) / doubled, edge(a, b) / doubled
        inside = inside_box & (w0 >= -1e-9) & (w1 >= -1e-9) & (w2 >= -1e-9)
        zc = z[chunk]
        inv_depth = w0 / zc[:, 0, None] + w1 / zc[:, 1, None] + w2 / zc[:, 2, None]
        nearest_vertex = torch.stack([w0, w1, w2], dim=-1).argmax(dim=-1)
        label = labels[faces[chunk]].gather(1, nearest_vertex)
        key = (inv_depth * (1 << _DEPTH_BITS)).long() * (1 << _LABEL_BITS) + label
        pixel = rows * width + cols
        key_buffer.scatter_reduce_(0, pixel[inside], key[inside], reduce="amax")
    out = torch.where(key_buffer >= 0, key_buffer % (1 << _LABEL_BITS), torch.zeros_like(key_buffer))
    return out.reshape(height, width)


def project(points: torch.Tensor, cams: CameraBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """World points [V, 3] -> pixels [C, V, 2] (column, row) and depths [C, V] for each camera."""
    rot, trans = cams.viewmats[:, :3, :3].float(), cams.viewmats[:, :3, 3].float()
    cam = torch.einsum("cij,vj->cvi", rot, points.float()) + trans[:, None]
    depth = cam[..., 2]
    uvw = torch.einsum("cij,cvj->cvi", cams.Ks.float(), cam)
    return uvw[..., :2] / depth.clamp_min(NEAR)[..., None], depth


def part_labels(body: Body, cams: CameraBatch) -> torch.Tensor:
    """[C, H, W] int64 DensePose part ids (0 = background) of ``body`` seen by each camera."""
    cams = cams.to("cpu")
    labels = vertex_parts(body)
    pixels, depth = project(body.vertices, cams)
    return torch.stack([
        rasterize_labels(pixels[i], depth[i], body.faces, labels, cams.width, cams.height) for i in range(len(cams))
    ])


def part_map(body: Body, cams: CameraBatch) -> torch.Tensor:
    """[C, H, W, 3] float32 body-part map in [0, 1] (black background), the ControlNet's control images."""
    return part_palette()[part_labels(body, cams)]


def control_fn_for(body: Body) -> Callable[[CameraBatch], torch.Tensor]:
    """The trainer's ``control_fn``: cameras -> [C, H, W, 3] part maps (on the cameras' device)."""

    def control(cams: CameraBatch) -> torch.Tensor:
        return part_map(body, cams).to(cams.viewmats.device)

    return control
