"""The lucid-app web app: ``python app.py [--host 127.0.0.1] [--port 7860] [--outputs outputs/app] ...``.

Thin entry point: arguments → :class:`~lucid_app.app.jobs.JobManager` (each job in a worker process with a memory cap;
``--in-process`` in this process, ``--ray`` a Ray actor per job, several at once; the default model starts loading
in the background) → :func:`~lucid_app.ui.layout.build_demo` → launch. The models clients may pick are server
configuration (``--models``); Gradio serves no folder of the server: files reach a client only through handlers that
check its owner (``lucid_app/ui/served_files.py``). Jobs whose estimated memory or time exceeds ``--max-job-gb`` /
``--max-job-hours`` are refused before they start.

Gradio is imported inside :func:`main`: the job workers are started with multiprocessing's spawn context, which
imports this module again in each worker, and they need none of the UI.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path
from typing import Annotated

from annotated_types import Ge, Gt, Le

from lucid_app.app.identity import OwnerKeys
from lucid_app.app.jobs import JobManager
from lucid_app.app.model_registry import ModelRegistry, default_registry, load_models_file
from lucid_app.app.users import UsersFile
from lucid_app.avatar.body import AvatarError, available_genders, find_model_file
from lucid_app.cli.types import bounded, non_negative_float
from lucid_app.config import ConfigError, ModelConfig
from lucid_app.config.devices import resolve_device
from lucid_app.io.files import OutputError, writable_dir
from lucid_app.train.budget import JobLimits
from lucid_app.train.prepare import resolve_config
from lucid_app.ui.form import DEFAULT_PRESET

logger = logging.getLogger("lucid_app.app")

AUTH_ENV = "LUCID_AUTH"
DEFAULT_MAX_UPLOAD_MB = 200.0
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
SMPL_DIR_ENV = "LUCID_SMPL_DIR"
# Limits of the flags: a TCP port, loaded models kept on the device, the largest upload (1 TB), a job's memory
# (1 PB) and time (a year).
PORT = Annotated[int, Ge(1), Le(65535)]
MAX_MODELS = Annotated[int, Ge(1), Le(64)]
UPLOAD_MB = Annotated[float, Gt(0.0), Le(1_000_000.0)]
JOB_GB = Annotated[float, Gt(0.0), Le(1_000_000.0)]
JOB_HOURS = Annotated[float, Gt(0.0), Le(8760.0)]
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
    parser.add_argument("--port", type=bounded(PORT), default=7860)
    parser.add_argument("--outputs", default="outputs/app", help="root folder of the per-session run folders")
    parser.add_argument("--models", default="", metavar="FILE",
                        help="YAML file mapping display names to model references (hub id, diffusers folder, "
                             ".safetensors, multiview:DIR, learned-prior folder; optional lora, textual_inversion, "
                             "controlnet): the models clients pick from, besides the built-in offline demos")
    parser.add_argument("--model", default="", metavar="NAME",
                        help="the form's default model: a name of --models or a built-in one (default: each preset's "
                             "own)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    parser.add_argument("--auth", default=os.environ.get(AUTH_ENV, ""), metavar="USER:PASS|FILE",
                        help=f"require sign-in (default: ${AUTH_ENV}): one USER:PASS, or a users file of hashed "
                             "passwords (python -m lucid_app add-user FILE NAME); each user sees only their own runs")
    parser.add_argument("--shared-runs", action="store_true",
                        help="every visitor lists and views every run (a single-user desktop); default: each "
                             "browser session (or signed-in user) sees only its own. Controls act only on one's own "
                             "jobs either way")
    parser.add_argument("--max-models", type=bounded(MAX_MODELS), default=1,
                        help="loaded models kept on the device (least recently used leave first)")
    parser.add_argument("--max-upload-mb", type=bounded(UPLOAD_MB), default=DEFAULT_MAX_UPLOAD_MB,
                        help="largest file a client may upload (MB)")
    parser.add_argument("--smpl-dir", default=os.environ.get(SMPL_DIR_ENV, ""), metavar="DIR",
                        help=f"the Avatar tab's SMPL models: a folder of SMPL_<GENDER>.npz written by 'python -m "
                             f"lucid_app smpl-convert' (default: ${SMPL_DIR_ENV}; none: the tab says so)")
    parser.add_argument("--ray", default="", metavar="ADDRESS|local",
                        help="run jobs as Ray actors, several at once (one per GPU; on CPUs one per --cpus-per-job): "
                             "'local' starts Ray on this machine, else a cluster address (default: a capped worker "
                             "process per job)")
    parser.add_argument("--gpus-per-job", type=non_negative_float, default=None,
                        help="with --ray: GPUs per job (default 1 if the cluster has GPUs, else 0)")
    parser.add_argument("--cpus-per-job", type=non_negative_float, default=1.0, help="with --ray: CPUs per job")
    parser.add_argument("--max-job-gb", type=bounded(JOB_GB), default=None, metavar="GB",
                        help=f"refuse a job whose estimated peak memory exceeds this, and cap each job's worker "
                             f"process at it (default: {DEFAULT_MAX_JOB_MEMORY_SHARE * 100:.0f}%% of this machine's "
                             "memory)")
    parser.add_argument("--max-job-hours", type=bounded(JOB_HOURS), default=DEFAULT_MAX_JOB_HOURS, metavar="H",
                        help="refuse a job whose estimated time on this CPU exceeds this (default: %(default)g; "
                             "not applied on a CUDA device, whose times are not estimated)")
    parser.add_argument("--in-process", action="store_true",
                        help="run jobs in the server's own process, without a memory cap (debugging; default: a "
                             "worker process per job)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    try:
        args.models = load_models_file(args.models) if args.models else default_registry()
        args.models.resolve(args.model)
        args.auth = _auth(args.auth)
    except ConfigError as err:
        parser.error(str(err))
    if args.max_job_gb is None:
        args.max_job_gb = default_max_job_gb()
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


def _auth(value: str) -> tuple[str, str] | UsersFile | None:
    """``--auth``: None, one (user, password), or the users file it names (checked now, read at every sign-in).

    Raises:
        ConfigError: neither an existing users file nor USER:PASS, or a malformed users file.
    """
    if not value:
        return None
    if Path(value).expanduser().is_file():
        return UsersFile(Path(value).expanduser())
    if not re.fullmatch(r"[^:\s]+:\S+", value):
        raise ConfigError("--auth must look like USER:PASS (no spaces; the user name without ':') or name a users "
                          "file")
    user, password = value.split(":", 1)
    return user, password


def _exit_user_error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def default_model(models: ModelRegistry, name: str, preset: str = DEFAULT_PRESET) -> ModelConfig:
    """The model a Generate with the form as it opens loads: the ``--model`` name's, else the default preset's (what
    start-up warms, :meth:`JobManager.warm`)."""
    model = resolve_config(preset, None, None, None).model
    ref = models.resolve(name)
    return model if ref is None else ref.applied(model)


def main(argv: list[str] | None = None) -> None:
    from lucid_app.ui.layout import APP_CSS, ZOOM_JS, build_demo

    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # An outputs folder that cannot be used is the operator's error: one line and exit status 2, as the CLI's.
    try:
        outputs = writable_dir(Path(args.outputs).expanduser().resolve(), "--outputs")
        owner_keys = OwnerKeys.for_outputs(outputs)
    except OutputError as err:
        _exit_user_error(str(err))
    except (OSError, ValueError) as err:
        _exit_user_error(f"--outputs {args.outputs}: the owner-id secret cannot be read or written ({err})")
    models: ModelRegistry = args.models
    auth = args.auth
    logger.info("models clients can pick: %s", ", ".join(models.names))
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
    # A cold server's first preview then comes as fast as a warm one's: the model loads while the page opens (in the
    # waiting job worker, or in this process with --in-process).
    jobs.warm(default_model(models, args.model))
    if args.smpl_dir:
        logger.info("SMPL models (%s) from %s", ", ".join(available_genders(args.smpl_dir)), args.smpl_dir)
    demo = build_demo(jobs, default_model=args.model, shared_runs=args.shared_runs, smpl_dir=args.smpl_dir,
                      models=models, owner_keys=owner_keys)
    try:
        # No allowed_paths: nothing under the outputs folder has a URL (lucid_app/ui/served_files.py).
        demo.queue().launch(server_name=args.host, server_port=args.port, share=args.share, css=APP_CSS, js=ZOOM_JS,
                            auth=auth,
                            max_file_size=int(args.max_upload_mb * 1024 * 1024), show_error=False)
    finally:
        jobs.close()
        if executor is not None:
            executor.close()


if __name__ == "__main__":
    main()
