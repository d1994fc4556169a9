"""``python -m lucid_app``: see :mod:`lucid_app.cli`."""

import sys

from lucid_app.cli import main

sys.exit(main())
