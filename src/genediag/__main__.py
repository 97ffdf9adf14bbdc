"""``python -m genediag …`` is the ``genediag`` command (see :mod:`genediag.cli`)."""

import sys

from genediag.cli import main

sys.exit(main())
