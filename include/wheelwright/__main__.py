"""`python -m wheelwright` is the `wheelwright` command."""

import sys

from wheelwright.operate.cli import main

sys.exit(main())
