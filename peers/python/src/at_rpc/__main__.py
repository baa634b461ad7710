"""`python -m at_rpc`: the command line."""

import sys

from .cli import main

sys.exit(main())
