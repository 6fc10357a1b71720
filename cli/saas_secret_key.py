"""``odoo-bin --addons-path=... saas-secret-key generate|rotate``: the key of the secrets.

Odoo finds the command because this addon has a ``cli/`` directory (it imports
the addons that have one before it reads its command line); ``--addons-path``
must therefore come first, before the command name.
"""

import argparse
import sys
from pathlib import Path

import odoo
from odoo.cli import Command
from odoo.modules.registry import Registry

from ..models.saas_secret_mixin import KEY_OPTION
from ..remote import secret_box


def _rotate(dbname):
    """Re-encrypt every secret of ``dbname`` with the first configured key."""
    registry = Registry(dbname)
    counts = {}
    with registry.cursor() as cr:
        env = odoo.api.Environment(cr, odoo.SUPERUSER_ID, {})
        for name in sorted(registry):
            model = env[name]
            if model._abstract or not getattr(model, "_secret_fields", ()):
                continue
            counts[name] = model._rotate_secrets()
    return counts


class SaasSecretKey(Command):
    """Generate a key for saas_manager's secrets, or re-encrypt them with a new one"""

    name = "saas-secret-key"

    def run(self, args):
        prog = f"{Path(sys.argv[0]).name} --addons-path=... {self.name}"
        parser = argparse.ArgumentParser(
            prog=prog,
            description=(
                f"generate: print a new key for {KEY_OPTION}. rotate: with the new key put "
                f"first in {KEY_OPTION} (new,old), encrypt every stored secret of the "
                "database again with it; then the old key can be removed."
            ),
        )
        parser.add_argument("action", choices=("generate", "rotate"))
        parser.add_argument("-c", "--config", help="the Odoo configuration file")
        parser.add_argument("-d", "--database", help="the SaaS Manager database (rotate)")
        options = parser.parse_args(args)
        if options.action == "generate":
            print(secret_box.generate_key())  # pylint: disable=print-used
            return
        if not options.database:
            parser.error("rotate needs -d DATABASE")
        odoo_args = ["-d", options.database]
        if options.config:
            odoo_args = ["-c", options.config, *odoo_args]
        odoo.tools.config.parse_config(odoo_args, setup_logging=True)
        counts = _rotate(options.database)
        for model, count in counts.items():
            print(f"{model}: {count} secret(s) encrypted with the current key")  # pylint: disable=print-used
