"""The lucid-app web app: ``python app.py [--host 127.0.0.1] [--port 7860] [--outputs outputs/app] ...``.

Thin entry point: arguments → :class:`~lucid_app.app.jobs.JobManager` (each job in a worker process with a memory cap;
``--in-process`` in this process, ``--ray`` a Ray actor per job, several at once) →
:func:`~lucid_app.ui.layout.build_demo` → launch. Gradio serves files from the outputs root only. Jobs whose estimated
memory or time exceeds ``--max-job-gb`` / ``--max-job-hours`` are refused before they start.

Gradio is imported inside :func:`main`: the job workers are started with multiprocessing's spawn context, which
imports this module again in each worker, and they need none of the UI.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from pathlib import Path

from lucid_app.app.jobs import JobManager
from lucid_app.avatar.body import AvatarError, available_genders, find_model_file
from lucid_app.cli.types import non_negative_float
from lucid_app.config import ConfigError
from lucid_app.config.devices import resolve_device
from lucid_app.train.budget import JobLimits
from lucid_app.train.prepare import check_model

logger = logging.getLogger("lucid_app.app")

AUTH_ENV = "LUCID_AUTH"
DEFAULT_MAX_UPLOAD_MB = 200.0
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
SMPL_DIR_ENV = "LUCID_SMPL_DIR"
# Per-job limits: this share of the machine's memory (a job training and a stopped one exporting in the background
# both fit, with the server), and this long on a CPU.
DEFAULT_MAX_JOB_MEMORY_SHARE = 0.4
DEFAULT_MAX_JOB_HOURS = 2.0


def machine_memory_gb() -> float:
    """The machine's physical memory in GB."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9


def default_max_job_gb() -> float:
    """:data:`DEFAULT_MAX_JOB_MEMORY_SHARE` of the machine's memory, rounded down to 0.1 GB."""
    return int(machine_memory_gb() * DEFAULT_MAX_JOB_MEMORY_SHARE * 10) / 10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--outputs", default="outputs/app", help="root folder of the per-session run folders")
    parser.add_argument("--model", default="", help="default model: hub id, local folder or multiview:DIR "
                                                    "(default: each preset's own)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    parser.add_argument("--auth", default=os.environ.get(AUTH_ENV, ""), metavar="USER:PASS",
                        help=f"require this sign-in (default: ${AUTH_ENV}); each user then sees only their own runs")
    parser.add_argument("--shared-runs", action="store_true",
                        help="every visitor lists and opens every run (a single-user desktop); default: each "
                             "browser session (or signed-in user) sees only its own")
    parser.add_argument("--max-models", type=int, default=1,
                        help="loaded models kept on the device (least recently used leave first)")
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                        help="largest file a client may upload (MB)")
    parser.add_argument("--smpl-dir", default=os.environ.get(SMPL_DIR_ENV, ""), metavar="DIR",
                        help=f"the Avatar tab's SMPL models: a folder of SMPL_<GENDER>.npz written by 'python -m "
                             f"lucid_app smpl-convert' (default: ${SMPL_DIR_ENV}; none: the tab says so)")
    parser.add_argument("--ray", default="", metavar="ADDRESS|local",
                        help="run jobs as Ray actors, several at once (one per GPU; on CPUs one per --cpus-per-job): "
                             "'local' starts Ray on this machine, else a cluster address (default: in this process)")
    parser.add_argument("--gpus-per-job", type=non_negative_float, default=None,
                        help="with --ray: GPUs per job (default 1 if the cluster has GPUs, else 0)")
    parser.add_argument("--cpus-per-job", type=non_negative_float, default=1.0, help="with --ray: CPUs per job")
    parser.add_argument("--max-job-gb", type=float, default=None, metavar="GB",
                        help=f"refuse a job whose estimated peak memory exceeds this, and cap each job's worker "
                             f"process at it (default: {DEFAULT_MAX_JOB_MEMORY_SHARE * 100:.0f}%% of this machine's "
                             "memory)")
    parser.add_argument("--max-job-hours", type=float, default=DEFAULT_MAX_JOB_HOURS, metavar="H",
                        help="refuse a job whose estimated time on this CPU exceeds this (default: %(default)g; "
                             "not applied on a CUDA device, whose times are not estimated)")
    parser.add_argument("--in-process", action="store_true",
                        help="run jobs in the server's own process, without a memory cap (debugging; default: a "
                             "worker process per job)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    try:
        check_model(args.model)
    except ConfigError as err:
        parser.error(str(err))
    if args.auth and not re.fullmatch(r"[^:\s]+:\S+", args.auth):
        parser.error("--auth must look like USER:PASS (no spaces; the user name without ':')")
    if args.max_models < 1:
        parser.error(f"--max-models must be >= 1, got {args.max_models}")
    if not args.max_upload_mb > 0:
        parser.error(f"--max-upload-mb must be > 0, got {args.max_upload_mb}")
    if args.max_job_gb is None:
        args.max_job_gb = default_max_job_gb()
    if not 0 < args.max_job_gb < float("inf"):
        parser.error(f"--max-job-gb must be a number > 0, got {args.max_job_gb}")
    if not 0 < args.max_job_hours < float("inf"):
        parser.error(f"--max-job-hours must be a number > 0, got {args.max_job_hours}")
    if args.ray and args.in_process:
        parser.error("--ray and --in-process choose two different executors: give one of them")
    if args.smpl_dir:
        # Server configuration, resolved once: jobs record this absolute folder in their config.yaml.
        args.smpl_dir = str(Path(args.smpl_dir).expanduser().resolve())
        if not available_genders(args.smpl_dir):
            try:
                find_model_file(args.smpl_dir)
            except AvatarError as err:
                parser.error(f"--smpl-dir: {err}")
    return args


def main(argv: list[str] | None = None) -> None:
    from lucid_app.ui.layout import APP_CSS, build_demo

    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    outputs = Path(args.outputs).expanduser().resolve()
    outputs.mkdir(parents=True, exist_ok=True)
    auth = tuple(args.auth.split(":", 1)) if args.auth else None
    if auth is None and (args.share or args.host not in LOCAL_HOSTS):
        logger.warning("serving on %s without --auth: anyone who can reach it can run jobs on this machine",
                       "a public share link" if args.share else args.host)
    device = resolve_device(args.device)
    limits = JobLimits(max_gb=args.max_job_gb, max_hours=args.max_job_hours, device_type=device.type)
    executor = None
    if not args.ray and not args.in_process:
        from lucid_app.app.process_executor import ProcessExecutor

        executor = ProcessExecutor(str(device), max_job_gb=args.max_job_gb)
    elif args.ray:
        from lucid_app.app.ray_executor import RayExecutor
        from lucid_app.batch.cluster import RayError

        try:
            executor = RayExecutor(args.ray, gpus_per_job=args.gpus_per_job, cpus_per_job=args.cpus_per_job)
        except RayError as err:
            raise SystemExit(f"error: --ray {args.ray}: {err}") from None
    jobs = JobManager(outputs, device, max_cached_models=args.max_models, executor=executor, limits=limits).start()
    logger.info("per-job limits: %g GB, %g h on a CPU (%s)", args.max_job_gb, args.max_job_hours,
                "in this process" if args.in_process else "Ray actors" if args.ray else "capped worker processes")
    if args.smpl_dir:
        logger.info("SMPL models (%s) from %s", ", ".join(available_genders(args.smpl_dir)), args.smpl_dir)
    demo = build_demo(jobs, default_model=args.model, shared_runs=args.shared_runs, smpl_dir=args.smpl_dir)
    try:
        demo.queue().launch(server_name=args.host, server_port=args.port, share=args.share,
                            allowed_paths=[str(outputs)], css=APP_CSS, auth=auth,
                            max_file_size=int(args.max_upload_mb * 1024 * 1024), show_error=False)
    finally:
        jobs.close()
        if executor is not None:
            executor.close()


if __name__ == "__main__":
    main()
