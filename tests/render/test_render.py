"""Renderers: projection and footprint vs closed forms, compositing, gradients vs finite differences and vs an
independent dense compositor, spherical harmonics, memory-bounded chunking, backend selection, gsplat parity."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from lucid_app.render.cameras import CameraBatch, orbit_cameras
from lucid_app.render import make_renderer
from lucid_app.render.base import Splats
from lucid_app.render.sh import eval_sh, sh_basis
from lucid_app.render.torch_ref import TorchRenderer
from lucid_app.render.projection import project_gaussians

SH_C0 = 0.28209479177387814  # 3DGS's real-SH constants, typed here independently of lucid_app.render.sh
SH_C1 = 0.4886025119029199


def cameras(azimuths: list[float], width: int, height: int, radius: float = 4.0, fovy: float = 0.6,
            polar: float = 80.0, dtype: torch.dtype = torch.float64) -> CameraBatch:
    c = len(azimuths)
    return orbit_cameras(
        torch.tensor(azimuths, dtype=dtype), torch.full((c,), polar, dtype=dtype),
        torch.full((c,), radius, dtype=dtype), torch.full((c,), fovy, dtype=dtype), width, height,
    )


def random_splats(n: int, seed: int, radius: float = 1.0, scale: tuple[float, float] = (0.02, 0.05),
                  opacity: tuple[float, float] = (0.05, 0.95), sh_degree: int = 0,
                  dtype: torch.dtype = torch.float64) -> Splats:
    """Gaussians uniform in a ball, the realistic scene of the benchmark at a smaller size."""
    g = torch.Generator().manual_seed(seed)
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=dtype), dim=-1)
    means = d * radius * torch.rand(n, 1, generator=g, dtype=dtype) ** (1.0 / 3.0)
    lo, hi = scale
    scales = lo + (hi - lo) * torch.rand(n, 3, generator=g, dtype=dtype)
    opac = opacity[0] + (opacity[1] - opacity[0]) * torch.rand(n, generator=g, dtype=dtype)
    sh = 0.5 * torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g, dtype=dtype)
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    return Splats(means, quats, scales, opac, sh, sh_degree)


def dc_for_rgb(rgb: list[list[float]], dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return ((torch.tensor(rgb, dtype=dtype) - 0.5) / SH_C0)[:, None, :]


def one_gaussian(mean, scale, quat, opacity, rgb=(0.8, 0.3, 0.1)) -> Splats:
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    return Splats(t([mean]), t([quat]), t([scale]), t([opacity]), dc_for_rgb([list(rgb)]), 0)


# ---------------------------------------------------------------- projection and footprint


def test_single_gaussian_footprint_matches_closed_form_pinhole_projection():
    cams = cameras([30.0], 48, 40)
    quat_wxyz = [0.9, 0.2, -0.3, 0.25]
    splats = one_gaussian([0.15, -0.1, 0.2], [0.25, 0.1, 0.05], quat_wxyz, 0.7)
    out = TorchRenderer(tile_size=8).render(splats, cams, torch.zeros(1, 3, dtype=torch.float64))

    # Independent expectation: numpy + scipy's rotation, the textbook EWA formula.
    view, k = cams.viewmats[0].numpy(), cams.Ks[0].numpy()
    x, y, z = view[:3, :3] @ np.array([0.15, -0.1, 0.2]) + view[:3, 3]
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    centre = np.array([fx * x / z + cx, fy * y / z + cy])
    w, qx, qy, qz = np.array(quat_wxyz) / np.linalg.norm(quat_wxyz)
    rot = Rotation.from_quat([qx, qy, qz, w]).as_matrix()
    cov3 = rot @ np.diag([0.25, 0.1, 0.05]) ** 2 @ rot.T
    jac = np.array([[fx / z, 0, -fx * x / z**2], [0, fy / z, -fy * y / z**2]])
    cov2 = jac @ view[:3, :3] @ cov3 @ view[:3, :3].T @ jac.T + 0.3 * np.eye(2)
    jj, ii = np.meshgrid(np.arange(48) + 0.5, np.arange(40) + 0.5)
    d = np.stack([jj - centre[0], ii - centre[1]], -1)
    q = np.einsum("hwi,ij,hwj->hw", d, np.linalg.inv(cov2), d)
    expected = 0.7 * np.exp(-0.5 * q)
    expected[expected < 1 / 255] = 0.0

    np.testing.assert_allclose(out.alpha[0, ..., 0].numpy(), expected, atol=1e-10)
    np.testing.assert_allclose(out.means2d[0, 0].detach().numpy(), centre, atol=1e-10)
    assert out.radii[0, 0].item() == math.ceil(3 * math.sqrt(np.linalg.eigvalsh(cov2).max()))
    # The footprint's moments are those of the predicted Gaussian (slightly narrower: the 1/255 cut).
    a = out.alpha[0, ..., 0].numpy()
    mean_fit = (a[..., None] * np.stack([jj, ii], -1)).sum((0, 1)) / a.sum()
    np.testing.assert_allclose(mean_fit, centre, atol=0.05)
    cov_fit = np.einsum("hw,hwi,hwj->ij", a, d, d) / a.sum()
    np.testing.assert_allclose(cov_fit, cov2, rtol=0.1, atol=0.1)
    np.testing.assert_allclose(out.rgb[0, 20, 24].numpy() / a[20, 24], [0.8, 0.3, 0.1], atol=1e-10)


@pytest.mark.skipif(importlib.util.find_spec("gsplat") is None, reason="needs gsplat's pure-torch helpers")
def test_projection_matches_gsplat_pure_torch_projection():
    from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci

    splats = random_splats(300, seed=3, radius=6.0, scale=(0.02, 0.3))
    cams = cameras([0.0, 120.0], 64, 48, radius=4.0)
    proj = project_gaussians(splats, cams.viewmats, cams.Ks, 64, 48)
    covars, _ = _quat_scale_to_covar_preci(splats.quats, splats.scales, compute_preci=False)
    _, means2d, depths, conics, _ = _fully_fused_projection(splats.means, covars, cams.viewmats, cams.Ks, 64, 48)
    ok = proj.in_front
    assert ok.sum() > 200 and (~ok).sum() > 0  # some Gaussians sit behind the near plane
    torch.testing.assert_close(proj.means2d[ok], means2d[ok])
    torch.testing.assert_close(proj.depths[ok], depths[ok])
    torch.testing.assert_close(proj.conics[ok], conics[ok])


# ---------------------------------------------------------------- compositing


def test_front_gaussian_occludes_back_one_whatever_the_input_order():
    cams = cameras([0.0], 32, 32, polar=90.0)  # on +y, looking along -y: both means on the optical axis
    bg = torch.zeros(1, 3, dtype=torch.float64)
    front = dict(mean=[0.0, 1.0, 0.0], rgb=(1.0, 0.0, 0.0))  # camera on +y: this one is nearer
    back = dict(mean=[0.0, -1.0, 0.0], rgb=(0.0, 1.0, 0.0))

    def render(order):
        parts = [one_gaussian(g["mean"], [0.3] * 3, [1, 0, 0, 0], 0.95, g["rgb"]) for g in order]
        cat = lambda f: torch.cat([getattr(p, f) for p in parts])  # noqa: E731
        splats = Splats(cat("means"), cat("quats"), cat("scales"), cat("opacities"), cat("sh"), 0)
        return TorchRenderer().render(splats, cams, bg)

    a, b = render([front, back]), render([back, front])
    torch.testing.assert_close(a.rgb, b.rgb)
    red, green, _ = a.rgb[0, 16, 16].tolist()  # pure colours: red = w_front, green = w_back
    assert red > 0.9 and green < 0.1 and a.alpha[0, 16, 16, 0] > 0.99
    torch.testing.assert_close(a.alpha[0, 16, 16, 0].item(), red + green, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a.depth[0, 16, 16, 0].item(), 3.0 * red + 5.0 * green, rtol=1e-12, atol=1e-12)


def test_background_shows_where_alpha_is_zero_and_is_per_view():
    cams = cameras([0.0, 90.0], 40, 24)
    splats = one_gaussian([0.0, 0.0, 0.0], [0.05] * 3, [1, 0, 0, 0], 0.9)
    bg = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.2, 1.0]], dtype=torch.float64)
    out = TorchRenderer().render(splats, cams, bg)
    empty = out.alpha[..., 0] == 0
    assert empty.sum() > 0.9 * empty.numel() and not empty[:, 12, 20].any()
    for v in range(2):
        torch.testing.assert_close(out.rgb[v][empty[v]], bg[v].expand(int(empty[v].sum()), 3))
        assert (out.depth[v][empty[v]] == 0).all()
    assert out.rgb.shape == (2, 24, 40, 3) and out.alpha.shape == out.depth.shape == (2, 24, 40, 1)


def dense_reference(splats: Splats, cams: CameraBatch, bg: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Every pixel against every Gaussian, one Gaussian at a time in depth order, as 3DGS's per-pixel loop."""
    from lucid_app.render.sh import sh_to_rgb

    proj = project_gaussians(splats, cams.viewmats, cams.Ks, cams.width, cams.height)
    colors = sh_to_rgb(splats.sh_degree, splats.sh, splats.means, cams.centers)
    jj, ii = torch.meshgrid(torch.arange(cams.width) + 0.5, torch.arange(cams.height) + 0.5, indexing="xy")
    pix = torch.stack([jj, ii], -1).to(splats.means.dtype)
    rgbs, alphas, depths = [], [], []
    for v in range(len(cams)):
        t = torch.ones(cams.height, cams.width, dtype=pix.dtype)
        rgb, depth = torch.zeros_like(pix[..., :1]).expand(-1, -1, 3) * 0, torch.zeros_like(t)
        done = torch.zeros_like(t, dtype=torch.bool)
        for n in torch.argsort(proj.depths[v].detach()).tolist():
            if not proj.in_front[v, n]:
                continue
            d = pix - proj.means2d[v, n]
            a, b, c = proj.conics[v, n]
            q = a * d[..., 0] ** 2 + 2 * b * d[..., 0] * d[..., 1] + c * d[..., 1] ** 2
            alpha = (splats.opacities[n] * torch.exp(-0.5 * q)).clamp(max=0.99)
            alpha = torch.where(alpha < 1 / 255, torch.zeros_like(alpha), alpha)
            done = done | (t * (1 - alpha) <= 1e-4)
            alpha = torch.where(done, torch.zeros_like(alpha), alpha)
            rgb = rgb + (alpha * t)[..., None] * colors[v, n]
            depth = depth + alpha * t * proj.depths[v, n]
            t = t * (1 - alpha)
        rgbs.append(rgb + t[..., None] * bg[v])
        alphas.append(1 - t)
        depths.append(depth)
    return torch.stack(rgbs), torch.stack(alphas)[..., None], torch.stack(depths)[..., None]


def test_matches_dense_reference_including_gradients_and_early_stop():
    splats = random_splats(60, seed=1, radius=0.6, scale=(0.05, 0.25), opacity=(0.3, 0.98), sh_degree=1)
    cams = cameras([10.0, 200.0], 21, 17, fovy=0.7)
    bg = torch.tensor([[0.2, 0.4, 0.6], [1.0, 1.0, 1.0]], dtype=torch.float64)
    weights = torch.rand(2, 17, 21, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fields = ("means", "quats", "scales", "opacities", "sh")

    def run(fn):
        s = Splats(*(getattr(splats, f).clone().requires_grad_(True) for f in fields), splats.sh_degree)
        rgb, alpha, depth = fn(s)
        loss = (torch.cat([rgb, alpha, 0.1 * depth], -1) * weights).sum()
        loss.backward()
        return (rgb, alpha, depth), [getattr(s, f).grad for f in fields]

    (ours, g_ours) = run(lambda s: (lambda o: (o.rgb, o.alpha, o.depth))(
        TorchRenderer(tile_size=8).render(s, cams, bg)))
    (ref, g_ref) = run(lambda s: dense_reference(s, cams, bg))
    assert ref[1].max() > 1 - 2e-4  # some pixels reach the early stop
    for x, y in zip(ours, ref):
        torch.testing.assert_close(x.detach(), y.detach(), rtol=1e-9, atol=1e-9)
    for x, y in zip(g_ours, g_ref):
        torch.testing.assert_close(x, y, rtol=1e-7, atol=1e-9)


# ---------------------------------------------------------------- gradients


def test_gradients_match_central_finite_differences_float64():
    # Large footprints, moderate opacities: every alpha stays strictly inside (1/255, 0.99) and T >> 1e-4, so
    # the loss is smooth around this point and central differences are exact to O(eps^2).
    splats = random_splats(4, seed=7, radius=0.2, scale=(0.4, 0.6), opacity=(0.3, 0.6), sh_degree=1)
    cams = cameras([0.0, 150.0], 14, 10, radius=3.0, fovy=0.25)
    bg = torch.tensor([[0.1, 0.5, 0.9], [0.7, 0.3, 0.2]], dtype=torch.float64)
    weights = torch.randn(2, 10, 14, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    renderer = TorchRenderer(tile_size=4)
    names = ("means", "quats", "scales", "opacities", "sh", "bg")

    def loss_of(params: dict[str, torch.Tensor]) -> torch.Tensor:
        s = Splats(params["means"], params["quats"], params["scales"], params["opacities"], params["sh"], 1)
        out = renderer.render(s, cams, params["bg"])
        return (torch.cat([out.rgb, out.alpha, out.depth], -1) * weights).sum()

    params = {n: getattr(splats, n).clone() for n in names[:-1]} | {"bg": bg.clone()}
    proj = project_gaussians(splats, cams.viewmats, cams.Ks, 14, 10)
    jj, ii = torch.meshgrid(torch.arange(14) + 0.5, torch.arange(10) + 0.5, indexing="xy")
    d = torch.stack([jj, ii], -1).double()[None, :, :, None] - proj.means2d[:, None, None]  # [C, H, W, N, 2]
    a, b, c = proj.conics[:, None, None].unbind(-1)
    each = splats.opacities * torch.exp(
        -0.5 * (a * d[..., 0] ** 2 + 2 * b * d[..., 0] * d[..., 1] + c * d[..., 1] ** 2))
    assert each.min() > 2 / 255 and each.max() < 0.9
    for p in params.values():
        p.requires_grad_(True)
    loss_of(params).backward()
    eps = 1e-6
    for name in names:
        analytic = params[name].grad
        numeric = torch.zeros_like(analytic)
        with torch.no_grad():
            flat = params[name].view(-1)
            for i in range(flat.numel()):
                old = flat[i].item()
                flat[i] = old + eps
                up = loss_of(params)
                flat[i] = old - eps
                down = loss_of(params)
                flat[i] = old
                numeric.view(-1)[i] = (up - down) / (2 * eps)
        torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")


def test_means2d_gradient_and_radii_follow_culling():
    splats = random_splats(50, seed=2)
    splats.means[0] = torch.tensor([0.0, 4.5, 0.0], dtype=torch.float64)  # behind the camera at (0, ~3.9, 0.7)
    splats.means[1] = torch.tensor([3.0, 0.0, 0.0], dtype=torch.float64)  # far off-screen
    splats.means.requires_grad_(True)
    cams = cameras([0.0], 32, 32)
    out = TorchRenderer().render(splats, cams, torch.ones(1, 3, dtype=torch.float64))
    out.rgb.sum().backward()
    assert out.means2d.shape == (1, 50, 2) and out.radii.shape == (1, 50)
    assert out.radii[0, 0] == 0 and out.radii[0, 1] == 0 and (out.radii[0, 2:] > 0).all()
    grad = out.means2d.grad
    assert grad is not None and (grad[0, :2] == 0).all() and grad[0, 2:].abs().sum() > 0


# ---------------------------------------------------------------- spherical harmonics


def test_sh_basis_is_orthonormal_on_the_sphere():
    nodes, w_mu = np.polynomial.legendre.leggauss(12)
    phi = np.arange(24) * 2 * np.pi / 24
    mu, ph = np.meshgrid(nodes, phi, indexing="ij")
    st = np.sqrt(1 - mu**2)
    dirs = torch.tensor(np.stack([st * np.cos(ph), st * np.sin(ph), mu], -1).reshape(-1, 3))
    weights = torch.tensor(np.repeat(w_mu, 24) * 2 * np.pi / 24)
    basis = sh_basis(3, dirs)
    gram = basis.T @ (weights[:, None] * basis)
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), atol=1e-12, rtol=0)


@pytest.mark.skipif(importlib.util.find_spec("gsplat") is None, reason="needs gsplat's pure-torch helpers")
def test_sh_matches_gsplat_pure_torch_evaluation():
    from gsplat.cuda._torch_impl import _spherical_harmonics

    g = torch.Generator().manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.randn(100, 3, generator=g, dtype=torch.float64), dim=-1)
    coeffs = torch.randn(100, 16, 3, generator=g, dtype=torch.float64)
    for degree in range(4):
        torch.testing.assert_close(eval_sh(degree, coeffs, dirs), _spherical_harmonics(degree, dirs, coeffs))


def test_sh_degree1_colour_depends_on_view_direction():
    mean = torch.tensor([0.1, 0.0, 0.05], dtype=torch.float64)
    coeffs = torch.tensor([[0.2, -0.1, 0.3], [0.4, 0.0, -0.2], [-0.3, 0.5, 0.1], [0.2, 0.2, 0.6]],
                          dtype=torch.float64)
    splats = Splats(mean[None], torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64),
                    torch.full((1, 3), 0.2, dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64),
                    coeffs[None], 1)
    cams = cameras([0.0, 100.0, -140.0], 33, 33, polar=60.0)
    out = TorchRenderer().render(splats, cams, torch.zeros(3, 3, dtype=torch.float64))
    colours = []
    for v in range(3):
        u, w = out.means2d[v, 0].tolist()
        i, j = int(w), int(u)  # the pixel whose footprint holds the centre: alpha > 0 there
        seen = out.rgb[v, i, j] / out.alpha[v, i, j, 0]
        x, y, z = torch.nn.functional.normalize(mean - cams.centers[v], dim=0).tolist()
        expected = 0.5 + SH_C0 * coeffs[0] - SH_C1 * y * coeffs[1] + SH_C1 * z * coeffs[2] - SH_C1 * x * coeffs[3]
        torch.testing.assert_close(seen, expected.clamp_min(0.0), rtol=1e-10, atol=1e-10)
        colours.append(seen)
    assert (colours[0] - colours[1]).abs().max() > 0.05 and (colours[1] - colours[2]).abs().max() > 0.05


# ---------------------------------------------------------------- memory-bounded chunking, dtypes


def test_small_slabs_and_other_tile_sizes_give_the_same_image_and_gradients():
    splats = random_splats(400, seed=5, radius=0.5, scale=(0.03, 0.12), opacity=(0.5, 0.98))
    splats.means.requires_grad_(True)
    splats.opacities.requires_grad_(True)
    cams = cameras([0.0, 77.0], 40, 36)
    bg = torch.tensor([[0.3, 0.3, 0.3], [0.9, 0.1, 0.5]], dtype=torch.float64)
    results = []
    for renderer in (TorchRenderer(), TorchRenderer(tile_size=8, max_slab_elements=8 * 64),
                     TorchRenderer(tile_size=16, max_slab_elements=300), TorchRenderer(tile_size=5)):
        out = renderer.render(splats, cams, bg)
        grads = torch.autograd.grad((out.rgb.sum() + out.depth.sum() + out.alpha.sum()),
                                    [splats.means, splats.opacities])
        results.append((out.rgb, out.alpha, out.depth, out.radii, *grads))
    assert results[0][1].max() > 1 - 2e-4  # early stop happens, also across k-chunks in the small slabs
    for other in results[1:]:
        for x, y in zip(results[0], other):
            torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-9)


def test_float32_matches_float64():
    s64 = random_splats(500, seed=4, sh_degree=2)
    s32 = Splats(*(getattr(s64, f).float() for f in ("means", "quats", "scales", "opacities", "sh")), 2)
    bg = torch.rand(2, 3, generator=torch.Generator().manual_seed(0))
    o64 = TorchRenderer().render(s64, cameras([0.0, 45.0], 48, 48), bg.double())
    o32 = TorchRenderer().render(s32, cameras([0.0, 45.0], 48, 48, dtype=torch.float32), bg)
    assert o32.rgb.dtype == torch.float32
    torch.testing.assert_close(o32.rgb.double(), o64.rgb, atol=2e-4, rtol=0)
    torch.testing.assert_close(o32.depth.double(), o64.depth, atol=2e-3, rtol=0)


# ---------------------------------------------------------------- backends


def test_make_renderer_auto_on_cpu_is_torch_and_names_are_checked():
    assert make_renderer("auto", "cpu").name == "torch"
    assert make_renderer("torch", "cpu").name == "torch"
    with pytest.raises(ValueError, match="valid: auto, torch, gsplat, inria"):
        make_renderer("nope", "cpu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs a CUDA device"):
        make_renderer("gsplat", "cpu")


@pytest.mark.skipif(importlib.util.find_spec("diff_gaussian_rasterization") is not None, reason="installed")
def test_inria_missing_gives_install_instructions():
    with pytest.raises(ImportError, match="not on PyPI.*pip install git\\+https://github.com/graphdeco-inria"):
        make_renderer("inria", "cpu")


@pytest.mark.gpu
def test_torch_and_gsplat_renderers_agree_on_a_random_scene():
    splats = random_splats(3000, seed=11, sh_degree=1, opacity=(0.05, 0.9), dtype=torch.float32)
    splats = Splats(*(getattr(splats, f).cuda() for f in ("means", "quats", "scales", "opacities", "sh")), 1)
    cams = cameras([0.0, 90.0, 200.0], 96, 80, dtype=torch.float32).to("cuda")
    bg = torch.rand(3, 3, generator=torch.Generator().manual_seed(0)).cuda()
    outs = []
    for name in ("torch", "gsplat"):
        means = splats.means.clone().requires_grad_(True)
        s = Splats(means, splats.quats, splats.scales, splats.opacities, splats.sh, 1)
        out = make_renderer(name, "cuda").render(s, cams, bg)
        (out.rgb.sum() + out.alpha.sum()).backward()
        outs.append((out, means.grad))
    (a, ga), (b, gb) = outs
    torch.testing.assert_close(a.rgb, b.rgb, atol=2e-3, rtol=0)
    torch.testing.assert_close(a.alpha, b.alpha, atol=2e-3, rtol=0)
    torch.testing.assert_close(a.depth, b.depth, atol=1e-2, rtol=0)
    assert ((a.radii > 0) == (b.radii > 0)).float().mean() > 0.98
    assert (ga - gb).norm() / gb.norm() < 2e-2
