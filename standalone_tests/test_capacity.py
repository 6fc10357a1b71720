"""Tests of remote.capacity: the percentages and thresholds of SPEC §1."""

import pytest

from remote import capacity
from remote.capacity import available_capacity, has_capacity, is_nearly_full


def test_thresholds_of_the_spec():
    assert capacity.PROVISION_MIN_PERCENT == 10
    assert capacity.DEFAULT_AVAILABLE_MIN_PERCENT == 20
    assert capacity.WARNING_USED_PERCENT == 90


@pytest.mark.parametrize(
    ("max_instances", "count", "expected"),
    [
        (50, 0, 100.0),
        (50, 25, 50.0),
        (10, 9, 10.0),
        (10, 10, 0.0),
        (10, 12, 0.0),
        (4, 1, 75.0),
        (3, 2, 100 / 3),
        (0, 0, 0.0),
        (-5, 0, 0.0),
        (None, 0, 0.0),
        (10, None, 100.0),
    ],
)
def test_available_capacity(max_instances, count, expected):
    result = available_capacity(max_instances, count)
    assert isinstance(result, float)
    assert result == pytest.approx(expected)


def test_whole_percentages_are_exact():
    # Threshold comparisons rely on 1 free slot of 10 being exactly 10 %.
    assert available_capacity(10, 9) == 10.0
    assert available_capacity(30, 27) == 10.0


def test_has_capacity():
    assert has_capacity(10, 9)  # exactly 10 % left is enough to provision
    assert not has_capacity(10, 10)
    assert not has_capacity(50, 46)  # 8 % left
    assert has_capacity(50, 40, capacity.DEFAULT_AVAILABLE_MIN_PERCENT)
    assert not has_capacity(50, 41, capacity.DEFAULT_AVAILABLE_MIN_PERCENT)
    assert not has_capacity(0, 0, 0)


def test_a_server_of_three_slots_takes_exactly_three():
    # Each provision counts the server's other instances, not itself.
    assert all(has_capacity(3, others) for others in range(3))
    assert not has_capacity(3, 3)


def test_is_nearly_full():
    assert not is_nearly_full(10, 8)  # 80 % used
    assert is_nearly_full(10, 9)  # 90 % used
    assert is_nearly_full(10, 10)
    assert is_nearly_full(0, 0)
    assert not is_nearly_full(100, 89)
    assert is_nearly_full(100, 90)
