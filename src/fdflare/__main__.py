"""Allow ``python -m fdflare``."""

from fdflare.cli import main

raise SystemExit(main())
