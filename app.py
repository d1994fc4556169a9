"""The lucid-app web app: ``python app.py [--host 127.0.0.1] [--port 7860] [--outputs outputs/app] ...``.

Thin entry point: arguments → :class:`~lucid_app.app.jobs.JobManager` (the worker thread that owns the device, or with
``--ray`` a Ray actor per job, several at once; the default model starts loading in the background) →
:func:`~lucid_app.ui.layout.build_demo` → launch. The models clients may pick are server configuration (``--models``);
Gradio serves no folder of the server: files reach a client only through handlers that check its owner
(``lucid_app/ui/served_files.py``).
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
from lucid_app.io.files import OutputError, writable_dir
from lucid_app.train.prepare import resolve_config
from lucid_app.ui.form import DEFAULT_PRESET
from lucid_app.ui.layout import APP_CSS, ZOOM_JS, build_demo

logger = logging.getLogger("lucid_app.app")

AUTH_ENV = "LUCID_AUTH"
DEFAULT_MAX_UPLOAD_MB = 200.0
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
SMPL_DIR_ENV = "LUCID_SMPL_DIR"
# Limits of the flags: a TCP port, loaded models kept on the device, the largest upload (1 TB).
PORT = Annotated[int, Ge(1), Le(65535)]
MAX_MODELS = Annotated[int, Ge(1), Le(64)]
UPLOAD_MB = Annotated[float, Gt(0.0), Le(1_000_000.0)]


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
                             "'local' starts Ray on this machine, else a cluster address (default: in this process)")
    parser.add_argument("--gpus-per-job", type=non_negative_float, default=None,
                        help="with --ray: GPUs per job (default 1 if the cluster has GPUs, else 0)")
    parser.add_argument("--cpus-per-job", type=non_negative_float, default=1.0, help="with --ray: CPUs per job")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    try:
        args.models = load_models_file(args.models) if args.models else default_registry()
        args.models.resolve(args.model)
        args.auth = _auth(args.auth)
    except ConfigError as err:
        parser.error(str(err))
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
