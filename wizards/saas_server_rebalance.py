from odoo import Command, _, api, fields, models
from odoo.exceptions import UserError, ValidationError

from ..remote import rebalance

TRANSFER_MODEL = "saas.instance.transfer"


class SaasServerRebalance(models.TransientModel):
    """The moves that bring every active server under a target usage, to keep or drop.

    Made by ``saas.server.action_suggest_rebalance()``; nothing moves until
    **Confirm Moves** queues one transfer (a move) per line kept.
    """

    _name = "saas.server.rebalance"
    _description = "Rebalance SaaS Servers"

    target_percent = fields.Integer(
        string="Target Usage (%)",
        required=True,
        default=80,
        help="Every active server is brought to at most this share of its Max Instances "
        "(and of its disk, where measured, for the servers that receive).",
    )
    line_ids = fields.One2many("saas.server.rebalance.line", "wizard_id", string="Moves")
    needed_count = fields.Integer(
        string="Moves Needed",
        readonly=True,
        help="The fewest moves that bring every active server under the target: the "
        "instances above it, summed over the servers.",
    )
    summary = fields.Char(readonly=True)
    unresolved = fields.Text(string="Cannot Be Fixed", readonly=True)

    @api.constrains("target_percent")
    def _check_target_percent(self):
        for wizard in self:
            if not 0 < wizard.target_percent <= 100:
                raise ValidationError(
                    _("The target usage must be a percentage above 0 and at most 100.")
                )

    def _reason_message(self, reason):
        return {
            rebalance.UNKNOWN_VERSION: _("its Odoo version is not known: check its health first"),
            rebalance.NOT_MOVABLE: _(
                "no more of its instances can be moved (the others are not running or "
                "suspended, or have an operation in progress)"
            ),
            rebalance.NO_RECEIVER: _("no other active server runs the same Odoo major version"),
            rebalance.NO_ROOM: _(
                "the servers of the same Odoo major version have no room left under the target"
            ),
            rebalance.NO_DISK: _(
                "the servers of the same Odoo major version with free slots have too little "
                "disk left under the target"
            ),
        }[reason]

    def _fill_plan(self):
        """Replace the lines by the plan for the current target."""
        self.ensure_one()
        plan = self.env["saas.server"]._rebalance_plan(self.target_percent)
        instances = self.env["saas.instance"].browse([move.instance_id for move in plan.moves])
        sizes = {
            inst.id: (inst.db_size_mb or 0.0) + (inst.filestore_size_mb or 0.0)
            for inst in instances
        }
        servers = self.env["saas.server"].browse([u.server_id for u in plan.unresolved])
        names = {server.id: server.display_name for server in servers}
        unresolved = "\n".join(
            _(
                "%(server)s: %(count)s instance(s) above the target: %(reason)s.",
                server=names[item.server_id],
                count=item.excess,
                reason=self._reason_message(item.reason),
            )
            for item in plan.unresolved
        )
        if not plan.needed:
            summary = _("Every active server is already under the target: nothing to move.")
        elif plan.complete:
            summary = _(
                "%(count)s move(s) bring every active server under the target.",
                count=len(plan.moves),
            )
        else:
            summary = _(
                "%(count)s of the %(needed)s move(s) needed can be made; some servers stay "
                "above the target.",
                count=len(plan.moves),
                needed=plan.needed,
            )
        self.write(
            {
                "needed_count": plan.needed,
                "summary": summary,
                "unresolved": unresolved or False,
                "line_ids": [Command.clear()]
                + [
                    Command.create(
                        {
                            "sequence": sequence,
                            "instance_id": move.instance_id,
                            "source_server_id": move.source_id,
                            "target_server_id": move.target_id,
                            "size_mb": sizes.get(move.instance_id, 0.0),
                        }
                    )
                    for sequence, move in enumerate(plan.moves, start=1)
                ],
            }
        )

    def _action_open(self):
        self.ensure_one()
        return {
            "type": "ir.actions.act_window",
            "name": _("Suggest Rebalance"),
            "res_model": self._name,
            "res_id": self.id,
            "view_mode": "form",
            "target": "new",
        }

    def action_recompute(self):
        """Plan again, for the target now in the form (the lines are replaced)."""
        self.ensure_one()
        self._fill_plan()
        return self._action_open()

    def action_confirm(self):
        """Queue a move (a ``transfer`` operation) for every line kept; all or none."""
        self.ensure_one()
        lines = self.line_ids.filtered("keep")
        if not lines:
            raise UserError(_("No move is kept: tick the moves to make, or close this window."))
        lines.instance_id.check_access("write")
        if TRANSFER_MODEL not in self.env:
            raise UserError(_("Moving instances is not available in this version."))
        for line in lines:
            instance = line.instance_id
            if (
                instance.server_id != line.source_server_id
                or instance.state not in rebalance.MOVABLE_STATES
            ):
                raise UserError(
                    _(
                        "Instance %(name)s changed since the plan was made: press Recompute. "
                        "Nothing was queued.",
                        name=instance.name,
                    )
                )
        # One transaction: a move the transfer wizard refuses (its message says why)
        # rolls back the ones queued before it.
        transfers = self.env[TRANSFER_MODEL]
        for line in lines:
            transfer = transfers.create(
                {
                    "instance_id": line.instance_id.id,
                    "mode": "move",
                    "target_server_id": line.target_server_id.id,
                }
            )
            transfer.action_start()
        return self.env["saas.operation"]._queued_notification(
            self.env["saas.operation"],
            _(
                "%(count)s move(s) queued: follow them in Operations.",
                count=len(lines),
            ),
        )
