"""Allow ``python -m spinal_bidsapp``."""

from spinal_bidsapp.cli import main

raise SystemExit(main())
