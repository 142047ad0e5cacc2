"""Scope strategies and token_from: the pieces the OAuth2 and JWT authenticators share."""

from __future__ import annotations

import pytest
from werkzeug.test import EnvironBuilder

from ory_wsgi.errors import ConfigError
from ory_wsgi.pipeline.request import request_facts
from ory_wsgi.pipeline.scope import granted_scopes, missing_scope, scope_strategy
from ory_wsgi.pipeline.token_from import TokenSource


@pytest.mark.parametrize(
    ("strategy", "granted", "required", "ok"),
    [
        ("exact", ["photos.read"], "photos.read", True),
        ("exact", ["photos"], "photos.read", False),
        ("hierarchic", ["photos"], "photos.read", True),
        ("hierarchic", ["photos"], "photos.read.own", True),
        ("hierarchic", ["photos.read"], "photos", False),
        ("hierarchic", ["photo"], "photos.read", False),
        ("hierarchic", ["photos.read"], "photos.readall", False),
        ("wildcard", ["photos.*"], "photos.read", True),
        ("wildcard", ["photos.*"], "photos.read.own", True),
        ("wildcard", ["photos.*"], "photos", False),
        ("wildcard", ["*"], "anything", True),
        ("wildcard", ["photos.*.own"], "photos.read.own", True),
        ("wildcard", ["photos.*.own"], "photos.read.all", False),
        ("wildcard", ["photos.read"], "photos.read", True),
        ("wildcard", ["photos.read"], "photos.write", False),
        ("none", [], "photos.read", True),
    ],
)
def test_scope_strategies(strategy: str, granted: list[str], required: str, ok: bool) -> None:
    assert scope_strategy(strategy, "rule r")(granted, required) is ok


def test_missing_scope_names_the_first_not_granted() -> None:
    check = scope_strategy("exact", "rule r")
    assert missing_scope(check, ("a", "b"), ("a", "b")) == ""
    assert missing_scope(check, ("a",), ("a", "c", "d")) == "c"


def test_unknown_strategy_is_refused_naming_the_rule() -> None:
    with pytest.raises(ConfigError, match="rule r: scope_strategy must be one of"):
        scope_strategy("prefix", "rule r")


def test_granted_scopes_reads_scope_and_scp() -> None:
    assert granted_scopes("a b  c") == ("a", "b", "c")
    assert granted_scopes(["a", 3, "b"]) == ("a", "b")
    assert granted_scopes(None) == ()


def facts(**kwargs: object):  # type: ignore[no-untyped-def]
    environ = EnvironBuilder(**kwargs).get_environ()  # type: ignore[arg-type]
    query = environ.get("QUERY_STRING")
    # werkzeug sets RAW_URI without the query; a server sends both.
    environ["RAW_URI"] = environ["PATH_INFO"] + (f"?{query}" if query else "")
    return request_facts(environ)


@pytest.mark.parametrize(
    ("config", "request_kwargs", "token"),
    [
        (None, {"headers": {"Authorization": "Bearer abc"}}, "abc"),
        (None, {"headers": {"Authorization": "bearer  abc "}}, "abc"),
        (None, {"headers": {"Authorization": "Basic abc"}}, None),
        (None, {"headers": {"Authorization": "Bearer "}}, None),
        (None, {}, None),
        ({"header": "X-Token"}, {"headers": {"X-Token": "t1"}}, "t1"),
        ({"header": "X-Token"}, {"headers": {"Authorization": "Bearer abc"}}, None),
        ({"query_parameter": "token"}, {"query_string": "a=1&token=q1"}, "q1"),
        ({"query_parameter": "token"}, {"query_string": "token="}, None),
        ({"cookie": "tok"}, {"headers": {"Cookie": 'bad"; tok=c1'}}, "c1"),
        ({"cookie": "tok"}, {"headers": {"Cookie": "other=1"}}, None),
    ],
)
def test_token_from(config: object, request_kwargs: dict[str, object], token: str | None) -> None:
    source = TokenSource.parse(config, "rule r")
    assert source.extract(facts(**request_kwargs)) == token


@pytest.mark.parametrize(
    "config", [{}, {"header": ""}, {"body": "x"}, {"header": "a", "cookie": "b"}, "X-Token"]
)
def test_token_from_refuses_bad_config(config: object) -> None:
    with pytest.raises(ConfigError, match="rule r: token_from"):
        TokenSource.parse(config, "rule r")
