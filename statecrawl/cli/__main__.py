"""``python -m statecrawl.cli``."""

from __future__ import annotations

import sys

from statecrawl.cli.main import main

sys.exit(main())
