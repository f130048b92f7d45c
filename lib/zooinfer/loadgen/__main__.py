"""``python -m zooinfer.loadgen``: see :func:`zooinfer.loadgen.cli.main`."""
from .cli import main

raise SystemExit(main())
