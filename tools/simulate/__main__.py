"""``python -m tools.simulate``: write a simulated capture (`tools.simulate.cli.main`)."""

from tools.simulate.cli import main

raise SystemExit(main())
