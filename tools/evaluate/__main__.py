"""``python -m tools.evaluate``: the command line (`tools.evaluate.cli`)."""

from tools.evaluate.cli import main

raise SystemExit(main())
