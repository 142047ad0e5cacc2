"""Authorizers in-process: claims (session paths), ory_permissions (the Keto stand-in)."""

from __future__ import annotations

from typing import Any

import pytest
from test_keys import make_session
from test_pipeline_mutators import facts, make_services
from werkzeug.datastructures import Headers

from ory_wsgi.errors import ConfigError
from ory_wsgi.pipeline.authorizers import AUTHORIZERS
from ory_wsgi.pipeline.errors import DecisionError
from ory_wsgi.pipeline.state import AuthSession
from ory_wsgi.rules.template import MatchContext, RequestURL

WHERE = 'rule "r1" authorizer'


def session_with(
    groups: tuple[str, ...] = (), *, other: bool = False, **identity: Any
) -> AuthSession:
    ory = make_session()
    ory["identity"].update(identity)
    url = RequestURL("https", "app.example.com", "/api/things")
    match = MatchContext(groups, url, "GET", Headers())
    if other:
        # Another authenticator (a JWT, introspection) filled `extra`, not a Kratos session.
        return AuthSession(match=match, subject="client-1", extra=ory["identity"])
    return AuthSession(
        match=match,
        subject=ory["identity"]["id"],
        extra=ory,
        ory_session=ory,
        authenticator="cookie_session",
    )


def claims(require: dict[str, Any]) -> tuple[Any, Any]:
    handler = AUTHORIZERS["claims"](make_services(None))
    return handler, handler.prepare({"require": require}, WHERE)


def test_claims_allows_a_listed_value_and_refuses_others_with_403() -> None:
    handler, prepared = claims({"identity.metadata_public.role": ["admin", "editor"]})
    handler.authorize(facts(), session_with(metadata_public={"role": "editor"}), prepared)
    for role in ("viewer", "Admin", "", None, ["admin"], {"admin": True}):
        with pytest.raises(DecisionError) as refused:
            handler.authorize(facts(), session_with(metadata_public={"role": role}), prepared)
        assert refused.value.status == 403 and refused.value.error_id == "forbidden"
    with pytest.raises(DecisionError):
        handler.authorize(facts(), session_with(), prepared)  # no metadata_public at all


def test_claims_every_path_must_match() -> None:
    handler, prepared = claims(
        {"identity.metadata_public.role": ["admin"], "identity.state": ["active"]}
    )
    handler.authorize(facts(), session_with(metadata_public={"role": "admin"}), prepared)
    with pytest.raises(DecisionError):
        handler.authorize(
            facts(), session_with(metadata_public={"role": "admin"}, state="inactive"), prepared
        )


def test_claims_star_matches_when_any_element_does() -> None:
    handler, prepared = claims({"identity.verifiable_addresses[*].verified": [True]})
    addresses = [{"value": "a@x", "verified": False}, {"value": "b@x", "verified": True}]
    handler.authorize(facts(), session_with(verifiable_addresses=addresses), prepared)
    for refused_shape in (
        [{"verified": False}],
        [],
        [{"verified": 1}],  # JSON types count: 1 is not true
        [{"verified": "true"}],
        {"verified": True},  # not a list under [*]
        None,
    ):
        with pytest.raises(DecisionError):
            handler.authorize(facts(), session_with(verifiable_addresses=refused_shape), prepared)


def test_claims_read_extra_when_another_authenticator_filled_the_session() -> None:
    handler, prepared = claims({"metadata_public.role": ["admin"]})
    handler.authorize(
        facts(), session_with(other=True, metadata_public={"role": "admin"}), prepared
    )
    with pytest.raises(DecisionError):
        handler.authorize(facts(), session_with(other=True), prepared)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "require must be a table"),
        ({"require": {}}, "require must be a table"),
        ({"require": {"identity.role": "admin"}}, "non-empty list"),
        ({"require": {"identity.role": []}}, "non-empty list"),
        ({"require": {"identity.role": [{"a": 1}]}}, "is not a string"),
        ({"require": {"identity..role": ["a"]}}, "is not a key"),
        ({"require": {"identity.role[0]": ["a"]}}, "is not a key"),
        ({"require": {"identity.__class__()": ["a"]}}, "is not a key"),
        ({"require": {"a": ["b"]}, "requires": {}}, "unknown config key"),
    ],
)
def test_claims_config_is_checked_at_load(config: dict[str, Any], message: str) -> None:
    handler = AUTHORIZERS["claims"](make_services(None))
    with pytest.raises(ConfigError, match=message) as failed:
        handler.prepare(config, WHERE)
    assert WHERE in str(failed.value)
