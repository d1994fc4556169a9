"""The end export of a demo run: seconds per stage at the turntable's frame count and size (issue 27).

After Stop the app exports the run's state in the background (``model.ply``, the turntable, the views and, as the
app does by default, the mesh); the export of a demo run should take at most 20 s on the 2-core CPU. This trains the
demo preset (``presets/demo.yaml``, as committed: its turntable frames and size) for ``--steps`` steps, so that the
Gaussian count is what a demo run reaches (densification caps it at 4000), then times ``Trainer.export`` per stage,
for the preset's export settings and for any ``--frames``/``--size`` variants asked for. Prints one JSON object
(last line of stdout), with each export's wall and CPU seconds (on a machine others load, the CPU seconds bound the
wall time the same export takes on two idle cores).

    python bench/export_time.py                                  # the preset's export, 150 training steps
    python bench/export_time.py --variants 240x128x2 72x512x2 48x512x1     # frames x size [x rings]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

log = logging.getLogger("bench.export_time")
TARGET_S = 20.0


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (the video encoder) so far."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_export(trainer: object, run_dir: Path) -> dict[str, float]:
    """Seconds of each export stage (from one stage's start to the next's), the total, and the CPU seconds it took
    (this process's threads and the encoder's): a busy machine stretches the wall time, not the CPU time."""
    from lucid_app.train.events import ExportEvent

    marks: list[tuple[str, float]] = []

    def on_stage(event: ExportEvent) -> None:
        if event.done == 0:
            marks.append((event.stage, time.perf_counter()))

    trainer.run_dir = run_dir
    cpu = _cpu_s()
    started = time.perf_counter()
    files = trainer.export(on_stage=on_stage)
    ended = time.perf_counter()
    cpu = _cpu_s() - cpu
    stages: dict[str, float] = {"checkpoint": marks[0][1] - started if marks else 0.0}
    for (name, at), (_, following) in zip(marks, [*marks[1:], ("end", ended)], strict=True):
        stages[name] = stages.get(name, 0.0) + following - at
    return {"total_s": round(ended - started, 2), "cpu_s": round(cpu, 2),
            **{k: round(v, 2) for k, v in stages.items()}, "files": sorted(files)}


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="training steps before the export")
    parser.add_argument("--variants", nargs="*", default=[], metavar="FRAMESxSIZE[xRINGS]",
                        help="more turntable settings to time, e.g. 240x128x2 (rings: the preset's if not given)")
    parser.add_argument("--no-mesh", action="store_true", help="without the mesh (the app exports one by default)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's); with 1 the CPU seconds hold no spinning of idle "
                             "threads and bound the wall time on an idle machine")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    import torch

    from lucid_app.config import replace
    from lucid_app.train.prepare import load_run_prior, resolve_config
    from lucid_app.train.trainer import Trainer

    if args.threads is not None:
        torch.set_num_threads(args.threads)

    overrides = [f"optim.steps={args.steps}", "export.preview_every=0", "export.checkpoint_every=0",
                 f"export.mesh={'false' if args.no_mesh else 'true'}", *args.set]
    config = resolve_config("demo", None, None, None, overrides)
    prepared = load_run_prior(config, "cpu", allow_demo=False)
    trainer = Trainer(prepared.config, prepared.prior)
    started = time.perf_counter()
    for _ in range(args.steps):
        trainer.train_step()
    train_s = time.perf_counter() - started
    exp = config.export
    settings = [(exp.turntable_frames, exp.turntable_size, exp.turntable_rings)]
    for variant in args.variants:
        numbers = [int(x) for x in variant.lower().split("x")]
        settings.append((numbers[0], numbers[1], numbers[2] if len(numbers) > 2 else exp.turntable_rings))
    rows = []
    for frames, size, rings in settings:
        trainer.config = replace(config, export=replace(exp, turntable_frames=frames, turntable_size=size,
                                                        turntable_rings=rings))
        with tempfile.TemporaryDirectory() as folder:
            row = {"frames": frames, "size": size, "rings": rings, "eval_views": exp.eval_views,
                   **time_export(trainer, Path(folder) / "run")}
        log.info("%s", json.dumps(row))
        rows.append(row)
    preset = rows[0]
    result = {"bench": "export_time", "steps": args.steps, "train_s": round(train_s, 1),
              "gaussians": trainer.gaussians.count, "mesh": not args.no_mesh, "exports": rows,
              "preset_total_s": preset["total_s"], "preset_cpu_s": preset["cpu_s"], "target_s": TARGET_S,
              "met": preset["total_s"] <= TARGET_S,
              "load": [round(x, 2) for x in os.getloadavg()], "threads": torch.get_num_threads()}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
