"""``python -m tools.fake_exchange``: run the fake exchange (`tools.fake_exchange.cli.main`)."""

import sys

from tools.fake_exchange.cli import main

sys.exit(main())
