"""``python -m lucid_app add-user FILE NAME``: add a user to the app's users file (``app.py --auth FILE``), or change
their password; the password is asked for twice on the terminal, or read from stdin with ``--password-stdin``.

Importing this module is cheap (argparse only); the users file's format is :mod:`lucid_app.app.users`.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any


def add_add_user_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``add-user`` on the CLI's sub-parsers."""
    parser = sub.add_parser("add-user", help="add a user (or change a password) in the app's --auth users file")
    parser.add_argument("file", help="the users file (created when missing; readable by you only)")
    parser.add_argument("name", help="the user name (letters, digits, '_', '.', '@', '-')")
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of stdin instead of asking")
    parser.set_defaults(func=cmd_add_user)


def cmd_add_user(args: argparse.Namespace) -> dict[str, Any]:
    """Hash the password (scrypt, random salt) and write the users file atomically."""
    from lucid_app.app.users import add_user

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise ValueError("the two passwords differ; nothing was written")
    new = add_user(args.file, args.name, password)
    return {"command": "add-user", "user": args.name, "new": new, "file": str(args.file)}
