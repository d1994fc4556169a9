"""``python -m lucid_app``: see :mod:`lucid_app.cli.main`."""

import sys

from lucid_app.cli.main import main

sys.exit(main())
