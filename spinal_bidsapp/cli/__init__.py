"""The command-line programs: ``spinal_bidsapp`` (``parser``, ``main``), its Boutiques
descriptor (``boutiques``, ``--bids-exec-spec``) and ``spinal_bidsapp-straighten``
(``straighten``)."""
