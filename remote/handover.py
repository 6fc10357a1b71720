"""Hand a freshly cloned instance to its customer, in SQL, without loading Odoo.

Run on the clone's database in the transaction that renews its identity
(:func:`.postgres.clone_database`), so the handover costs no extra round trip
and no registry load: the template's administrator becomes the customer's
(login, email, name, language, timezone), with **no usable password** — the
template's never opens an instance; the customer chooses theirs through an
invitation — and the main company takes the customer's name and contacts.

Invitations (:func:`issue_invitation`) are Odoo 18 ``auth_signup`` reset tokens,
signed with the instance's own ``database.secret`` exactly as
``res.partner._generate_signup_token`` does, so the instance's own
``/web/reset_password`` page accepts them. A token names the user's last login
date, so it stops working once used (using it logs the user in); issuing a new
one records a login entry, which voids every earlier token.

Schema knowledge (Odoo 18 ``base``, ``auth_signup``): ``ir_model_data`` names
``base.user_admin`` and ``base.main_company``; ``res_users.login``/``password``;
``res_partner`` ``name``/``complete_name``/``email``/``lang``/``tz``/``phone``/
``country_id``/``signup_type``; ``res_users_log`` gives ``login_date``.
"""

import base64
import calendar
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from .exceptions import HandoverError, InvalidInput

EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
TZ_RE = re.compile(r"[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)*")
LANG_RE = re.compile(r"[a-z]{2,3}(?:_[A-Za-z0-9]{2,4})?(?:@[a-z]+)?")
SIGNUP_SCOPE = "signup"


def validate_email(email):
    """Return ``email`` stripped if it looks like an email address, else raise InvalidInput."""
    value = (email or "").strip() if isinstance(email, str) else ""
    if not EMAIL_RE.fullmatch(value) or len(value) > 254:
        raise InvalidInput(f"{email!r} is not an email address.")
    return value


@dataclass(frozen=True)
class Handover:
    """Who the instance is for. ``admin_email`` becomes the administrator's login."""

    admin_email: str
    admin_name: str
    company_name: str
    lang: str = "en_US"
    tz: str = ""
    company_email: str = ""
    company_phone: str = ""
    country_code: str = ""

    def __post_init__(self):
        validate_email(self.admin_email)
        if not (self.admin_name or "").strip() or not (self.company_name or "").strip():
            raise InvalidInput("The customer's name and company name are required.")
        if not LANG_RE.fullmatch(self.lang or ""):
            raise InvalidInput(f"{self.lang!r} is not a language code such as en_US.")
        if self.tz and not TZ_RE.fullmatch(self.tz):
            raise InvalidInput(f"{self.tz!r} is not a timezone such as Europe/Paris.")
        if self.country_code and not re.fullmatch(r"[A-Za-z]{2}", self.country_code):
            raise InvalidInput(f"{self.country_code!r} is not a two-letter country code.")


def _xmlid(cr, module, name):
    cr.execute("SELECT res_id FROM ir_model_data WHERE module = %s AND name = %s", (module, name))
    row = cr.fetchone()
    if not row:
        raise HandoverError(f"the template has no {module}.{name}")
    return row[0]


def _has_column(cr, table, column):
    cr.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_name = %s AND column_name = %s",
        (table, column),
    )
    return cr.fetchone() is not None


def _update_partner(cr, partner_id, values):
    """UPDATE res_partner with ``values`` (column -> value) plus what Odoo derives."""
    values = dict(values)
    if "name" in values:
        values["complete_name"] = values["name"]
    if "email" in values and _has_column(cr, "res_partner", "email_normalized"):
        values["email_normalized"] = (values["email"] or "").lower() or None
    columns = sorted(values)
    assignments = ", ".join(f"{column} = %s" for column in columns)  # fixed column names
    cr.execute(
        f"UPDATE res_partner SET {assignments} WHERE id = %s",  # noqa: S608 - columns are ours
        [values[column] for column in columns] + [partner_id],
    )


def apply(cr, handover):
    """Apply ``handover`` on the clone's cursor (its caller commits).

    :raises HandoverError: the template lacks what the handover needs (its admin
        user, its main company, the language); the caller drops the clone.
    """
    if not isinstance(handover, Handover):
        raise InvalidInput("a Handover is required")
    cr.execute("SELECT active FROM res_lang WHERE code = %s", (handover.lang,))
    row = cr.fetchone()
    if not row or not row[0]:
        raise HandoverError(f"language {handover.lang} is not installed in the template")
    uid = _xmlid(cr, "base", "user_admin")
    company_id = _xmlid(cr, "base", "main_company")
    cr.execute(
        "SELECT 1 FROM res_users WHERE lower(login) = lower(%s) AND id != %s",
        (handover.admin_email, uid),
    )
    if cr.fetchone():
        raise HandoverError(f"the template already has a user with login {handover.admin_email}")
    # No password at all: Odoo refuses every password for an empty hash, so the
    # template's administrator password never opens the instance.
    cr.execute(
        "UPDATE res_users SET login = %s, password = NULL WHERE id = %s RETURNING partner_id",
        (handover.admin_email, uid),
    )
    partner_id = cr.fetchone()[0]
    # The template's logins and API keys are not the customer's.
    cr.execute("DELETE FROM res_users_log WHERE create_uid = %s", (uid,))
    cr.execute("SELECT 1 FROM information_schema.tables WHERE table_name = 'res_users_apikeys'")
    if cr.fetchone():
        cr.execute("DELETE FROM res_users_apikeys WHERE user_id = %s", (uid,))
    partner = {"name": handover.admin_name, "email": handover.admin_email, "lang": handover.lang}
    if handover.tz:
        partner["tz"] = handover.tz
    _update_partner(cr, partner_id, partner)
    cr.execute(
        "UPDATE res_company SET name = %s WHERE id = %s RETURNING partner_id",
        (handover.company_name, company_id),
    )
    company_partner_id = cr.fetchone()[0]
    company = {"name": handover.company_name, "lang": handover.lang}
    if handover.company_email:
        company["email"] = handover.company_email
    if handover.company_phone:
        company["phone"] = handover.company_phone
    if handover.country_code:
        cr.execute("SELECT id FROM res_country WHERE code = %s", (handover.country_code.upper(),))
        country = cr.fetchone()
        if country:
            company["country_id"] = country[0]
    if handover.tz:
        company["tz"] = handover.tz
    _update_partner(cr, company_partner_id, company)


# --- invitations -----------------------------------------------------------


def _utc_timestamp(value):
    """``int(datetime.timestamp())`` as an Odoo process (TZ=UTC) computes it."""
    return calendar.timegm(value.timetuple())


def _b64(data):
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def sign_token(secret, values, expires_at):
    """An ``odoo.tools.hash_sign`` payload for scope ``signup`` (Odoo 18's format)."""
    message = json.dumps(values)
    expiration = _utc_timestamp(expires_at)
    digest = hmac.new(
        secret.encode(),
        repr((SIGNUP_SCOPE, f"1:{message}:{expiration}")).encode(),
        hashlib.sha256,
    ).digest()
    return _b64(b"\x01" + expiration.to_bytes(8, "little") + digest + message.encode())


def issue_invitation(cr, expires_at, now=None):
    """Prepare the instance's administrator for a password reset; return the token.

    On the instance database's cursor (its caller commits). Voids every earlier
    token (a login entry is recorded), marks the partner ``reset``, and signs the
    token with the instance's ``database.secret``. ``expires_at`` is a naive UTC
    datetime.

    :raises HandoverError: no ``auth_signup`` in the instance, no secret.
    """
    now = now or datetime.now(timezone.utc).replace(tzinfo=None)
    cr.execute("SELECT state FROM ir_module_module WHERE name = 'auth_signup'")
    row = cr.fetchone()
    if not row or row[0] != "installed":
        raise HandoverError("the instance has no auth_signup module: it cannot take invitations")
    cr.execute("SELECT value FROM ir_config_parameter WHERE key = 'database.secret'")
    row = cr.fetchone()
    if not row or not row[0]:
        raise HandoverError("the instance has no database.secret")
    secret = row[0]
    uid = _xmlid(cr, "base", "user_admin")
    cr.execute("SELECT partner_id FROM res_users WHERE id = %s", (uid,))
    partner_id = cr.fetchone()[0]
    cr.execute("SELECT id FROM res_users WHERE partner_id = %s ORDER BY id", (partner_id,))
    user_ids = [r[0] for r in cr.fetchall()]
    # A new login date voids the earlier tokens; strictly later than the last one
    # (Odoo compares whole seconds).
    cr.execute("SELECT max(create_date) FROM res_users_log WHERE create_uid = ANY(%s)", (user_ids,))
    last = cr.fetchone()[0]
    stamp = now.replace(microsecond=0)
    if last is not None and _utc_timestamp(last) >= _utc_timestamp(stamp):
        stamp = datetime.fromtimestamp(_utc_timestamp(last) + 1, timezone.utc).replace(tzinfo=None)
    cr.execute(
        "INSERT INTO res_users_log (create_uid, create_date, write_uid, write_date) "
        "VALUES (%s, %s, %s, %s)",
        (uid, stamp, uid, stamp),
    )
    cr.execute("UPDATE res_partner SET signup_type = 'reset' WHERE id = %s", (partner_id,))
    return sign_token(secret, [partner_id, user_ids, _utc_timestamp(stamp), "reset"], expires_at)
