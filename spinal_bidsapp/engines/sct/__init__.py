"""The Spinal Cord Toolbox (SCT) engine.

``install`` finds SCT and tells what it can run here (version, programs, models); ``commands``
builds the pinned release's command lines and runs them (``SctEngine``); ``outputs`` reads SCT's
output files; ``participant`` is the SCT participant engine the pipeline calls.
"""
