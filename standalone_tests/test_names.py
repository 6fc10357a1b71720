"""Tests of remote.names: database names (Odoo 18's rule) and DNS labels."""

import pytest

from remote.exceptions import InvalidDatabaseName, InvalidInput, RemoteError
from remote.names import validate_database_name, validate_dns_label


@pytest.mark.parametrize(
    "name",
    ["ab", "db1", "client-42", "Client_42.prod", "0start", "a" * 63, "a.b-c_d"],
)
def test_valid_database_names_are_returned(name):
    assert validate_database_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a",
        "abc\n",
        "\nabc",
        "a b",
        "a;b",
        'x"; DROP DATABASE t; --',
        "_leading",
        "-leading",
        ".leading",
        "a/b",
        "a'b",
        'a"b',
        "a\x00b",
        "a" * 64,
        "ébène",
        "db\u2028",
    ],
)
def test_invalid_database_names_are_refused(name):
    with pytest.raises(InvalidDatabaseName) as info:
        validate_database_name(name)
    # The operator sees the bad value quoted exactly (repr), never a guess.
    if name:
        assert repr(name) in str(info.value)


def test_too_long_name_says_so():
    with pytest.raises(InvalidDatabaseName, match="too long: 64 bytes"):
        validate_database_name("a" * 64)


def test_length_is_counted_in_bytes():
    # 32 two-byte characters are 64 bytes, over PostgreSQL's limit even
    # though the pattern would refuse them anyway: the byte check comes first.
    with pytest.raises(InvalidDatabaseName, match="64 bytes"):
        validate_database_name("é" * 32)


@pytest.mark.parametrize("name", ["postgres", "template0", "template1"])
def test_system_databases_are_refused(name):
    with pytest.raises(InvalidDatabaseName, match="system database"):
        validate_database_name(name)


def test_reserved_names_are_refused():
    with pytest.raises(InvalidDatabaseName, match="reserved"):
        validate_database_name("tpl_base", reserved=("tpl_base",))
    assert validate_database_name("tpl_base2", reserved=("tpl_base",)) == "tpl_base2"


@pytest.mark.parametrize("value", [None, 42, b"abc"])
def test_database_name_must_be_text(value):
    with pytest.raises(InvalidDatabaseName, match="must be text"):
        validate_database_name(value)


def test_invalid_names_are_value_errors_of_the_package():
    # Callers may catch the package base class or ValueError.
    with pytest.raises(RemoteError):
        validate_database_name("a b")
    with pytest.raises(ValueError):
        validate_database_name("a b")


@pytest.mark.parametrize("label", ["a", "0", "client1", "my-shop", "a" * 63, "xn--bcher-kva"])
def test_valid_dns_labels(label):
    assert validate_dns_label(label) == label


@pytest.mark.parametrize(
    "label",
    ["", "-a", "a-", "a_b", "a.b", "a b", "a" * 64, "shop\n", "ébène", "a*", "-"],
)
def test_invalid_dns_labels(label):
    with pytest.raises(InvalidInput):
        validate_dns_label(label)


def test_uppercase_dns_label_is_refused_not_lowered():
    with pytest.raises(InvalidInput, match="must be lowercase") as info:
        validate_dns_label("MyShop")
    assert "'MyShop'" in str(info.value)


@pytest.mark.parametrize("value", [None, 3])
def test_dns_label_must_be_text(value):
    with pytest.raises(InvalidInput, match="must be text"):
        validate_dns_label(value)
