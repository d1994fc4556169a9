"""The training loop (DESIGN §3-§4): cameras → render → guidance → backward → densify → optimiser step.

One :class:`Trainer` owns the state of one run: the Gaussians and their optimiser, the densification
statistics, the single ``torch.Generator`` every random draw comes from, and the step counter. The config is
frozen; live changes come from :class:`~lucid_app.train.controls.LiveControls`, read once per step. Steps count from 1
(step k uses the camera ranges, δ_T and t range of k, and densification's schedule of k).

The prompt set (negative prompt, view suffixes, Perp-Neg) changes at the steps of ``config.prompt_schedule`` (encoded
in ``__init__``) and with live changes (encoded by the caller, ``prompt_changes.py``). Each change is logged as
``{"step": k, "prompt_change": {...}}`` and recorded in :attr:`Trainer.prompt_schedule`, which ``config.yaml`` holds
(rewritten at every change), so ``config.yaml`` reproduces the run; a resumed run replays the schedule. Live
guidance-scale / δ_T changes are recorded the same way in :attr:`Trainer.control_schedule` (``config.control_schedule``
is replayed into the live controls at its steps), so a run with slider changes replays exactly from its config.

Every step, in :meth:`Trainer.run` or called alone (benchmarks), goes through :meth:`Trainer.train_step`: it puts the
step's control snapshot in force and logs what changed (one adopt-and-log path), then fits the step's
:class:`StepObjective` (:meth:`Trainer.step_objective`, the loop's one extension point: the supervised ceiling of
:mod:`lucid_app.bench.oracle` overrides it).

Previews (``PreviewEvent``) come after step 1, then every ``preview_every`` steps and by wall time (when previews and
checkpoints are due: :mod:`lucid_app.train.outputs`). Between two steps the loop also hands out snapshots of the live
Gaussians (:meth:`Trainer.request_snapshot`, the app's inspector of a running job). When training ends it emits
``TrainedEvent`` (the app lets the next job start then), reports each export stage (``ExportEvent``; the
``skip_export`` control ends the export after ``model.ply``) and ends with ``DoneEvent``.

Files (only through :mod:`lucid_app.io` and :mod:`lucid_app.train.export_run`): ``config.yaml`` at the start,
``metrics.jsonl`` as it goes (a run from step 0 starts it empty), ``checkpoint.pt`` at the start, every
``export.checkpoint_every`` steps, whenever ``export.checkpoint_every_s`` seconds have passed since the last one (so a
kill loses at most that) and at the end, and at the end, however the run ends (done, stopped, failed, Ctrl-C),
``model.ply``, ``turntable.mp4`` and ``views/*.png`` of the last good state. A checkpoint only ever holds the state
between two steps: an interrupt in the middle of a step keeps the previous checkpoint, so a resume always continues
bit for bit.

The loop's state (step, generator, schedules in force, snapshot requests, the open metrics log) lives in one object
whose methods each do one job; the end outputs are ``export_run.py``, the loss terms ``losses.step_losses``, when
previews and checkpoints are due ``outputs.py``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from lucid_app.avatar import avatar_setup
from lucid_app.config import ControlChange, PromptChange, TrainConfig, from_yaml, replace, to_yaml
from lucid_app.guidance import GUIDANCES, GuidanceOutput
from lucid_app.guidance.base import for_run
from lucid_app.guidance.prompts import PromptEmbeddings
from lucid_app.io.checkpoints import load_checkpoint, save_checkpoint
from lucid_app.io.files import MetricsLog, write_text
from lucid_app.io.run_layout import CHECKPOINT_NAME, CONFIG_NAME, METRICS_NAME
from lucid_app.priors.base import DiffusionPrior, camera_control_fn
from lucid_app.render import make_renderer
from lucid_app.render.base import Renderer, RenderOutput
from lucid_app.render.cameras import CameraBatch, sample_cameras
from lucid_app.render.frames import render_frames
from lucid_app.scene.densify import Densifier
from lucid_app.scene.gaussians import GaussianModel
from lucid_app.scene.init_shapes import init_gaussians
from lucid_app.train.controls import (
    ControlState,
    LiveControls,
    PromptState,
    record_control_change,
    scheduled_control_change,
)
from lucid_app.train.events import (
    DoneEvent,
    Event,
    ExportEvent,
    GaussianSnapshot,
    PreviewEvent,
    StepEvent,
    TrainedEvent,
)
from lucid_app.train.export_run import export_run
from lucid_app.train.losses import flip_views, guidance_input, sample_backgrounds, scale_noise, step_losses
from lucid_app.train.outputs import PREVIEW_AZIMUTHS_DEG, OutputClock, preview_cameras, truncate_metrics
from lucid_app.train.prompt_changes import PromptTrack, change_fields

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepObjective:
    """What one training step fits (:meth:`Trainer.step_objective`).

    Attributes:
        cameras: the step's [C] cameras (the renders are taken from them).
        loss: the renders' guidance input [C, H, W, 3] (colour, or the disparity as grey; with grad) → the
            :class:`~lucid_app.guidance.GuidanceOutput` of the step: the loss to add to the regularisers, and the
            diagnostics ``t``, ``s``, ``delta_t`` and ``grad_norm`` of the step's record.
    """

    cameras: CameraBatch
    loss: Callable[[torch.Tensor], GuidanceOutput]


def initial_controls(config: TrainConfig) -> ControlState:
    """The live controls' starting values, taken from the config."""
    return ControlState(
        guidance_scale=config.guidance.guidance_scale,
        delta_t=config.guidance.delta_t,
        delta_t_start=config.guidance.delta_t_start,
        preview_every=config.export.preview_every,
    )


class Trainer:
    """One text-to-3D run.

    Args:
        config: the frozen, fully resolved config.
        prior: a loaded :class:`DiffusionPrior` (its device is the run's device unless ``device`` is given).
        run_dir: folder for the run's files; None keeps everything in memory (tests, benchmarks).
        controls: live controls shared with another thread (default: fresh ones from the config).
        renderer: a renderer (default: ``make_renderer(config.render.backend, device)``).
        device: where the Gaussians live (default: the prior's device).
        control_fn: cameras -> the prior's ``control``: [C, H, W, 3] control images in [0, 1] for a ControlNet prior
            (avatar part maps); default: the camera directions of a camera-conditioned prior
            (``priors.base.camera_control_fn``), else none.
        gaussians: initial Gaussians (default: ``init_gaussians(config.init, ...)``, or with ``config.avatar.enabled``
            and neither ``control_fn`` nor ``gaussians`` given, both from :func:`~lucid_app.avatar.avatar_setup`).

    Extension point: a subclass changes what a step fits by overriding :meth:`step_objective` alone (the cameras and
    the loss of the step); everything else (schedules, densification, regularisers, controls, logging, checkpoints,
    resume) stays the loop's.
    """

    def __init__(
        self,
        config: TrainConfig,
        prior: DiffusionPrior,
        *,
        run_dir: str | Path | None = None,
        controls: LiveControls | None = None,
        renderer: Renderer | None = None,
        device: torch.device | str | None = None,
        control_fn: Callable[[CameraBatch], torch.Tensor] | None = None,
        gaussians: GaussianModel | None = None,
    ) -> None:
        self.config = config
        self.control_fn = control_fn if control_fn is not None else camera_control_fn(prior)
        self.prior = prior
        self.device = torch.device(device) if device is not None else prior.device
        self.renderer = renderer or make_renderer(config.render.backend, self.device)
        self.controls = controls or LiveControls(initial_controls(config))
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.generator = torch.Generator().manual_seed(config.seed)
        self.guidance = GUIDANCES[config.guidance.method]
        self.prompt_track = PromptTrack(prior, config, self.controls)
        if config.avatar.enabled and control_fn is None and gaussians is None:
            # Avatar runs (new or resumed) rebuild the body and its part-map control from the config alone.
            gaussians, self.control_fn = avatar_setup(config, self.device)
        self.gaussians: GaussianModel = gaussians if gaussians is not None else init_gaussians(
            config.init, config.optim, self.generator, self.device
        )
        self.densifier = Densifier(config.densify, config.densify.extent)
        self.step = 0
        self.bad_steps = 0
        self._outputs = OutputClock()
        self._stop_requested = False
        # Live control changes so far (the config's schedule, then what the user changed), and the tunable values
        # the last step used: a snapshot that differs from them at step k is a change recorded at k.
        self._control_schedule: tuple[ControlChange, ...] = config.control_schedule
        self._controls_in_force = self.controls.snapshot()
        # The run's metrics log while :meth:`run` has it open (None otherwise: a bare train_step logs nowhere).
        self._metrics: MetricsLog | None = None
        self._snapshot_lock = threading.Lock()
        self._snapshot_requests: list[Future[GaussianSnapshot]] = []

    def request_stop(self) -> None:
        """End :meth:`run` before its next step, as the stop control does. Safe in a signal handler (it only sets a
        flag; :meth:`LiveControls.stop` takes a lock the interrupted thread may hold)."""
        self._stop_requested = True

    # ---------------------------------------------------------------- prompt changes

    @property
    def prompt_state(self) -> PromptState:
        """The prompt set in force (texts, Perp-Neg settings, embeddings)."""
        return self.prompt_track.state

    @property
    def prompts(self) -> PromptEmbeddings:
        """The encoded prompts in force."""
        return self.prompt_track.state.embeddings

    @property
    def prompt_schedule(self) -> tuple[PromptChange, ...]:
        """Every prompt change of the run so far (the config's schedule, live changes included)."""
        return self.prompt_track.schedule

    @property
    def control_schedule(self) -> tuple[ControlChange, ...]:
        """Every guidance-scale / δ_T change of the run so far (the config's schedule, live changes included)."""
        return self._control_schedule

    @property
    def recorded_config(self) -> TrainConfig:
        """The config with :attr:`prompt_schedule` and :attr:`control_schedule`: what ``config.yaml`` holds."""
        return replace(self.config, prompt_schedule=self.prompt_track.schedule,
                       control_schedule=self._control_schedule)

    def begin_step(self) -> ControlState:
        """Step ``self.step + 1``'s control snapshot, after its scheduled control and prompt changes (if any) joined
        the controls. :meth:`adopt` puts it in force."""
        scheduled = scheduled_control_change(self.config.control_schedule, self.step + 1)
        if scheduled:
            self.controls.update(**scheduled)
        return self.prompt_track.begin_step(self.step + 1)

    def adopt(self, snap: ControlState) -> PromptChange | None:
        """Put :meth:`begin_step`'s snapshot in force for step ``self.step + 1``: its prompt state, and its guidance
        scale / δ_T, recorded when they differ from the last step's. Returns the prompt change (None if none). A
        change to either schedule is written to ``config.yaml`` at once."""
        k = self.step + 1
        prompts_before, controls_before = self.prompt_track.schedule, self._control_schedule
        change = self.prompt_track.adopt(snap, k)
        self._control_schedule, _ = record_control_change(controls_before, k, self._controls_in_force, snap)
        self._controls_in_force = snap
        changed = self.prompt_track.schedule is not prompts_before or self._control_schedule is not controls_before
        if self.run_dir is not None and changed:
            write_text(self.run_dir / CONFIG_NAME, to_yaml(self.recorded_config))
        return change

    # ---------------------------------------------------------------- snapshots of the live Gaussians

    def request_snapshot(self) -> Future[GaussianSnapshot]:
        """A copy of the Gaussians as they are between two steps, taken by the training thread at the next step
        boundary (also while paused, and at the end of the run); safe to call from any thread."""
        future: Future[GaussianSnapshot] = Future()
        with self._snapshot_lock:
            self._snapshot_requests.append(future)
        return future

    def serve_snapshots(self) -> None:
        """Answer the pending :meth:`request_snapshot` calls with the current state (the training thread calls it
        between steps only)."""
        with self._snapshot_lock:
            pending, self._snapshot_requests = self._snapshot_requests, []
        if pending:
            snapshot = GaussianSnapshot(step=self.step, gaussians=self.gaussians.to_raw(),
                                        config_yaml=to_yaml(self.recorded_config))
            for future in pending:
                future.set_result(snapshot)

    # ---------------------------------------------------------------- one step

    def train_step(self, snap: ControlState | None = None) -> StepEvent:
        """Run step ``self.step + 1`` with ``snap`` (default: :meth:`begin_step`'s snapshot, taken here).

        The one path of every step: the snapshot is put in force and its changes logged (:meth:`_adopt_and_log`),
        then cameras and loss (:meth:`step_objective`) → render → backward → densify → optimiser step; the step's
        record joins the run's metrics log when :meth:`run` has one open.
        """
        if snap is None:
            snap = self.begin_step()
        self._adopt_and_log(snap)
        event = self._fit(snap)
        if self._metrics is not None and (event.step % self.config.export.log_every == 0 or event.skipped
                                          or event.densify or event.step == 1):
            self._metrics.write(event.record())
        return event

    def step_objective(self, k: int, snap: ControlState) -> StepObjective:
        """The cameras and the loss of step ``k`` under the controls ``snap``: the loop's extension point.

        Default: [C] orbit cameras on the DESIGN §4 schedule (the step's first draws from the run's generator), and
        the guidance's loss on their renders after the official random left-right flip of the batch (control images
        with it), in one prompt state (embeddings and Perp-Neg settings together).

        An override must draw only from ``self.generator``, in the same order at every call, so that equal seeds
        give equal runs and a resumed run continues bit for bit; :mod:`lucid_app.bench.oracle` fits posed images
        photometrically through it.
        """
        cfg = self.config
        cams = sample_cameras(cfg.cameras, k, cfg.render.width, cfg.render.height, self.generator).to(self.device)
        return StepObjective(cameras=cams, loss=partial(self._guide, cams=cams, snap=snap, k=k))

    def _fit(self, snap: ControlState) -> StepEvent:
        """Step ``self.step + 1`` with ``snap`` already in force: its objective, render, losses and updates."""
        cfg = self.config
        k = self.step + 1
        start = time.perf_counter()
        self.gaussians.update_learning_rates(k)

        # 1. Cameras and loss of this step, backgrounds (background augmentation).
        g = self.generator
        objective = self.step_objective(k, snap)
        cams = objective.cameras
        backgrounds = sample_backgrounds(len(cams), cfg.render.background, cfg.render.bg_aug_ratio, g).to(self.device)
        use_disparity = bool(torch.rand((), generator=g) < cfg.loss.disparity_ratio)

        # 2. Render with noisy scales.
        splats = self.gaussians.splats()
        splats = dataclasses.replace(splats, scales=scale_noise(splats.scales, cfg.loss.scale_noise, g))
        out = self.renderer.render(splats, cams, backgrounds)

        # 3. The objective's loss on the colour or the disparity, plus the regularisers; one backward pass.
        result = objective.loss(guidance_input(out, use_disparity))
        terms = step_losses(result.loss, out, self.gaussians.scales, cfg.loss)
        total = sum(terms.values())
        optimizer = self.gaussians.optimizer
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        losses = {name: float(v.detach()) for name, v in terms.items()}
        losses["total"] = float(total.detach())
        diag = result.diagnostics
        event = partial(
            StepEvent, step=k, total_steps=cfg.optim.steps, losses=losses, t=diag["t"], s=diag["s"],
            delta_t=diag["delta_t"], grad_norm=diag["grad_norm"], guidance_scale=snap.guidance_scale,
        )

        # 4. A non-finite step changes nothing (``run`` ends the run after ``optim.max_bad_steps`` in a row).
        if not self._gradients_finite(total):
            optimizer.zero_grad(set_to_none=True)
            self.bad_steps += 1
            self.step = k
            logger.warning("step %d: non-finite loss or gradient, step skipped (%d in a row)", k, self.bad_steps)
            return event(n_gaussians=self.gaussians.count, seconds=time.perf_counter() - start, skipped=True)
        self.bad_steps = 0

        # 5. Densification statistics and events, then the optimiser step.
        densify = self._densify_and_step(out, k)
        return event(n_gaussians=self.gaussians.count, seconds=time.perf_counter() - start, densify=densify)

    def _guide(self, image: torch.Tensor, cams: CameraBatch, snap: ControlState, k: int) -> GuidanceOutput:
        """The guidance's loss on the rendered ``image`` [C, H, W, 3] of step ``k`` (:meth:`step_objective`)."""
        cfg, g = self.config, self.generator
        control = self.control_fn(cams) if self.control_fn is not None else None
        image, control, _ = flip_views(image, cfg.loss.flip_ratio, g, control)
        x0 = self.prior.encode_images(image)
        prompt = self.prompt_state
        live = replace(prompt.guidance(cfg.guidance), delta_t=snap.delta_t, delta_t_start=snap.delta_t_start)
        guidance_cfg = for_run(live, cfg.optim.steps)
        return self.guidance(
            self.prior, x0, cams.azimuth_deg, prompt.embeddings, k, guidance_cfg, g,
            guidance_scale=snap.guidance_scale, control=control,
        )

    def _densify_and_step(self, out: RenderOutput, k: int) -> dict[str, int]:
        """Densification statistics and events of step ``k``, then the optimiser step; returns what densification
        did (empty when nothing)."""
        self.densifier.accumulate(out, k)
        report = self.densifier.step(self.gaussians, k, self.generator)
        optimizer = self.gaussians.optimizer
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self.step = k
        if not report.changed:
            return {}
        return {"cloned": report.cloned, "split": report.split, "pruned": report.pruned, "reset": int(report.reset)}

    def _gradients_finite(self, total: torch.Tensor) -> bool:
        if not bool(torch.isfinite(total.detach())):
            return False
        grads = [p.grad for p in self.gaussians.params.values() if p.grad is not None]
        return all(bool(torch.isfinite(grad).all()) for grad in grads)

    # ---------------------------------------------------------------- previews and outputs

    def preview(self, size: int | None = None) -> PreviewEvent:
        """Render the current Gaussians from the fixed preview cameras (front, sides, back), ``size`` px square
        (default: the training width)."""
        cfg = self.config
        cams = preview_cameras(cfg.cameras, size or cfg.render.width)
        frames = np.stack(list(render_frames(self.renderer, self.gaussians.splats(), cams, cfg.render.background)))
        return PreviewEvent(step=self.step, images=frames, azimuth_deg=PREVIEW_AZIMUTHS_DEG)

    def state_dict(self) -> dict:
        """Everything needed to continue the run bit for bit: Gaussians + optimiser, densification statistics,
        step, the generator's state and the live controls in force (the prompt state is the schedule's replay)."""
        snap = self.controls.snapshot()
        return {
            "step": self.step,
            "bad_steps": self.bad_steps,
            "gaussians": self.gaussians.state_dict(),
            "densifier": self.densifier.state_dict(),
            "generator": self.generator.get_state(),
            "controls": {"guidance_scale": snap.guidance_scale, "delta_t": snap.delta_t,
                         "delta_t_start": snap.delta_t_start, "preview_every": snap.preview_every},
        }

    def load_state_dict(self, state: dict) -> None:
        self.gaussians.load_state_dict(state["gaussians"])
        self.densifier.load_state_dict(state["densifier"])
        self.generator.set_state(state["generator"])
        self.step = int(state["step"])
        self.bad_steps = int(state["bad_steps"])
        self.controls.update(**state["controls"])
        self._controls_in_force = self.controls.snapshot()
        self.prompt_track.restore(self.step)

    def save_checkpoint(self) -> Path | None:
        if self.run_dir is None:
            return None
        return save_checkpoint(self.run_dir / CHECKPOINT_NAME, self.state_dict())

    def export(self, progress: Callable[[int], None] | None = None, checkpoint: bool = True,
               on_stage: Callable[[ExportEvent], None] | None = None) -> dict[str, str]:
        """Write the run's outputs of the current state (:func:`~lucid_app.train.export_run.export_run`) and the
        checkpoint of it (unless ``checkpoint`` is False: the state is not one between two steps).

        ``on_stage`` receives an :class:`ExportEvent` as each stage starts (and per turntable frame). Once the
        ``skip_export`` control is set, the export ends after ``model.ply`` (the checkpoint is written first)."""
        if self.run_dir is None:
            return {}
        files = {"config": str(self.run_dir / CONFIG_NAME), "metrics": str(self.run_dir / METRICS_NAME)}
        if checkpoint:
            files["checkpoint"] = str(self.save_checkpoint())
        elif (self.run_dir / CHECKPOINT_NAME).is_file():
            files["checkpoint"] = str(self.run_dir / CHECKPOINT_NAME)
        files.update(export_run(self.run_dir, self.gaussians.to_raw(), self.gaussians.splats(), self.renderer,
                                self.config, on_stage, progress, skip=lambda: self.controls.snapshot().skip_export))
        return files

    # ---------------------------------------------------------------- the loop

    def run(self, on_event: Callable[[Event], None] | None = None) -> DoneEvent:
        """Train until ``optim.steps``, a stop (control or :meth:`request_stop`), Ctrl-C or ``optim.max_bad_steps``
        non-finite steps in a row; then emit :class:`TrainedEvent` and always export.

        Errors other than those are re-raised after the export, so nothing already produced is lost. An interrupt
        or error in the middle of a step keeps the last checkpoint (the state is not one between two steps);
        ``model.ply`` and the views still show the current Gaussians.
        """
        emit = on_event or (lambda event: None)
        self._metrics = self._open_run_dir()
        status, message = "done", ""
        error: BaseException | None = None
        self._outputs.start()
        mid_step = False
        try:
            while self.step < self.config.optim.steps:
                snap, stop_message = self._next_snapshot()
                if snap is None:
                    status, message = "stopped", stop_message
                    break
                mid_step = True
                event = self.train_step(snap)
                mid_step = False
                emit(event)
                if self.bad_steps >= self.config.optim.max_bad_steps:
                    status, message = "failed", self._bad_steps_message()
                    break
                self._periodic_outputs(snap.preview_every, emit)
        except KeyboardInterrupt:
            status, message = "stopped", f"interrupted at step {self.step}"
        except BaseException as err:
            status, message, error = "failed", f"{type(err).__name__}: {err}", err
        finally:
            if self._metrics is not None:
                self._metrics.write({"step": self.step, "status": status, "message": message})
                self._metrics.close()
                self._metrics = None
        if mid_step:
            logger.warning("the run ended inside step %d: %s keeps the last state between two steps",
                           self.step + 1, CHECKPOINT_NAME)
        self.serve_snapshots()
        emit(TrainedEvent(status=status, step=self.step, message=message))
        files = self.export(checkpoint=not mid_step, on_stage=emit)
        if self.controls.snapshot().skip_export and self.run_dir is not None:
            message = "; ".join(m for m in (message, "export skipped: model.ply and the checkpoint were kept") if m)
        done = DoneEvent(status=status, step=self.step, message=message, files=files)
        emit(done)
        if error is not None:
            raise error
        return done

    def _open_run_dir(self) -> MetricsLog | None:
        """Write ``config.yaml`` (and for a new run an empty ``metrics.jsonl`` and the first checkpoint); the
        metrics log to append to (None without a run folder)."""
        if self.run_dir is None:
            return None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_text(self.run_dir / CONFIG_NAME, to_yaml(self.recorded_config))
        if self.step == 0:
            # A new run: no records of an earlier run in this folder, and a checkpoint to resume from at once.
            write_text(self.run_dir / METRICS_NAME, "")
            self.save_checkpoint()
        return MetricsLog(self.run_dir / METRICS_NAME)

    def _next_snapshot(self) -> tuple[ControlState | None, str]:
        """Between two steps: answer snapshot requests, wait while paused, then the next step's snapshot
        (:meth:`begin_step`), or (None, why) when the run is to stop."""
        self.serve_snapshots()
        while not self.controls.wait_while_paused(timeout_s=0.2):
            self.serve_snapshots()
        if self._stop_requested:
            logger.warning("stop requested: the run ends at step %d and exports its state", self.step)
            return None, f"interrupted at step {self.step}"
        snap = self.begin_step()
        if snap.stop:
            return None, f"stopped by the user at step {self.step}"
        return snap, ""

    def _adopt_and_log(self, snap: ControlState) -> None:
        """:meth:`adopt` the next step's snapshot; log its control changes since the last step's and its prompt
        change (into the run's metrics log, when open)."""
        changes = _control_changes(self._controls_in_force, snap)
        if self._metrics is not None and changes:
            self._metrics.write({"step": self.step + 1, "controls": changes})
        prompt_change = self.adopt(snap)
        if self._metrics is not None and prompt_change is not None:
            self._metrics.write({"step": prompt_change.step, "prompt_change": change_fields(prompt_change)})

    def _bad_steps_message(self) -> str:
        message = (
            f"{self.bad_steps} consecutive steps had a non-finite loss or gradient (last at step "
            f"{self.step}); the run stopped and its last good state was exported. "
            "Try a lower learning rate or λ."
        )
        logger.error("%s", message)
        return message

    def _periodic_outputs(self, preview_every: int, emit: Callable[[Event], None]) -> None:
        """After step ``self.step``: the preview and the checkpoint, each when due (:mod:`lucid_app.train.outputs`)."""
        size = self._outputs.preview_size(self.step, preview_every)
        if size is not None:
            started = time.perf_counter()
            emit(self.preview(size))
            self._outputs.preview_made(self.step, started)
        if self._outputs.checkpoint_due(self.step, self.config.export):
            self.save_checkpoint()
            self._outputs.checkpoint_made()

    @classmethod
    def resume(
        cls,
        run_dir: str | Path,
        prior: DiffusionPrior,
        *,
        controls: LiveControls | None = None,
        renderer: Renderer | None = None,
        device: torch.device | str | None = None,
        state: dict | None = None,
    ) -> Trainer:
        """Continue a run from its folder's ``config.yaml`` and ``checkpoint.pt`` at the saved step.

        Metric records after the checkpoint's step are dropped so the log has each step once. ``state``: the
        checkpoint already loaded (``export.load_checkpoint``), e.g. to check it before loading the prior.

        Raises:
            FileNotFoundError: no ``config.yaml`` or ``checkpoint.pt``.
            ValueError: the checkpoint is damaged or does not match the config (ConfigError: the config is invalid).
        """
        run_dir = Path(run_dir)
        config_path = run_dir / CONFIG_NAME
        if not config_path.is_file():
            raise FileNotFoundError(f"{run_dir} is not a run folder: no {CONFIG_NAME}")
        config = from_yaml(config_path.read_text(encoding="utf-8"))
        if state is None:
            state = load_checkpoint(run_dir / CHECKPOINT_NAME)
        trainer = cls(config, prior, run_dir=run_dir, controls=controls, renderer=renderer, device=device)
        try:
            trainer.load_state_dict(state)
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as err:
            logger.debug("restoring %s failed", run_dir / CHECKPOINT_NAME, exc_info=True)
            raise ValueError(
                f"{run_dir / CHECKPOINT_NAME} does not hold a state of this run ({type(err).__name__}: {err}); "
                f"remove it to start over with generate --overwrite"
            ) from None
        truncate_metrics(run_dir / METRICS_NAME, trainer.step)
        logger.info("resumed %s at step %d of %d", run_dir, trainer.step, config.optim.steps)
        return trainer


def _control_changes(before: ControlState, after: ControlState) -> dict[str, object]:
    names = ("guidance_scale", "delta_t", "delta_t_start", "preview_every", "paused", "stop")
    return {n: getattr(after, n) for n in names if getattr(after, n) != getattr(before, n)}
