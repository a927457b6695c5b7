"""`python -m wheelwright` is the `wheelwright` command."""

import sys

from .cli import main

sys.exit(main())
