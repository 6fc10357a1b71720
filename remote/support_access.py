"""Temporary support users on an instance, in SQL, without knowing the customer's password.

A support user is a copy of the instance's administrator (same groups, same
companies) with its own login and a random password that only the operator who
asked is shown, once. Revoking deactivates it and removes its password, which
also ends its sessions (Odoo's session token covers the login, the password and
``active``). Nothing of the customer's user is read or changed.

The copy is made column by column from ``information_schema``, so it follows
whatever modules the instance has installed (their NOT NULL columns included).
"""

import base64
import hashlib
import secrets

from psycopg2 import sql

from .exceptions import HandoverError, InvalidInput

SUPPORT_LOGIN_PREFIX = "saas-support-"
# Odoo 18's CryptContext verifies any pbkdf2_sha512 round count (and re-hashes to its
# own default at the next login); this one keeps granting quick.
PBKDF2_ROUNDS = 100_000


def _ab64(data):
    """passlib's "adapted base64": no padding, '.' instead of '+'."""
    return base64.b64encode(data).decode().rstrip("=").replace("+", ".")


def password_hash(password, rounds=PBKDF2_ROUNDS):
    """A ``$pbkdf2-sha512$...`` hash as passlib (Odoo's ``res.users``) stores it."""
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, rounds, dklen=64)
    return f"$pbkdf2-sha512${rounds}${_ab64(salt)}${_ab64(digest)}"


def _columns(cr, table):
    cr.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
        (table,),
    )
    return [row[0] for row in cr.fetchall()]


def _copy_row(cr, table, row_id, overrides):
    """INSERT a copy of ``table`` row ``row_id`` with ``overrides``; return the new id."""
    columns = [c for c in _columns(cr, table) if c != "id"]
    select = [
        sql.Placeholder(column) if column in overrides else sql.Identifier(column)
        for column in columns
    ]
    query = sql.SQL(
        "INSERT INTO {table} ({columns}) SELECT {select} FROM {table} "
        "WHERE id = %(id)s RETURNING id"
    ).format(
        table=sql.Identifier(table),
        columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
        select=sql.SQL(", ").join(select),
    )
    cr.execute(query, {**overrides, "id": row_id})
    row = cr.fetchone()
    if not row:
        raise HandoverError(f"{table} row {row_id} is missing")
    return row[0]


def _admin_id(cr):
    cr.execute("SELECT res_id FROM ir_model_data WHERE module = 'base' AND name = 'user_admin'")
    row = cr.fetchone()
    if not row:
        raise HandoverError("the instance has no base.user_admin")
    return row[0]


def grant(cr, label):
    """Create a support user on the instance's cursor; return ``(login, password)``.

    ``label`` (who asked) becomes the user's name. The caller commits.
    """
    if not isinstance(label, str) or not label.strip():
        raise InvalidInput("a support user needs a name")
    admin_id = _admin_id(cr)
    cr.execute("SELECT partner_id FROM res_users WHERE id = %s", (admin_id,))
    admin_partner = cr.fetchone()[0]
    login = SUPPORT_LOGIN_PREFIX + secrets.token_hex(6)
    password = secrets.token_urlsafe(18)
    name = f"Support ({label.strip()[:60]})"
    partner_id = _copy_row(
        cr,
        "res_partner",
        admin_partner,
        {"name": name, "complete_name": name, "email": None, "email_normalized": None}
        if "email_normalized" in _columns(cr, "res_partner")
        else {"name": name, "complete_name": name, "email": None},
    )
    if "commercial_partner_id" in _columns(cr, "res_partner"):
        cr.execute("UPDATE res_partner SET commercial_partner_id = id WHERE id = %s", (partner_id,))
    user_id = _copy_row(
        cr,
        "res_users",
        admin_id,
        {
            "login": login,
            "password": password_hash(password),
            "partner_id": partner_id,
            "active": True,
        },
    )
    cr.execute(
        "INSERT INTO res_groups_users_rel (gid, uid) "
        "SELECT gid, %s FROM res_groups_users_rel WHERE uid = %s",
        (user_id, admin_id),
    )
    cr.execute(
        "INSERT INTO res_company_users_rel (cid, user_id) "
        "SELECT cid, %s FROM res_company_users_rel WHERE user_id = %s",
        (user_id, admin_id),
    )
    return login, password


def revoke(cr, login):
    """Deactivate the support user ``login`` and remove its password; idempotent.

    Returns whether such a user was there. Refuses a login that is not a support
    user's: the customer's own user is never touched.
    """
    if not isinstance(login, str) or not login.startswith(SUPPORT_LOGIN_PREFIX):
        raise InvalidInput(f"{login!r} is not a support user's login")
    cr.execute(
        "UPDATE res_users SET active = false, password = NULL WHERE login = %s RETURNING id",
        (login,),
    )
    return cr.fetchone() is not None
