"""`python -m launcher.node VERB ARGS` (launcher/node/main.py)."""

import sys

from launcher.node.main import main

sys.exit(main())
