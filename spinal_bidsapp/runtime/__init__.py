"""Run-time services every level uses: atomic files, the resume ledger, parallel units, logging,
process lifetime.

Nothing here knows about BIDS, images or engines; these modules import only ``errors``.
"""
