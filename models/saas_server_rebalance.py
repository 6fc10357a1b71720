"""``saas.server``: suggest the fewest moves that bring the fleet under a target usage.

A split of the server model by concern (SPEC §9): the plan is made by
``remote.rebalance`` from plain values collected here, and shown in the wizard
``saas.server.rebalance``; nothing moves until an operator confirms it there.
"""

from datetime import timezone

from odoo import _, models
from odoo.exceptions import UserError

from ..remote import capacity, exceptions, rebalance
from .saas_instance import PROVISIONED_STATES

DEFAULT_TARGET_PERCENT = 80
# An operation in one of these states is about to change the instance: it stays put.
ACTIVE_OPERATION_STATES = ("queued", "running")
MB_PER_GB = 1024


class SaasServer(models.Model):
    _inherit = "saas.server"

    def action_suggest_rebalance(self, target_percent=DEFAULT_TARGET_PERCENT):
        """Open the rebalancing wizard: the fewest moves that bring every active server of
        the fleet (whatever records this is called on) to at most ``target_percent`` % of
        its capacity. Nothing moves until an operator confirms them there.

        :param target_percent: the usage to bring servers under, 1-100.
        :return: the wizard's window action.
        :raise UserError: for a target out of range.
        """
        self.env["saas.server"].check_access("write")
        self._check_target_percent_value(target_percent)
        wizard = self.env["saas.server.rebalance"].create({"target_percent": target_percent})
        wizard._fill_plan()
        return wizard._action_open()

    def _rebalance_plan(self, target_percent):
        """The ``remote.rebalance.Plan`` for the fleet at ``target_percent`` % of capacity.

        Active servers take part (the others neither give nor receive); a server
        that was critical at its last check does not receive. Instances that are
        running or suspended move, unless an operation is queued or running about
        them or one of their backups.
        """
        self._check_target_percent_value(target_percent)
        servers = self.env["saas.server"].search([("state", "=", "active")])
        instances = self.env["saas.instance"].search(
            [("server_id", "in", servers.ids), ("state", "in", rebalance.MOVABLE_STATES)]
        )
        busy = self._rebalance_busy_instances(instances)
        incoming = self._rebalance_incoming_moves(servers)
        provisioned = dict(
            self.env["saas.instance"]._read_group(
                [("server_id", "in", servers.ids), ("state", "in", PROVISIONED_STATES)],
                ["server_id"],
                ["__count"],
            )
        )
        plain_servers = [
            rebalance.Server(
                id=server.id,
                max_instances=server.max_instances,
                instance_count=server.instance_count + incoming[server.id][0],
                state=server.state,
                version=server.server_version or None,
                reachable=server.health_status != "critical",
                disk_total_mb=server.disk_total_gb * MB_PER_GB if server.disk_measured else None,
                disk_free_mb=(
                    max(server.disk_free_gb * MB_PER_GB - incoming[server.id][1], 0.0)
                    if server.disk_measured
                    else None
                ),
                receive_limit=self._rebalance_receive_limit(server, provisioned.get(server, 0)),
            )
            for server in servers
        ]
        plain_instances = [
            rebalance.Instance(
                id=instance.id,
                server_id=instance.server_id.id,
                state=instance.state,
                busy=instance.id in busy,
                size_mb=(instance.db_size_mb or 0.0) + (instance.filestore_size_mb or 0.0),
                user_count=instance.user_count,
                last_login=(
                    instance.last_login_date.replace(tzinfo=timezone.utc).timestamp()
                    if instance.last_login_date
                    else None
                ),
            )
            for instance in instances
        ]
        try:
            return rebalance.plan_rebalance(plain_servers, plain_instances, target_percent / 100)
        except exceptions.InvalidInput as exc:
            raise UserError(_("No rebalancing can be planned: %(reason)s", reason=exc)) from None

    def _rebalance_receive_limit(self, server, provisioned_count):
        """The most instances (as ``instance_count`` counts them) ``server`` may hold once
        it has received, by the rule a move to it is checked against: a new instance
        needs ``capacity.PROVISION_MIN_PERCENT`` free among its provisioned instances."""
        most = -1
        for count in range(server.max_instances, -1, -1):
            if capacity.has_capacity(server.max_instances, count):
                most = count
                break
        drafts = max(server.instance_count - provisioned_count, 0)
        return drafts + most + 1

    def _check_target_percent_value(self, target_percent):
        if (
            isinstance(target_percent, bool)
            or not isinstance(target_percent, int | float)
            or not 0 < target_percent <= 100
        ):
            raise UserError(
                _(
                    "The target usage must be a percentage above 0 and at most 100, not "
                    "%(value)r.",
                    value=target_percent,
                )
            )

    def _rebalance_incoming_moves(self, servers):
        """{server id: (count, MB)} of the moves queued or running towards each of
        ``servers``: the instances still count on the server they leave until their
        switch, and are counted on their target here, so that a plan made while
        moves are in flight does not fill a target twice."""
        incoming = {server.id: (0, 0.0) for server in servers}
        moves = (
            self.env["saas.operation"]
            .sudo()
            .search(
                [
                    ("kind", "=", "transfer"),
                    ("state", "in", ACTIVE_OPERATION_STATES),
                    ("target_server_id", "in", servers.ids),
                ]
            )
        )
        for move in moves:
            instance = move.instance_id
            if instance.server_id == move.target_server_id:
                continue  # a copy (made on its target, counted there) or a move switched
            count, size = incoming[move.target_server_id.id]
            incoming[move.target_server_id.id] = (
                count + 1,
                size + (instance.db_size_mb or 0.0) + (instance.filestore_size_mb or 0.0),
            )
        return incoming

    def _rebalance_busy_instances(self, instances):
        """Ids of the ``instances`` an operation in progress is about (directly or by a backup)."""
        operations = (
            self.env["saas.operation"]
            .sudo()
            .search(
                [
                    ("state", "in", ACTIVE_OPERATION_STATES),
                    "|",
                    ("instance_id", "in", instances.ids),
                    ("backup_id.instance_id", "in", instances.ids),
                ]
            )
        )
        return set(operations.instance_id.ids) | set(operations.backup_id.instance_id.ids)
