"""`python -m rewarm` is the `rewarm` command."""

import sys

from rewarm.cli import main

sys.exit(main())
