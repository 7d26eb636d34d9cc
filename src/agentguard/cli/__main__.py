"""``python -m agentguard.cli``."""

import sys

from agentguard.cli import main

sys.exit(main())
