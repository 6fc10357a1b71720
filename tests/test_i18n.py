import re

import polib

from odoo.exceptions import UserError
from odoo.tests import TransactionCase, new_test_user, tagged
from odoo.tools.misc import file_path

from .common import closed_port_url

# A Python %-format placeholder, named or not: %(name)s, %(seconds).2f, %s, %r, %%.
PLACEHOLDER = re.compile(r"%(?:\([^)]*\))?[-#0 +]*\d*(?:\.\d+)?[a-zA-Z%]")


@tagged("post_install", "-at_install")
class TestI18n(TransactionCase):
    """The French translation is complete and shows up where a French user looks."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.env["res.lang"]._activate_lang("fr_FR")
        cls.env["ir.module.module"]._load_module_terms(["saas_manager"], ["fr_FR"], overwrite=True)
        cls.fr_user = new_test_user(
            cls.env,
            login="saas_i18n_fr",
            groups="base.group_user,saas_manager.group_saas_manager",
            lang="fr_FR",
        )
        cls.en_user = new_test_user(
            cls.env,
            login="saas_i18n_en",
            groups="base.group_user,saas_manager.group_saas_manager",
            lang="en_US",
        )
        # Demo servers (if loaded) must not answer get_available_server().
        cls.env["saas.server"].search([]).write({"state": "disabled"})

    def as_user(self, user, model="saas.server"):
        """``model`` in the environment of ``user`` as a web request sees it (lang included)."""
        context = user.with_user(user).context_get()
        return self.env(user=user, context=dict(context))[model]

    def test_po_file_complete_and_placeholders_kept(self):
        po = polib.pofile(file_path("saas_manager/i18n/fr.po"))
        pot = polib.pofile(file_path("saas_manager/i18n/saas_manager.pot"))
        self.assertEqual(po.metadata.get("Language"), "fr")
        self.assertEqual(po.metadata.get("Plural-Forms"), "nplurals=2; plural=n > 1;")
        self.assertEqual(
            {entry.msgid for entry in po if not entry.obsolete},
            {entry.msgid for entry in pot},
            "i18n/fr.po is not merged with i18n/saas_manager.pot: run scripts/update_translations",
        )
        self.assertGreater(len(po), 100)
        for entry in po:
            with self.subTest(msgid=entry.msgid):
                self.assertFalse(entry.obsolete)
                self.assertNotIn("fuzzy", entry.flags)
                self.assertTrue(entry.msgstr.strip())
                self.assertEqual(
                    sorted(PLACEHOLDER.findall(entry.msgstr)),
                    sorted(PLACEHOLDER.findall(entry.msgid)),
                )

    def test_field_label_and_selection(self):
        fr = self.as_user(self.fr_user).fields_get(["max_instances", "state", "health_status"])
        en = self.as_user(self.en_user).fields_get(["max_instances", "state", "health_status"])
        self.assertEqual(fr["max_instances"]["string"], "Nombre maximal d'instances")
        self.assertEqual(en["max_instances"]["string"], "Max Instances")
        self.assertEqual(fr["health_status"]["string"], "État de santé")
        self.assertEqual(en["health_status"]["string"], "Health Status")
        self.assertEqual(
            dict(fr["state"]["selection"]),
            {
                "draft": "Brouillon",
                "active": "Actif",
                "maintenance": "Maintenance",
                "offline": "Hors ligne",
                "disabled": "Désactivé",
            },
        )
        self.assertEqual(dict(en["state"]["selection"])["offline"], "Offline")
        self.assertEqual(dict(fr["health_status"]["selection"])["healthy"], "Sain")
        self.assertEqual(dict(en["health_status"]["selection"])["healthy"], "Healthy")

    def test_menu_names(self):
        menu = self.env.ref("saas_manager.saas_server_menu")
        self.assertEqual(menu.with_user(self.fr_user).with_context(lang="fr_FR").name, "Serveurs")
        self.assertEqual(menu.with_user(self.en_user).with_context(lang="en_US").name, "Servers")
        templates = self.env.ref("saas_manager.saas_template_menu")
        self.assertEqual(templates.with_context(lang="fr_FR").name, "Modèles")
        self.assertEqual(templates.with_context(lang="en_US").name, "Templates")

    def test_user_error_without_active_server(self):
        with self.assertRaises(UserError) as caught:
            self.as_user(self.fr_user).get_available_server()
        self.assertEqual(
            str(caught.exception),
            "Aucun serveur actif n'a au moins 20% de sa capacité disponible.",
        )
        with self.assertRaises(UserError) as caught:
            self.as_user(self.en_user).get_available_server()
        self.assertEqual(
            str(caught.exception), "No active server has at least 20% of its capacity free."
        )

    def test_user_error_deactivating_a_hosting_server(self):
        server = self.env["saas.server"].create(
            {"name": "Paris 1", "code": "i18n-par1", "server_url": "https://i18n-par1.example.com"}
        )
        self.env["saas.instance"].create(
            {"name": "Client", "database_name": "i18n_par1_client", "server_id": server.id}
        )
        fr_server = self.as_user(self.fr_user).browse(server.id)
        with self.assertRaises(UserError) as caught:
            fr_server.action_deactivate()
        self.assertEqual(
            str(caught.exception),
            "Le serveur Paris 1 héberge encore des instances et ne peut pas être désactivé.",
        )
        with self.assertRaises(UserError) as caught:
            self.as_user(self.en_user).browse(server.id).action_deactivate()
        self.assertEqual(
            str(caught.exception), "Server Paris 1 still hosts instances and cannot be deactivated."
        )
        self.assertEqual(server.state, "draft")

    def test_user_error_of_an_instance_action(self):
        server = self.env["saas.server"].create(
            {"name": "Nantes 1", "code": "i18n-nan1", "server_url": "https://i18n-nan1.example.com"}
        )
        instance = self.env["saas.instance"].create(
            {"name": "Client N", "database_name": "i18n_nan1_client", "server_id": server.id}
        )
        with self.assertRaises(UserError) as caught:
            self.as_user(self.fr_user, "saas.instance").browse(instance.id).action_suspend()
        self.assertIn(
            "Seule une instance en service peut être suspendue ; Client N est à l'état ",
            str(caught.exception),
        )
        with self.assertRaises(UserError) as caught:
            self.as_user(self.en_user, "saas.instance").browse(instance.id).action_suspend()
        self.assertIn(
            "Only a running instance can be suspended; Client N is ", str(caught.exception)
        )

    def test_connection_notification(self):
        server = self.env["saas.server"].create(
            {"name": "Lyon 1", "code": "i18n-lyo1", "server_url": closed_port_url()}
        )
        fr = self.as_user(self.fr_user).browse(server.id).action_test_connection()["params"]
        en = self.as_user(self.en_user).browse(server.id).action_test_connection()["params"]
        self.assertEqual(fr["title"], "Échec de la connexion")
        self.assertTrue(fr["message"].startswith("Lyon 1 : "), fr["message"])
        self.assertEqual(en["title"], "Connection failed")
        self.assertTrue(en["message"].startswith("Lyon 1: "), en["message"])
