from odoo import fields, models


class SaasOperationJournal(models.Model):
    """What an operation's attempt made, or was about to make, on a server.

    Written and committed before the step that makes it starts. ``pending``:
    may exist, removed if the attempt fails or its worker dies; ``kept``: the
    operation succeeded and the thing belongs to its record now (what Terminate
    drops); ``removed``: undone; ``existing``: its step refused to make it because
    it was there already, someone else's, so it is never removed. A database frozen
    (``read_only``) or opened to connections (``connections``) by a move is undone
    by thawing or closing it.
    """

    _name = "saas.operation.journal"
    _description = "SaaS Operation Journal Entry"
    _order = "id"

    operation_id = fields.Many2one(
        "saas.operation", required=True, readonly=True, index=True, ondelete="cascade"
    )
    attempt = fields.Integer(readonly=True)
    kind = fields.Selection(
        [
            ("database", "Database"),
            ("directory", "Directory"),
            ("read_only", "Database frozen"),
            ("connections", "Database opened"),
        ],
        required=True,
        readonly=True,
    )
    server_id = fields.Many2one("saas.server", required=True, readonly=True, ondelete="cascade")
    name = fields.Char(required=True, readonly=True, help="Database name, or path on the server.")
    state = fields.Selection(
        [
            ("pending", "Pending"),
            ("kept", "Kept"),
            ("removed", "Removed"),
            ("existing", "Existed already (left alone)"),
        ],
        default="pending",
        required=True,
        readonly=True,
        index=True,
    )
    error = fields.Char(readonly=True, help="Why removing it failed, if it did.")
