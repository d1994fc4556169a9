"""The estimated time of a whole run, and the plain warning when it is very long (CLI and app alike).

Real Stable Diffusion on a CPU takes minutes per step, so a paper run (5000 steps) would take weeks: after the
first step the user is told so, with the ways out (a CUDA GPU, or the offline demo preset).
"""

from __future__ import annotations

# Above this estimated remaining time the notice is shown.
SLOW_RUN_THRESHOLD_S = 3 * 3600.0


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
