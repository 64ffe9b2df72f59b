"""``python -m ganhpo``."""

from __future__ import annotations

import sys

from ganhpo.cli import main

sys.exit(main())
