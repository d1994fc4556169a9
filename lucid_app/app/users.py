"""The app's users file (``app.py --auth FILE``): one ``name:hash`` line per user, passwords hashed with scrypt.

A line is ``NAME:scrypt$N$r$p$SALT$HASH`` (hex salt and hash; blank lines and ``#`` comments are skipped). Add a user
with ``python -m lucid_app add-user FILE NAME`` (it asks for the password); the app reads the file at every sign-in,
so a new user can sign in without a restart. Passwords are compared in constant time
(:func:`hmac.compare_digest`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from pathlib import Path

from lucid_app.config import ConfigError
from lucid_app.io.files import write_text

logger = logging.getLogger(__name__)

SCHEME = "scrypt"
# scrypt cost: 16 MiB of memory and ~50 ms per check on a desktop CPU (RFC 7914's interactive setting).
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
# Largest accepted cost, so a tampered file cannot make a sign-in allocate gigabytes.
MAX_SCRYPT_N = 2**20
MIN_PASSWORD_CHARS = 8
USER_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")


def hash_password(password: str, salt: bytes | None = None) -> str:
    """The stored form of ``password``: ``scrypt$N$r$p$SALT$HASH`` with a new random salt (unless given)."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            dklen=HASH_BYTES)
    return f"{SCHEME}${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches the stored form (False for a malformed one)."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        return False
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt, expected = bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
    except ValueError:
        return False
    if not (1 < n <= MAX_SCRYPT_N and 1 <= r <= 32 and 1 <= p <= 16 and expected):
        return False
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=len(expected),
                            maxmem=2 * 128 * n * r * p + 1024 * 1024)
    return hmac.compare_digest(digest, expected)


def read_users(path: str | Path) -> dict[str, str]:
    """The users file as {name: stored hash}.

    Raises:
        ConfigError: the file cannot be read, or a line is not ``NAME:scrypt$...`` (its number is named).
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"users file {path}: cannot be read ({err})") from None
    users: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, stored = line.partition(":")
        if not sep or not USER_NAME.fullmatch(name) or not stored.startswith(SCHEME + "$"):
            raise ConfigError(f"users file {path}, line {number}: expected NAME:{SCHEME}$... (add users with "
                              "python -m lucid_app add-user)")
        users[name] = stored
    return users


def add_user(path: str | Path, name: str, password: str) -> bool:
    """Add the user ``name`` to the users file ``path`` (created when missing), or change their password; returns
    whether the user is new. The file is written atomically, readable by its owner only.

    Raises:
        ConfigError: a bad name, a password shorter than :data:`MIN_PASSWORD_CHARS`, or a bad users file.
    """
    if not USER_NAME.fullmatch(name):
        raise ConfigError("a user name is 1-64 letters, digits, '_', '.', '@' or '-'")
    if len(password) < MIN_PASSWORD_CHARS:
        raise ConfigError(f"the password must have at least {MIN_PASSWORD_CHARS} characters")
    path = Path(path)
    users = read_users(path) if path.exists() else {}
    new = name not in users
    users[name] = hash_password(password)
    write_text(path, "".join(f"{user}:{stored}\n" for user, stored in users.items()), mode=0o600)
    return new


class UsersFile:
    """Gradio's sign-in check over a users file, read at every sign-in (module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        read_users(self.path)
        # An unknown name is checked against this, so it takes as long as a wrong password (no timing oracle).
        self._unknown = hash_password(secrets.token_hex(16))

    def __call__(self, name: str, password: str) -> bool:
        try:
            users = read_users(self.path)
        except ConfigError as err:
            logger.error("sign-in refused: %s", err)
            return False
        matches = verify_password(str(password), users.get(str(name), self._unknown))
        return matches and str(name) in users


__all__ = ["UsersFile", "add_user", "hash_password", "read_users", "verify_password"]
