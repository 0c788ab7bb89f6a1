"""idledger: an event-sourced identity ledger for push, email and SMS products.

The project is organised by top-level folders (``domain/``, ``projections/``,
``api/``, ``replay/``); they are installed under this one namespace
(``idledger.domain``…) so that nothing generic lands in site-packages.
"""
