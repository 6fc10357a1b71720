"""Rebalancing plan: the fewest instance moves that bring active servers under a target usage.

Pure: plain servers and instances in, a :class:`Plan` out; nothing is moved here
(the Odoo layer shows the plan, and queues a transfer per move an operator keeps).

The usage unit is the instance: a server of ``max_instances`` slots is under a
target fraction ``t`` when it holds at most ``floor(t * max_instances)``
instances. A server above it has an *excess* of ``count - floor(t * max)``;
each move takes one instance from one server to another, so it removes at most
one unit of excess, and no plan fixes a server with fewer moves than its excess.
The planner only ever moves an instance off a server that still has excess onto
a server that stays under the target (and under its own ``receive_limit``)
after receiving it: every move removes exactly one unit, and the number of
moves equals the excess it fixes — the lower bound ``sum(excess)`` when
everything can be fixed. With instance counts
alone, whichever move it picks keeps the rest fixable, so it fixes as much as any
plan can (each source up to what it can move, within the room of the servers of
its version). When disk is measured it is a second constraint on the receiving
server (its disk must stay under the target too): then which instance goes where
is a packing problem, and the plan is minimal for what it fixes but may fix less
than an exhaustive search would.

Which instance goes: suspended ones first (a move costs their customers
nothing), then the smallest, then those with the fewest users and the oldest
last login. Where it goes: the receiving server with the most room left under
the target, then the least used.

Receiving servers are active, reachable, and run the same Odoo major version
(``18.0``, ``saas~17.4``) as the source: a database does not go to another
major version. A server whose version is not known (never checked) neither
gives nor receives.
"""

import dataclasses
import math
import numbers

from .exceptions import InvalidInput

ACTIVE_STATE = "active"
# An instance in another state (draft, provisioning) or with an operation in
# progress is not moved: a transfer needs it to be there, still.
MOVABLE_STATES = ("running", "suspended")
# Why a server stays above the target (Unresolved.reason).
UNKNOWN_VERSION = "unknown_version"
NOT_MOVABLE = "not_movable"
NO_RECEIVER = "no_receiver"
NO_ROOM = "no_room"
NO_DISK = "no_disk"
REASONS = {
    UNKNOWN_VERSION: "its Odoo version is not known: check its health first",
    NOT_MOVABLE: "no more of its instances can be moved (the others are not running or "
    "suspended, or have an operation in progress)",
    NO_RECEIVER: "no other active server runs the same Odoo major version",
    NO_ROOM: "the servers of the same Odoo major version have no room left under the target",
    NO_DISK: "the servers of the same Odoo major version with free slots have too little "
    "disk left under the target",
}
# Float products such as 0.29 * 100 = 28.999999999999996 must not lose a slot.
_EPSILON = 1e-9


@dataclasses.dataclass(frozen=True)
class Server:
    """A server as the planner sees it.

    ``instance_count`` is the usage: the instances holding a slot (as the
    server's capacity counts them), movable or not. ``version`` is what the
    server reported (``18.0``, ``17.0+e``, ``saas~17.4``), ``None`` when unknown.
    ``disk_total_mb``/``disk_free_mb`` are ``None`` when not measured.
    ``receive_limit``: the most instances it may hold after receiving one, by a
    rule of its own (e.g. the free share a new instance needs); ``None`` when
    only the target limits it.
    """

    id: int
    max_instances: int
    instance_count: int
    state: str = ACTIVE_STATE
    version: str | None = None
    reachable: bool = True
    disk_total_mb: float | None = None
    disk_free_mb: float | None = None
    receive_limit: int | None = None


@dataclasses.dataclass(frozen=True)
class Instance:
    """An instance that might be moved.

    ``busy``: an operation is queued or running about it. ``size_mb``: database
    and filestore (0 when unknown). ``last_login``: a POSIX timestamp, ``None``
    when nobody ever logged in.
    """

    id: int
    server_id: int
    state: str = "running"
    busy: bool = False
    size_mb: float = 0.0
    user_count: int = 0
    last_login: float | None = None


@dataclasses.dataclass(frozen=True)
class Move:
    instance_id: int
    source_id: int
    target_id: int


@dataclasses.dataclass(frozen=True)
class Unresolved:
    """A server that stays above the target: ``excess`` instances too many, and why."""

    server_id: int
    excess: int
    reason: str

    @property
    def message(self):
        return REASONS[self.reason]


@dataclasses.dataclass(frozen=True)
class Plan:
    """``moves`` in the order they were chosen; ``needed`` is the lower bound
    (the total excess); ``unresolved`` what the moves leave above the target."""

    target: float
    moves: tuple[Move, ...]
    unresolved: tuple[Unresolved, ...]
    needed: int

    @property
    def complete(self):
        return not self.unresolved


def major_version(version):
    """The Odoo major version of a reported version (``18.0+e`` → ``18.0``), or ``None``.

    The same reading as the manifests of backups (``remote.backup``).
    """
    if not isinstance(version, str) or not version.strip():
        return None
    major = ".".join(version.strip().split("-")[0].split("+")[0].split(".")[:2])
    digits = major.removeprefix("saas~").split(".")
    if len(digits) != 2 or not all(part.isdigit() for part in digits):
        return None
    return major


def check_target(target):
    """Return ``target`` as a float; refuse anything but a number in (0, 1]."""
    if isinstance(target, bool) or not isinstance(target, numbers.Real):
        raise InvalidInput(f"The target usage must be a number, not {target!r}.")
    if not 0 < target <= 1 or math.isnan(target):
        raise InvalidInput(
            f"The target usage must be above 0 and at most 1 (100 %), not {target!r}."
        )
    return float(target)


def limit(max_instances, target):
    """The most instances a server of ``max_instances`` slots holds under ``target``."""
    return math.floor(max_instances * target + _EPSILON)


def excess(server, target):
    """How many instances ``server`` holds above ``target`` (0 when under it)."""
    return max(server.instance_count - limit(server.max_instances, target), 0)


def lower_bound(servers, target):
    """The fewest moves any plan needs: the total excess of the active servers."""
    target = check_target(target)
    return sum(excess(server, target) for server in servers if server.state == ACTIVE_STATE)


def _check_servers(servers):
    by_id = {}
    for server in servers:
        if not isinstance(server, Server):
            raise InvalidInput(f"Not a rebalance.Server: {server!r}.")
        if server.id in by_id:
            raise InvalidInput(f"Server {server.id} is given twice.")
        for name in ("max_instances", "instance_count"):
            value = getattr(server, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidInput(f"Server {server.id}: {name} must be an integer, not {value!r}.")
        if server.max_instances <= 0:
            raise InvalidInput(f"Server {server.id}: max_instances must be positive.")
        if server.instance_count < 0:
            raise InvalidInput(f"Server {server.id}: instance_count must not be negative.")
        receive_limit = server.receive_limit
        if receive_limit is not None and (
            isinstance(receive_limit, bool) or not isinstance(receive_limit, int)
        ):
            raise InvalidInput(
                f"Server {server.id}: receive_limit must be an integer, not {receive_limit!r}."
            )
        by_id[server.id] = server
    return by_id


def _check_instances(instances, servers_by_id):
    seen = set()
    per_server = {}
    for instance in instances:
        if not isinstance(instance, Instance):
            raise InvalidInput(f"Not a rebalance.Instance: {instance!r}.")
        if instance.id in seen:
            raise InvalidInput(f"Instance {instance.id} is given twice.")
        if instance.server_id not in servers_by_id:
            raise InvalidInput(f"Instance {instance.id} is on unknown server {instance.server_id}.")
        seen.add(instance.id)
        per_server.setdefault(instance.server_id, []).append(instance)
    for server_id, listed in per_server.items():
        if len(listed) > servers_by_id[server_id].instance_count:
            raise InvalidInput(
                f"Server {server_id} lists {len(listed)} instances but counts "
                f"{servers_by_id[server_id].instance_count}."
            )
    return per_server


def _move_order(instance):
    """Least costly to move first: suspended, small, few users, idle for long."""
    return (
        instance.state != "suspended",
        instance.size_mb or 0.0,
        instance.user_count or 0,
        instance.last_login if instance.last_login is not None else float("-inf"),
        instance.id,
    )


class _Planner:
    def __init__(self, servers, instances, target):
        self.target = check_target(target)
        self.servers = _check_servers(servers)
        per_server = _check_instances(instances, self.servers)
        self.count = {sid: server.instance_count for sid, server in self.servers.items()}
        self.disk_free = {sid: server.disk_free_mb for sid, server in self.servers.items()}
        self.major = {sid: major_version(server.version) for sid, server in self.servers.items()}
        self.receivers = {}
        for sid, server in self.servers.items():
            if server.state == ACTIVE_STATE and server.reachable and self.major[sid]:
                self.receivers.setdefault(self.major[sid], []).append(sid)
        self.candidates = {
            sid: sorted(
                (
                    inst
                    for inst in per_server.get(sid, ())
                    if inst.state in MOVABLE_STATES and not inst.busy
                ),
                key=_move_order,
            )
            for sid in self.servers
        }

    def limit(self, sid):
        return limit(self.servers[sid].max_instances, self.target)

    def receive_limit(self, sid):
        """The most instances ``sid`` may hold once it has received."""
        own = self.servers[sid].receive_limit
        return self.limit(sid) if own is None else min(self.limit(sid), own)

    def excess(self, sid):
        return max(self.count[sid] - self.limit(sid), 0)

    def usage(self, sid):
        return self.count[sid] / self.servers[sid].max_instances

    def disk_fits(self, sid, size_mb):
        """Whether ``sid``'s disk stays under the target after receiving ``size_mb``."""
        server = self.servers[sid]
        free = self.disk_free[sid]
        if free is None or not server.disk_total_mb:
            return True
        return free - (size_mb or 0.0) >= (1 - self.target) * server.disk_total_mb - _EPSILON

    def slot_receivers(self, source):
        return [
            sid
            for sid in self.receivers.get(self.major[source], ())
            if sid != source and self.count[sid] < self.receive_limit(sid)
        ]

    def best_move(self, source):
        """The first candidate of ``source`` (in move order) that fits somewhere, and where."""
        receivers = self.slot_receivers(source)
        if not receivers:
            return None
        for instance in self.candidates[source]:
            fitting = [sid for sid in receivers if self.disk_fits(sid, instance.size_mb)]
            if fitting:
                target = min(
                    fitting,
                    key=lambda sid: (
                        self.count[sid] - self.receive_limit(sid),
                        self.usage(sid),
                        sid,
                    ),
                )
                return instance, target
        return None

    def reason(self, source):
        if not self.major[source]:
            return UNKNOWN_VERSION
        if not self.candidates[source]:
            return NOT_MOVABLE
        if not [sid for sid in self.receivers.get(self.major[source], ()) if sid != source]:
            return NO_RECEIVER
        if self.slot_receivers(source):
            return NO_DISK
        return NO_ROOM

    def plan(self):
        sources = [
            sid
            for sid, server in self.servers.items()
            if server.state == ACTIVE_STATE and self.excess(sid)
        ]
        needed = sum(self.excess(sid) for sid in sources)
        moves = []
        stuck = set()
        while True:
            # The most used server first: when room is short, the worst is relieved first.
            open_sources = [
                sid for sid in sources if sid not in stuck and self.excess(sid) and self.major[sid]
            ]
            if not open_sources:
                break
            source = max(open_sources, key=lambda sid: (self.usage(sid), -sid))
            found = self.best_move(source)
            if found is None:
                stuck.add(source)
                continue
            instance, target = found
            self.candidates[source].remove(instance)
            self.count[source] -= 1
            self.count[target] += 1
            if self.disk_free[target] is not None:
                self.disk_free[target] -= instance.size_mb or 0.0
            moves.append(Move(instance.id, source, target))
        unresolved = tuple(
            Unresolved(sid, self.excess(sid), self.reason(sid))
            for sid in sorted(sources, key=lambda sid: (-self.usage(sid), sid))
            if self.excess(sid)
        )
        return Plan(self.target, tuple(moves), unresolved, needed)


def plan_rebalance(servers, instances, target):
    """Plan the fewest moves that bring every active server to at most ``target`` usage.

    :param servers: :class:`Server` of the fleet (any state: only active ones are
        relieved or receive).
    :param instances: :class:`Instance` that might move (any state: only running
        or suspended ones without an operation in progress are moved).
    :param target: the usage to bring servers under, a fraction in (0, 1]
        (``0.8`` for 80 %).
    :return: a :class:`Plan`.
    :raise InvalidInput: for a target out of range or inconsistent servers and
        instances; nothing is planned.
    """
    return _Planner(list(servers), list(instances), target).plan()
