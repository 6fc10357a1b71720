"""Talk to the remote systems a SaaS operator runs, with no Odoo import.

Plain arguments in, plain results or :mod:`.exceptions` out. The Odoo layer of
``saas_manager`` (``models/``) turns those into records and user messages; the
standalone tests in ``standalone_tests/`` exercise this package against real
processes on loopback.
"""
