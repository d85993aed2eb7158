"""``python -m bgem3``: the command line."""

from bgem3.cli import main

raise SystemExit(main())
