"""The estimated time of a whole run, the plain warning when it is very long (CLI and app alike), and the limit
``generate --max-hours`` puts on it.

Real Stable Diffusion on a CPU takes minutes per step, so a paper run (5000 steps) would take weeks. Before anything
loads, :func:`estimate_run_s` estimates such a run from the step time measured in docs/BENCHMARKS.md ("One full-size
step"); after the first step the measured time decides (:func:`over_limit`). Either way the user is told the
estimate, with the ways out (a CUDA GPU, or the offline demo preset).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lucid_app.config import TrainConfig

# Above this estimated remaining time the notice is shown.
SLOW_RUN_THRESHOLD_S = 3 * 3600.0
# ``generate`` refuses a run estimated to take longer than this, unless forced (``--max-hours``, ``--force``).
DEFAULT_MAX_HOURS = 2.0
# One training step of Stable Diffusion 2.1 base at 512² with 4 views, fp32, on the 2-core CPU of
# docs/BENCHMARKS.md ("One full-size step"): 413 s. A step's cost grows with the rendered pixels and the views
# (the VAE and the UNet's latents scale with the pixels, every prior call with the views).
SD_CPU_STEP_S = 413.0
SD_CPU_STEP_PIXELS = 512 * 512
SD_CPU_STEP_VIEWS = 4
# After the run starts, the estimate comes from its steps 2 to this one: the first pays for warm-up (kernel
# compilation, first allocations) and would overstate a GPU run.
ETA_SAMPLE_STEPS = 3


def format_duration(seconds: float) -> str:
    """A duration in the largest sensible unit: "45 s", "12 min", "3.5 h", "21 days"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def eta_notice(seconds_per_step: float, remaining_steps: int,
               threshold_s: float = SLOW_RUN_THRESHOLD_S) -> str | None:
    """The warning for a run whose remaining time exceeds ``threshold_s``, else None.

    Args:
        seconds_per_step: measured time of a step (e.g. the first one).
        remaining_steps: steps still to run.
        threshold_s: the shortest remaining time that is warned about (3 h by default).

    Returns:
        e.g. "this run needs ~21 days on this device (5000 steps at 6.0 min/step); a CUDA GPU or the offline demo
        (--preset demo) is much faster", or None.
    """
    if seconds_per_step <= 0 or remaining_steps <= 0:
        return None
    total = seconds_per_step * remaining_steps
    if total <= threshold_s:
        return None
    return (
        f"this run needs ~{format_duration(total)} on this device ({remaining_steps} steps at "
        f"{format_duration(seconds_per_step)}/step); a CUDA GPU or the offline demo (--preset demo) is much faster"
    )


def estimate_run_s(config: TrainConfig, device_type: str) -> float | None:
    """A run's time estimated before anything loads, where a measured figure applies: a Stable Diffusion model (any
    hub id, diffusers folder or checkpoint file) on a CPU, scaled from :data:`SD_CPU_STEP_S` by the render's pixels
    and views. None elsewhere: the multi-view and learned priors are fast, and on CUDA the first step is measured.

    Args:
        config: the run's config (``model.id``, ``render``, ``cameras.batch_size``, ``optim.steps``).
        device_type: ``"cpu"`` or ``"cuda"`` (``torch.device.type``).
    """
    # Here, not at the top: the CLI's parser reads this module's defaults without loading torch.
    from lucid_app.priors.model_ref import SD_KINDS, model_ref_of

    if device_type != "cpu" or model_ref_of(config.model).kind not in SD_KINDS:
        return None
    scale = (config.render.width * config.render.height / SD_CPU_STEP_PIXELS
             * config.cameras.batch_size / SD_CPU_STEP_VIEWS)
    return SD_CPU_STEP_S * scale * config.optim.steps


def over_limit(total_s: float, steps: int, max_hours: float, basis: str) -> str | None:
    """The refusal of a run whose estimated time ``total_s`` exceeds ``max_hours``, else None.

    Args:
        total_s: the estimated time of the ``steps`` steps still to run.
        max_hours: the limit (``generate --max-hours``).
        basis: how the estimate was made, e.g. "as its first step took".

    Returns:
        e.g. "this run would take ~24 days on this device (5000 steps at 6.9 min/step, estimated from ...), over
        --max-hours 2: use a CUDA GPU or the offline demo (--preset demo), or add --force to run it anyway", or None.
    """
    if steps <= 0 or total_s <= max_hours * 3600.0:
        return None
    return (
        f"this run would take ~{format_duration(total_s)} on this device ({steps} steps at "
        f"{format_duration(total_s / steps)}/step, {basis}), over --max-hours {max_hours:g}: use a CUDA GPU or the "
        f"offline demo (--preset demo), or add --force to run it anyway"
    )


def measured_step_s(seconds: list[float]) -> float:
    """A run's time per step from the steps it has done so far (``seconds``, at least one): the mean without the
    first step when there are others (see :data:`ETA_SAMPLE_STEPS`)."""
    later = seconds[1:] or seconds
    return sum(later) / len(later)
