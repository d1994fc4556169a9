"""The Gaussians being optimised: raw parameters, activations, the Adam optimiser and its LR schedules.

Parameters are stored *raw* (as the optimiser sees them) and activated on demand:

    name            raw shape      activation   activated
    means           [N, 3]         identity     world positions
    log_scales      [N, 3]         exp          standard deviations (world units)
    quats           [N, 4]         normalise    unit (w, x, y, z) quaternions
    opacity_logits  [N]            sigmoid      opacity in (0, 1)
    sh_dc           [N, 1, 3]      identity     SH band 0 (colour = C0 * dc + 0.5)
    sh_rest         [N, K-1, 3]    identity     SH bands 1..degree, K = (degree + 1)^2

Each parameter has its own Adam param group (named as above), so densification can edit the parameters and
the optimiser moments together (:meth:`GaussianModel.append`, :meth:`GaussianModel.keep`).

Initial point sets (the ``init.shape`` choices) live in :mod:`lucid_app.scene.init_shapes`.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable

import numpy as np
import torch
from scipy.spatial import cKDTree

from lucid_app.config import OptimConfig
from lucid_app.io.ply import GaussianPly
from lucid_app.render.base import Splats

logger = logging.getLogger(__name__)

# Band-0 real spherical harmonic, Y_0^0 = 1 / (2 sqrt(pi)).
SH_C0 = 0.28209479177387814
PARAM_NAMES = ("means", "log_scales", "quats", "opacity_logits", "sh_dc", "sh_rest")
# Adam's epsilon in 3DGS: tiny, because some parameters (means late in training) have tiny gradients.
ADAM_EPS = 1e-15
# Lower bound of the kNN distance, so coincident points do not get log(0) scales.
MIN_KNN_DISTANCE = 1e-7


# ---------------------------------------------------------------- activations (pure)


def inverse_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Logit, the inverse of ``torch.sigmoid`` (input in (0, 1))."""
    return torch.log(x / (1.0 - x))


def rgb_to_sh_dc(rgb: torch.Tensor) -> torch.Tensor:
    """[..., 3] RGB in [0, 1] -> band-0 SH coefficient, so that ``C0 * dc + 0.5`` renders as ``rgb``."""
    return (rgb - 0.5) / SH_C0


def sh_dc_to_rgb(dc: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_sh_dc`."""
    return dc * SH_C0 + 0.5


def num_sh_coeffs(sh_degree: int) -> int:
    """K = (degree + 1)^2 coefficients per colour channel."""
    if sh_degree not in range(4):
        raise ValueError(f"sh_degree must be 0..3, got {sh_degree}")
    return (sh_degree + 1) ** 2


def knn_mean_distance(points: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Mean Euclidean distance of each point to its ``k`` nearest other points (scipy cKDTree).

    Args:
        points: [N, 3].
        k: neighbours (clamped to N - 1).

    Returns:
        [N] distances, at least ``MIN_KNN_DISTANCE``; 1.0 when there is a single point (no neighbours).
    """
    n = points.shape[0]
    if n <= 1:
        return torch.ones(n, dtype=points.dtype, device=points.device)
    k = min(k, n - 1)
    pts = points.detach().cpu().double().numpy()
    dist, _ = cKDTree(pts).query(pts, k=k + 1)  # column 0 is the point itself
    mean = np.maximum(dist[:, 1:].mean(axis=1), MIN_KNN_DISTANCE)
    return torch.as_tensor(mean, dtype=points.dtype, device=points.device)


# ---------------------------------------------------------------- learning rates (pure)


def lr_at(step: int, init: float, final: float, steps: int) -> float:
    """Log-linear (exponential) decay from ``init`` at step 0 to ``final`` at ``steps``, constant afterwards.

    ``lr = exp((1 - t) log(init) + t log(final))`` with ``t = clamp(step / steps, 0, 1)`` — the 3DGS position
    schedule without its delay phase. Equal rates (including both 0) give a constant.
    """
    if init == final:
        return float(init)
    if init <= 0 or final <= 0:
        raise ValueError(f"a decaying learning rate needs positive ends, got {init} -> {final}")
    t = min(max(step / steps, 0.0), 1.0) if steps > 0 else 1.0
    return math.exp((1.0 - t) * math.log(init) + t * math.log(final))


def lr_schedules(optim: OptimConfig) -> dict[str, Callable[[int], float]]:
    """Per-parameter learning rate as a function of the step, from the reference settings."""
    steps = optim.steps
    return {
        "means": lambda s: lr_at(s, optim.means_lr, optim.means_lr_final, steps),
        "log_scales": lambda s: lr_at(s, optim.scales_lr, optim.scales_lr_final, steps),
        "quats": lambda s: lr_at(s, optim.quats_lr, optim.quats_lr_final, steps),
        "opacity_logits": lambda s: float(optim.opacities_lr),
        "sh_dc": lambda s: lr_at(s, optim.colors_lr, optim.colors_lr_final, steps),
        "sh_rest": lambda s: optim.sh_rest_lr_ratio * lr_at(s, optim.colors_lr, optim.colors_lr_final, steps),
    }


# ---------------------------------------------------------------- the state object


class GaussianModel:
    """Raw Gaussian parameters (``nn.Parameter`` each) plus their Adam optimiser.

    Build with :meth:`from_points` or :meth:`from_raw` (or ``init_shapes.init_gaussians``).
    """

    def __init__(self, raw: dict[str, torch.Tensor], sh_degree: int, optim: OptimConfig) -> None:
        missing = [name for name in PARAM_NAMES if name not in raw]
        if missing:
            raise ValueError(f"missing raw parameters: {', '.join(missing)}")
        self.sh_degree = sh_degree
        self.optim_config = optim
        self._schedules = lr_schedules(optim)
        self.params: dict[str, torch.nn.Parameter] = {
            name: torch.nn.Parameter(raw[name].detach().clone().contiguous()) for name in PARAM_NAMES
        }
        self._check_shapes()
        self.optimizer = self._make_optimizer()
        self.update_learning_rates(0)

    # -- construction

    @classmethod
    def from_points(
        cls,
        points: torch.Tensor,
        optim: OptimConfig,
        colors: torch.Tensor | None = None,
        opacity: float = 0.1,
        sh_degree: int = 0,
        default_color: tuple[float, float, float] = (0.5, 0.5, 0.5),
        device: torch.device | str = "cpu",
    ) -> GaussianModel:
        """Isotropic Gaussians at ``points`` [N, 3] with kNN scales (mean distance to the 3 nearest neighbours),
        identity rotations, opacity ``opacity`` and colours ``colors`` [N, 3] in [0, 1] (else ``default_color``).
        """
        points = points.to(device=device, dtype=torch.float32)
        n = points.shape[0]
        if not 0.0 < opacity < 1.0:
            raise ValueError(f"initial opacity must be in (0, 1), got {opacity}")
        if colors is None:
            colors = torch.tensor(default_color, dtype=torch.float32, device=device).expand(n, 3)
        colors = colors.to(device=device, dtype=torch.float32)
        quats = torch.zeros(n, 4, device=device)
        quats[:, 0] = 1.0
        raw = {
            "means": points,
            "log_scales": torch.log(knn_mean_distance(points))[:, None].repeat(1, 3),
            "quats": quats,
            "opacity_logits": inverse_sigmoid(torch.full((n,), float(opacity), device=device)),
            "sh_dc": rgb_to_sh_dc(colors)[:, None, :].contiguous(),
            "sh_rest": torch.zeros(n, num_sh_coeffs(sh_degree) - 1, 3, device=device),
        }
        return cls(raw, sh_degree, optim)

    @classmethod
    def from_raw(
        cls, data: GaussianPly, optim: OptimConfig, sh_degree: int | None = None, device: torch.device | str = "cpu"
    ) -> GaussianModel:
        """Gaussians from raw arrays (e.g. :func:`lucid_app.io.ply.read_gaussian_ply`).

        With ``sh_degree`` different from the data's, higher bands are dropped or zero-filled.
        """
        degree = data.sh_degree if sh_degree is None else sh_degree
        n = data.count

        def t(x: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)

        rest = torch.zeros(n, num_sh_coeffs(degree) - 1, 3, device=device)
        k = min(rest.shape[1], data.sh_rest.shape[1])
        rest[:, :k] = t(data.sh_rest)[:, :k]
        if degree != data.sh_degree:
            logger.info("SH degree %d in the data, %d requested: bands adjusted", data.sh_degree, degree)
        raw = {
            "means": t(data.means),
            "log_scales": t(data.log_scales),
            "quats": t(data.quats),
            "opacity_logits": t(data.opacity_logits),
            "sh_dc": t(data.sh_dc),
            "sh_rest": rest,
        }
        return cls(raw, degree, optim)

    def to_raw(self) -> GaussianPly:
        """Raw parameters as float32 numpy arrays (for :func:`lucid_app.io.ply.write_gaussian_ply`)."""
        arrays = {name: p.detach().cpu().float().numpy().copy() for name, p in self.params.items()}
        return GaussianPly(**arrays)

    # -- parameters and activations

    @property
    def count(self) -> int:
        return int(self.params["means"].shape[0])

    @property
    def device(self) -> torch.device:
        return self.params["means"].device

    @property
    def means(self) -> torch.Tensor:
        """[N, 3]."""
        return self.params["means"]

    @property
    def scales(self) -> torch.Tensor:
        """[N, 3] activated (exp) scales."""
        return torch.exp(self.params["log_scales"])

    @property
    def quats(self) -> torch.Tensor:
        """[N, 4] unit quaternions."""
        return torch.nn.functional.normalize(self.params["quats"], dim=-1)

    @property
    def opacities(self) -> torch.Tensor:
        """[N] activated (sigmoid) opacities."""
        return torch.sigmoid(self.params["opacity_logits"])

    @property
    def sh(self) -> torch.Tensor:
        """[N, K, 3] all SH coefficients (band 0 first)."""
        return torch.cat([self.params["sh_dc"], self.params["sh_rest"]], dim=1)

    def splats(self) -> Splats:
        """The renderer's input: activated tensors, differentiable w.r.t. the raw parameters."""
        return Splats(
            means=self.means, quats=self.quats, scales=self.scales, opacities=self.opacities,
            sh=self.sh, sh_degree=self.sh_degree,
        )

    # -- optimiser

    def _make_optimizer(self) -> torch.optim.Adam:
        groups = [{"params": [self.params[name]], "lr": 0.0, "name": name} for name in PARAM_NAMES]
        return torch.optim.Adam(groups, lr=0.0, eps=ADAM_EPS)

    def update_learning_rates(self, step: int) -> dict[str, float]:
        """Set every group's learning rate to its schedule's value at ``step``; returns them by name."""
        rates = {}
        for group in self.optimizer.param_groups:
            group["lr"] = rates[group["name"]] = self._schedules[group["name"]](step)
        return rates

    def _group(self, name: str) -> dict:
        for group in self.optimizer.param_groups:
            if group["name"] == name:
                return group
        raise KeyError(name)

    def _replace(self, name: str, value: torch.Tensor, moments: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Swap parameter ``name`` for a new leaf holding ``value``; ``moments`` maps each Adam moment tensor."""
        group = self._group(name)
        old = group["params"][0]
        state = self.optimizer.state.pop(old, None)
        new = torch.nn.Parameter(value.detach().contiguous())
        group["params"][0] = new
        if state:
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key] = moments(state[key]).contiguous()
            self.optimizer.state[new] = state
        self.params[name] = new

    def append(self, new: dict[str, torch.Tensor]) -> None:
        """Append Gaussians given as raw tensors (every name of ``PARAM_NAMES``); their Adam moments are zero."""
        for name in PARAM_NAMES:
            extra = new[name].to(self.params[name])
            self._replace(
                name,
                torch.cat([self.params[name].detach(), extra], dim=0),
                lambda m, extra=extra: torch.cat([m, torch.zeros_like(extra)], dim=0),
            )

    def keep(self, mask: torch.Tensor) -> None:
        """Keep only the Gaussians where ``mask`` [N] (bool) is true, with their Adam moments."""
        if mask.shape != (self.count,) or mask.dtype != torch.bool:
            raise ValueError(f"keep() needs a bool mask of shape [{self.count}], got {mask.dtype} {tuple(mask.shape)}")
        for name in PARAM_NAMES:
            self._replace(name, self.params[name].detach()[mask], lambda m: m[mask])

    def raw_subset(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Detached copies of the raw parameters of the Gaussians at ``index`` (bool mask or indices)."""
        return {name: self.params[name].detach()[index].clone() for name in PARAM_NAMES}

    def reset_opacity(self, max_opacity: float) -> None:
        """Clamp every opacity to at most ``max_opacity`` and zero the opacity group's Adam moments."""
        ceiling = inverse_sigmoid(torch.tensor(float(max_opacity), device=self.device))
        self._replace(
            "opacity_logits", torch.minimum(self.params["opacity_logits"].detach(), ceiling), torch.zeros_like
        )

    # -- checkpoints

    def state_dict(self) -> dict:
        """Parameters, SH degree and optimiser state, for ``torch.save``."""
        return {
            "sh_degree": self.sh_degree,
            "params": {name: p.detach().clone() for name, p in self.params.items()},
            # Optimizer.state_dict() returns references to the live moment tensors; copy them so the checkpoint
            # is a snapshot and a model loaded from it does not share (and double-update) them.
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore from :meth:`state_dict` (any Gaussian count); learning rates come back with the optimiser."""
        missing = [name for name in PARAM_NAMES if name not in state.get("params", {})]
        if missing:
            raise ValueError(f"checkpoint lacks Gaussian parameters: {', '.join(missing)}")
        self.sh_degree = int(state["sh_degree"])
        device = self.device
        self.params = {
            name: torch.nn.Parameter(state["params"][name].detach().clone().to(device)) for name in PARAM_NAMES
        }
        self._check_shapes()
        self.optimizer = self._make_optimizer()
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))

    def _check_shapes(self) -> None:
        n = self.count
        k = num_sh_coeffs(self.sh_degree)
        expected = {
            "means": (n, 3), "log_scales": (n, 3), "quats": (n, 4), "opacity_logits": (n,),
            "sh_dc": (n, 1, 3), "sh_rest": (n, k - 1, 3),
        }
        for name, shape in expected.items():
            if tuple(self.params[name].shape) != shape:
                raise ValueError(f"parameter {name} has shape {tuple(self.params[name].shape)}, expected {shape}")
