"""Transitional alias: ``remote.pg_clone`` is now :mod:`remote.postgres` (issue #13).

Kept only while code outside ``remote/`` (tests, scripts, fixtures) still imports the
old name; the very same module object is returned, so monkeypatching and loggers
behave as with ``postgres``. Delete this file once ``grep -r pg_clone`` finds nothing.
"""

import sys

from . import postgres

sys.modules[__name__] = postgres
