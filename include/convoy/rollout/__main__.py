"""Entry point of ``python -m convoy.rollout``."""

import sys

from convoy.rollout.cli import main

sys.exit(main())
