"""`python -m fleettui`: the `fleet` command without its console script."""

import sys

from fleettui.cli import main

sys.exit(main())
