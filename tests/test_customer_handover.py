"""The customer's path (SPEC §7.1), against the real test Odoo as its own managed server.

Provision → the clone's administrator is the customer's, with no usable password →
the invitation mail → its link on the instance's own pages → a password chosen →
a JSON-RPC login; reused, voided and expired links refused; real suspend; names
reusable after terminate.
"""

import re
from contextlib import contextmanager
from datetime import timedelta
from unittest.mock import patch
from urllib.parse import urlsplit

import psycopg2
import requests

from odoo import fields
from odoo.exceptions import AccessError, ValidationError
from odoo.service import db as db_service
from odoo.tests import tagged
from odoo.tools import config, mute_logger

from odoo.addons.base.models.ir_mail_server import IrMailServer, MailDeliveryException

from ..remote import handover, odoo_rpc, postgres, support_access
from .common import LOGGERS, SelfManagedCase, unique_db_name

LINK_RE = re.compile(r'href="([^"]+token=[^"]+)"')
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


@contextmanager
def captured_mails():
    """Mails the manager builds (the body Odoo would send), in a list."""
    mails = []
    original = IrMailServer.build_email

    def build_email(server, email_from, email_to, subject, body, **kwargs):
        mails.append({"to": email_to, "subject": subject, "body": body})
        return original(server, email_from, email_to, subject, body, **kwargs)

    with patch.object(IrMailServer, "build_email", autospec=True, side_effect=build_email):
        yield mails


class CustomerCase(SelfManagedCase):
    def setUp(self):
        super().setUp()
        self.partner = self.env["res.partner"].create(
            {
                "name": "Alice Martin",
                "email": "alice@acme.example",
                "company_name": "Acme SARL",
                "country_id": self.env.ref("base.fr").id,
            }
        )
        self.template = self.make_template(name="Handover template")
        with mute_logger(*LOGGERS):
            self.assertTrue(self.template._create_database(), self.template.error)

    def rpc(self):
        return odoo_rpc.OdooRpcClient(self.base_url(), connect_timeout=5, timeout=30)

    def login(self, db, login, password):
        with self.rpc() as client:
            try:
                return client.login(db, login, password)
            except odoo_rpc.RpcError:
                return False

    def choose_password(self, link, password):
        """As a fresh browser: open the link, follow it to the reset page, post a password.

        Returns the reset page's HTML after the post.
        """
        browser = requests.Session()
        page = browser.get(link, timeout=30)
        self.assertEqual(page.status_code, 200, page.url)
        reset = re.search(r'href="(/web/reset_password\?[^"]+)"', page.text)
        if "reset_password" in page.url:
            form_page = page
        else:
            self.assertTrue(reset, "the login page links to the reset page with the token")
            form_page = browser.get(
                self.base_url() + reset.group(1).replace("&amp;", "&"), timeout=30
            )
        self.assertEqual(form_page.status_code, 200)
        csrf = CSRF_RE.search(form_page.text)
        token = re.search(r'name="token" value="([^"]*)"', form_page.text)
        if not (csrf and token):
            return form_page.text
        answer = browser.post(
            form_page.url.split("?")[0],
            data={
                "csrf_token": csrf.group(1),
                "token": token.group(1),
                "password": password,
                "confirm_password": password,
            },
            timeout=60,
        )
        return answer.text

    def provisioned_instance(self, **vals):
        instance = self.make_instance(self.template, partner_id=self.partner.id, **vals)
        with captured_mails() as mails:
            self.provision(instance)
        self.assertEqual(instance.state, "running", instance.error)
        return instance, mails

    def admin_row(self, db):
        return self.query(
            db,
            "SELECT u.login, u.password, p.name, p.email, p.lang FROM res_users u "
            "JOIN res_partner p ON p.id = u.partner_id JOIN ir_model_data d "
            "ON d.res_id = u.id AND d.module = 'base' AND d.name = 'user_admin'",
        )[0]


@tagged("post_install", "-at_install", "saas_slow")
class TestCustomerHandover(CustomerCase):
    def test_handover_invitation_and_login(self):
        instance, mails = self.provisioned_instance()
        db = instance.database_name
        self.assertEqual(instance.admin_email, "alice@acme.example", "defaults from the partner")
        self.assertEqual(instance.company_name, "Acme SARL")
        login, password_hash, name, email, lang = self.admin_row(db)
        self.assertEqual(
            (login, name, email, lang),
            ("alice@acme.example", "Alice Martin", "alice@acme.example", "en_US"),
        )
        self.assertFalse(password_hash, "no usable password before the customer chooses one")
        company = self.query(db, "SELECT name FROM res_company ORDER BY id LIMIT 1")[0][0]
        self.assertEqual(company, "Acme SARL")
        # The template's administrator password opens the template, never the instance.
        template_password = self.template.admin_password
        self.assertTrue(self.login(self.template.database_name, "admin", template_password))
        self.assertFalse(self.login(db, "admin", template_password))
        self.assertFalse(self.login(db, "alice@acme.example", template_password))

        # The invitation: one mail to the customer, with a link to their instance.
        self.assertEqual(instance.invitation_state, "sent")
        self.assertEqual(len(mails), 1, mails)
        self.assertIn("alice@acme.example", str(mails[0]["to"]))
        link = LINK_RE.search(mails[0]["body"]).group(1).replace("&amp;", "&")
        self.assertTrue(link.startswith(f"{self.server.server_url}/web/login?"), link)
        self.assertIn(f"db={db}", link)
        token = re.search(r"token=([^&]+)", link).group(1)
        chatter = " ".join(instance.message_ids.mapped("body"))
        self.assertNotIn(token, chatter, "no token in the chatter")
        self.assertIn("Invitation sent", chatter)

        password = "Correct-Horse-" + unique_db_name("pw")
        self.choose_password(link, password)
        uid = self.login(db, "alice@acme.example", password)
        self.assertTrue(uid, "the customer logs in with the password they chose")
        # Used once: the same link cannot set another password.
        self.choose_password(link, password + "-again")
        self.assertFalse(self.login(db, "alice@acme.example", password + "-again"))
        self.assertTrue(self.login(db, "alice@acme.example", password))

    def test_invitation_with_an_instance_domain(self):
        """Host-named instances (dbfilter ^%d$): the link is the instance's own reset page."""
        self.server.sudo().instance_domain = "localhost"
        name = "dom" + unique_db_name("x").replace("_", "")[:12]
        instance, mails = self.provisioned_instance(database_name=name, subdomain=name)
        link = LINK_RE.search(mails[0]["body"]).group(1).replace("&amp;", "&")
        self.assertTrue(link.startswith(f"http://{name}.localhost/web/reset_password?token="), link)
        # What the reverse proxy and dbfilter do in production: the host name picks the
        # database; the request itself goes to the test server.
        port = urlsplit(self.base_url()).port
        local = link.replace(f"http://{name}.localhost", f"http://127.0.0.1:{port}")
        headers = {"Host": f"{name}.localhost:{port}"}
        password = "Domain-mode-" + unique_db_name("pw")
        with patch.dict(config.options, {"dbfilter": "^%d$"}):
            browser = requests.Session()
            form = browser.get(local, headers=headers, timeout=30)
            self.assertEqual(form.status_code, 200, "a fresh browser lands on the reset page")
            csrf = CSRF_RE.search(form.text).group(1)
            token = re.search(r'name="token" value="([^"]*)"', form.text).group(1)
            browser.post(
                local.split("?")[0],
                headers=headers,
                data={
                    "csrf_token": csrf,
                    "token": token,
                    "password": password,
                    "confirm_password": password,
                },
                timeout=60,
            )
        self.assertTrue(self.login(instance.database_name, "alice@acme.example", password))

    def test_new_invitation_voids_the_previous_and_expired_ones_fail(self):
        instance, mails = self.provisioned_instance()
        db = instance.database_name
        first = LINK_RE.search(mails[0]["body"]).group(1).replace("&amp;", "&")
        with captured_mails() as again:
            instance.action_send_invitation()
        second = LINK_RE.search(again[0]["body"]).group(1).replace("&amp;", "&")
        self.assertNotEqual(first, second)
        self.choose_password(first, "First-link-password-1")
        self.assertFalse(self.login(db, "alice@acme.example", "First-link-password-1"))
        # Expired: a token whose expiry has passed.
        past = fields.Datetime.now() - timedelta(minutes=1)
        token = postgres.run_in_database(
            self.pg, db, lambda cr: handover.issue_invitation(cr, expires_at=past)
        )
        self.choose_password(instance._invitation_url(token), "Expired-link-password-1")
        self.assertFalse(self.login(db, "alice@acme.example", "Expired-link-password-1"))

    def test_mail_server_down(self):
        instance = self.make_instance(self.template, partner_id=self.partner.id)

        def refuse(*args, **kwargs):
            raise MailDeliveryException(
                "Mail Delivery Failed", "Connection refused by the SMTP host"
            )

        with (
            patch.object(IrMailServer, "send_email", autospec=True, side_effect=refuse),
            mute_logger("odoo.addons.mail.models.mail_mail"),
        ):
            self.provision(instance)
        self.assertEqual(instance.state, "running", "the instance is the customer's all the same")
        self.assertEqual(instance.invitation_state, "failed")
        self.assertIn("Connection refused", instance.invitation_error)
        leftover = (
            self.env["mail.mail"]
            .sudo()
            .search([("model", "=", "saas.instance"), ("res_id", "=", instance.id)])
        )
        self.assertFalse(leftover, "a failed mail holding a live link is not kept")
        with captured_mails() as mails:
            instance.action_send_invitation()
        self.assertEqual(instance.invitation_state, "sent")
        self.assertEqual(len(mails), 1)

    def test_admin_email_required_and_valid(self):
        instance = self.make_instance(self.template)
        with self.assertRaises(ValidationError):
            instance.admin_email = "not an email"
        instance.admin_email = False
        with self.assertRaisesRegex(Exception, "administrator email"):
            instance.action_provision()
        self.assertEqual(instance.state, "draft")
        self.assertFalse(instance.operation_ids, "nothing queued, nothing made")


@tagged("post_install", "-at_install", "saas_slow")
class TestSuspendAndNames(CustomerCase):
    def test_suspend_is_real_and_resume_keeps_the_data(self):
        instance, _mails = self.provisioned_instance(send_invitation=False)
        db = instance.database_name
        # The customer's password, set directly: this test is about access, not invitations.
        self.query_commit(
            db,
            "UPDATE res_partner SET website = 'https://acme.example' WHERE id IN "
            "(SELECT partner_id FROM res_users)",
        )
        before = self.query(db, "SELECT count(*) FROM res_partner")[0][0]
        instance.action_suspend()
        self.assertEqual(instance.state, "suspended")
        self.assertFalse(postgres.connections_allowed(self.pg, db))
        self.assertNotIn(db, db_service.list_dbs(True), "the hosting Odoo (and its cron) skip it")
        with self.assertRaises(psycopg2.OperationalError):
            self.query(db, "SELECT 1")
        page = requests.get(f"{self.server.server_url}/web/login?db={db}", timeout=30)
        self.assertNotIn("oe_login_form", page.text, "no login page for a suspended instance")
        instance.action_resume()
        self.assertEqual(instance.state, "running")
        self.assertEqual(self.query(db, "SELECT count(*) FROM res_partner")[0][0], before)
        instance.action_suspend()
        instance.action_terminate()
        self.run_operations()
        self.assertEqual(instance.state, "terminated", "a suspended instance can be terminated")
        self.assertFalse(postgres.database_exists(self.pg, db))

    def test_names_reusable_after_terminate(self):
        first, _mails = self.provisioned_instance(send_invitation=False, subdomain="acme")
        with self.assertRaises(ValidationError):
            self.make_instance(self.template, database_name=first.database_name)
        with self.assertRaises(ValidationError):
            self.make_instance(self.template, subdomain="acme")
        first.action_terminate()
        self.run_operations()
        self.assertEqual(first.state, "terminated")
        second = self.make_instance(
            self.template,
            database_name=first.database_name,
            subdomain="acme",
            partner_id=self.partner.id,
            send_invitation=False,
        )
        self.provision(second)
        self.assertEqual(second.state, "running", second.error)
        # At the database level too: a second live row with the same names is refused.
        self.env.flush_all()
        with (
            mute_logger("odoo.sql_db"),
            self.assertRaises(psycopg2.IntegrityError),
            self.env.cr.savepoint(),
        ):
            self.env.cr.execute(
                "UPDATE saas_instance SET state = 'running' WHERE id = %s", [first.id]
            )


@tagged("post_install", "-at_install", "saas_slow")
class TestSupportAccess(CustomerCase):
    def test_support_access_window(self):
        instance, _mails = self.provisioned_instance(send_invitation=False)
        db = instance.database_name
        customer_password = "Customer-own-" + unique_db_name("pw")
        self.query_commit(
            db,
            "UPDATE res_users SET password = %s WHERE login = %s",
            [support_access.password_hash(customer_password), "alice@acme.example"],
        )
        self.assertTrue(self.login(db, "alice@acme.example", customer_password))
        manager = self.env["res.users"].create(
            {
                "name": "Manager",
                "login": "support_manager",
                "groups_id": [(6, 0, [self.env.ref("saas_manager.group_saas_manager").id])],
            }
        )
        with self.assertRaises(AccessError):
            instance.with_user(manager).action_support_access()

        def grant():
            message = instance.action_support_access()["params"]["message"]
            found = re.search(r"login (\S+), password (\S+) ", message)
            return found.group(1), found.group(2)

        login, password = grant()
        self.assertTrue(self.login(db, login, password), "the support user logs in")
        self.assertTrue(self.login(db, "alice@acme.example", customer_password))
        chatter = " ".join(instance.message_ids.mapped("body"))
        self.assertIn("Support access opened", chatter)
        self.assertNotIn(password, chatter)
        self.assertEqual(instance.support_login, login)
        instance.action_revoke_support_access()
        self.assertFalse(self.login(db, login, password), "refused after revocation")
        self.assertTrue(self.login(db, "alice@acme.example", customer_password))
        # Expiry: the cron revokes what is past its time.
        login, password = grant()
        self.assertTrue(self.login(db, login, password))
        instance.support_expiry = fields.Datetime.now() - timedelta(minutes=1)
        self.env["saas.instance"]._cron_revoke_support_access()
        self.assertFalse(instance.support_login)
        self.assertFalse(self.login(db, login, password), "refused after expiry")
        self.assertTrue(self.login(db, "alice@acme.example", customer_password))
