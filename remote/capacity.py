"""Capacity arithmetic of a server: how many instance slots are left.

Pure functions shared by the stored compute of ``saas.server``, the choice of a
server for a new instance and the health check, so the three agree.
"""

# Provisioning an instance needs at least this much capacity left (percent).
PROVISION_MIN_PERCENT = 10
# ``get_available_server()`` looks for servers with at least this much left.
DEFAULT_AVAILABLE_MIN_PERCENT = 20
# A healthy server with at least this much used is reported as ``warning``.
WARNING_USED_PERCENT = 90


def available_capacity(max_instances, instance_count):
    """Return the free share of a server's slots, in percent (0 to 100).

    ``(max_instances - instance_count) / max_instances * 100``, never below 0;
    0 when ``max_instances`` is not positive (a server without slots is full).
    """
    if not max_instances or max_instances <= 0:
        return 0.0
    count = max(instance_count or 0, 0)
    # Multiply before dividing: whole percentages stay exact (e.g. 1 of 10
    # slots free is exactly 10.0), so threshold comparisons do not wobble.
    free = (max_instances - count) * 100 / max_instances
    return float(min(max(free, 0.0), 100.0))


def has_capacity(max_instances, instance_count, min_percent=PROVISION_MIN_PERCENT):
    """Return whether at least ``min_percent`` of the slots are free."""
    if not max_instances or max_instances <= 0:
        return False
    return available_capacity(max_instances, instance_count) >= min_percent


def is_nearly_full(max_instances, instance_count, used_percent=WARNING_USED_PERCENT):
    """Return whether at least ``used_percent`` of the slots are used.

    With the default, a server with 10 % or less free is nearly full; a server
    without slots (``max_instances`` not positive) is always full.
    """
    return available_capacity(max_instances, instance_count) <= 100 - used_percent
