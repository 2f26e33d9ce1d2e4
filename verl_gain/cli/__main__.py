"""``python -m verl_gain.cli``: the ``verl-gain`` command without the console script."""

import sys

from verl_gain.cli import main

sys.exit(main())
