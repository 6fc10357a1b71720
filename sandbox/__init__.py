"""The sandbox: the services the tests, the demo and the benchmarks start on loopback.

Pure Python (no Odoo import), used by ``standalone_tests/conftest.py``,
``scripts/saas.py`` (test, run, suite, bench, i18n, screenshots) and the
benchmark scripts. One implementation of each:

- :mod:`.postgres`: a throwaway or kept PostgreSQL cluster (``PgCluster``), or the
  machine's own (``SystemCluster``);
- :mod:`.sshd`: a private sshd with its own host keys and key-based login;
- :mod:`.odoo`: an Odoo server (config, one-shot runs, serving);
- :mod:`.service`: what they share (start, stop, context manager, log), the base
  of any service added later (a second host, a replica, S3, Prometheus);
- :mod:`.machine`: Debian packages and virtualenvs; :mod:`.util`: ports, secrets.

Nothing here needs more than the standard library, except the connection helpers
of a cluster (psycopg2, imported when used).
"""
