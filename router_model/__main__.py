"""``python -m router_model`` runs the CLI."""

import sys

from router_model.cli import main

sys.exit(main())
