"""pytest's setup for the at_rpc tests: the tests' own directory on
sys.path (for support.py; the package itself is the installed one), and
expected warnings (bad frames sent on purpose) kept out of the output."""

import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
logging.getLogger("at_rpc").setLevel(100)
