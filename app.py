"""The lucid-app web app: ``python app.py [--host 127.0.0.1] [--port 7860] [--outputs outputs/app] ...``.

Thin entry point: arguments → :class:`~lucid_app.jobs.JobManager` (the worker thread that owns the device) →
:func:`~lucid_app.ui.layout.build_demo` → launch. Gradio serves files from the outputs root only.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from lucid_app.config import ConfigError
from lucid_app.jobs import JobManager
from lucid_app.ui.handlers import check_model
from lucid_app.ui.layout import APP_CSS, build_demo

logger = logging.getLogger("lucid_app.app")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--outputs", default="outputs/app", help="root folder of the per-session run folders")
    parser.add_argument("--model", default="", help="default model: hub id, local folder or multiview:DIR "
                                                    "(default: each preset's own)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    try:
        check_model(args.model)
    except ConfigError as err:
        parser.error(str(err))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    outputs = Path(args.outputs).expanduser().resolve()
    outputs.mkdir(parents=True, exist_ok=True)
    jobs = JobManager(outputs, args.device).start()
    demo = build_demo(jobs, default_model=args.model)
    try:
        demo.queue().launch(server_name=args.host, server_port=args.port, share=args.share,
                            allowed_paths=[str(outputs)], css=APP_CSS)
    finally:
        jobs.close()


if __name__ == "__main__":
    main()
