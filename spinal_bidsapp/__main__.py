"""Allow ``python -m spinal_bidsapp``."""

from spinal_bidsapp.cli.main import main

raise SystemExit(main())
