"""Validation of the names an operator types: database names and DNS labels.

Pure functions, no I/O. They raise :class:`.exceptions.InvalidDatabaseName` or
:class:`.exceptions.InvalidInput` with a message an operator can act on, and
return the value unchanged when it is valid.
"""

import re

from .exceptions import InvalidDatabaseName, InvalidInput

# Odoo 18's rule for database names (web/controllers/database.py,
# ``DBNAME_PATTERN``). Applied with ``fullmatch``: with ``re.match`` and ``$``
# a trailing newline would still pass.
DATABASE_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")

# PostgreSQL keeps NAMEDATALEN - 1 bytes of an identifier and silently cuts
# the rest: a longer name would create or drop a different database.
DATABASE_NAME_MAX_BYTES = 63

# The maintenance database and the two built-in templates: never a target of
# a clone or a drop.
SYSTEM_DATABASES = frozenset({"postgres", "template0", "template1"})

# RFC 1123 host label, lowercase only (an uppercase subdomain is refused, not
# silently lowered).
DNS_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
DNS_LABEL_MAX_LENGTH = 63


def validate_database_name(name, *, reserved=()):
    """Return ``name`` if it is a database name Odoo and PostgreSQL accept.

    :param name: the database name to check.
    :param reserved: further names that are refused (e.g. the template of a
        clone, which cannot be its own target).
    :raises InvalidDatabaseName: when the name breaks Odoo's rule, is longer
        than PostgreSQL keeps, or is a system or reserved database.
    """
    if not isinstance(name, str):
        raise InvalidDatabaseName(
            f"A database name must be text, not {type(name).__name__} ({name!r})."
        )
    if not name:
        raise InvalidDatabaseName("The database name is empty.")
    size = len(name.encode("utf-8"))
    if size > DATABASE_NAME_MAX_BYTES:
        raise InvalidDatabaseName(
            f"Database name {name!r} is too long: {size} bytes, "
            f"PostgreSQL keeps at most {DATABASE_NAME_MAX_BYTES}."
        )
    if not DATABASE_NAME_RE.fullmatch(name):
        raise InvalidDatabaseName(
            f"Database name {name!r} is not valid: use at least 2 characters, "
            "only letters, digits, '_', '.' and '-', starting with a letter or a digit."
        )
    if name in SYSTEM_DATABASES:
        raise InvalidDatabaseName(
            f"Database name {name!r} is reserved: it is a PostgreSQL system database."
        )
    if name in reserved:
        raise InvalidDatabaseName(f"Database name {name!r} is reserved here.")
    return name


def validate_dns_label(label):
    """Return ``label`` if it is a valid lowercase DNS label (RFC 1123).

    1 to 63 lowercase letters, digits or hyphens, not starting or ending with a
    hyphen: what a subdomain such as ``<label>.eu1.example.com`` needs.

    :raises InvalidInput: otherwise.
    """
    if not isinstance(label, str):
        raise InvalidInput(f"A subdomain must be text, not {type(label).__name__} ({label!r}).")
    if not label:
        raise InvalidInput("The subdomain is empty.")
    if len(label) > DNS_LABEL_MAX_LENGTH:
        raise InvalidInput(
            f"Subdomain {label!r} is too long: {len(label)} characters, "
            f"a DNS label has at most {DNS_LABEL_MAX_LENGTH}."
        )
    if not DNS_LABEL_RE.fullmatch(label):
        if DNS_LABEL_RE.fullmatch(label.lower()):
            raise InvalidInput(f"Subdomain {label!r} must be lowercase.")
        raise InvalidInput(
            f"Subdomain {label!r} is not a valid DNS label: use only lowercase letters, "
            "digits and '-', not starting or ending with '-'."
        )
    return label
