"""``python -m sltrader_plugins.cli``: the ``sltrader`` command."""

import sys

from sltrader_plugins.cli import main

sys.exit(main())
