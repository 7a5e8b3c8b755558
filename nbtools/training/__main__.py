"""``python -m nbtools.training``: the same as ``nbtools train-tiny``."""

import sys

from .command import main

sys.exit(main())
