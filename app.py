"""The lucid-app web app: ``python app.py [--host 127.0.0.1] [--port 7860] [--outputs outputs/app] ...``.

Thin entry point: arguments → :class:`~lucid_app.app.jobs.JobManager` (the worker thread that owns the device, or with
``--ray`` a Ray actor per job, several at once; the default model starts loading in the background) →
:func:`~lucid_app.ui.layout.build_demo` → launch. Gradio serves files from the outputs root only.
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
from lucid_app.config import ConfigError, ModelConfig
from lucid_app.train.prepare import check_model, resolve_config
from lucid_app.ui.form import DEFAULT_PRESET
from lucid_app.ui.layout import APP_CSS, ZOOM_JS, build_demo

logger = logging.getLogger("lucid_app.app")

AUTH_ENV = "LUCID_AUTH"
DEFAULT_MAX_UPLOAD_MB = 200.0
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
SMPL_DIR_ENV = "LUCID_SMPL_DIR"


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
    if args.smpl_dir:
        # Server configuration, resolved once: jobs record this absolute folder in their config.yaml.
        args.smpl_dir = str(Path(args.smpl_dir).expanduser().resolve())
        if not available_genders(args.smpl_dir):
            try:
                find_model_file(args.smpl_dir)
            except AvatarError as err:
                parser.error(f"--smpl-dir: {err}")
    return args


def default_model(model: str, preset: str = DEFAULT_PRESET) -> ModelConfig:
    """The model a Generate with the form as it opens loads: ``--model``, else the default preset's (what start-up
    warms, :meth:`JobManager.warm`)."""
    return resolve_config(preset, None, None, model or None).model


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    outputs = Path(args.outputs).expanduser().resolve()
    outputs.mkdir(parents=True, exist_ok=True)
    auth = tuple(args.auth.split(":", 1)) if args.auth else None
    if auth is None and (args.share or args.host not in LOCAL_HOSTS):
        logger.warning("serving on %s without --auth: anyone who can reach it can run jobs on this machine",
                       "a public share link" if args.share else args.host)
    executor = None
    if args.ray:
        from lucid_app.app.ray_executor import RayExecutor
        from lucid_app.batch.cluster import RayError

        try:
            executor = RayExecutor(args.ray, gpus_per_job=args.gpus_per_job, cpus_per_job=args.cpus_per_job)
        except RayError as err:
            raise SystemExit(f"error: --ray {args.ray}: {err}") from None
    jobs = JobManager(outputs, args.device, max_cached_models=args.max_models, executor=executor).start()
    # A cold server's first preview then comes as fast as a warm one's: the model loads while the page opens.
    jobs.warm(default_model(args.model))
    if args.smpl_dir:
        logger.info("SMPL models (%s) from %s", ", ".join(available_genders(args.smpl_dir)), args.smpl_dir)
    demo = build_demo(jobs, default_model=args.model, shared_runs=args.shared_runs, smpl_dir=args.smpl_dir)
    try:
        demo.queue().launch(server_name=args.host, server_port=args.port, share=args.share,
                            allowed_paths=[str(outputs)], css=APP_CSS, js=ZOOM_JS, auth=auth,
                            max_file_size=int(args.max_upload_mb * 1024 * 1024), show_error=False)
    finally:
        jobs.close()
        if executor is not None:
            executor.close()


if __name__ == "__main__":
    main()
