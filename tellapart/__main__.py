"""``python -m tellapart`` runs the command line."""

import sys

from tellapart.cli import main

sys.exit(main())
