"""Pins for mutation survivors in the pipeline (docs/security.md, "Mutation testing").

request.py: the scheme and host the rules match come from the adapter when it
says (the decisions endpoint's trusted X-Forwarded-*), else from the request
itself. session.py: a `subject_from`/`extra_from` that is not a plain dotted
path is refused at load, never looked up per request.
"""

from __future__ import annotations

import pytest
from pipeline_app import services
from werkzeug.test import EnvironBuilder

from ory_wsgi.errors import ConfigError
from ory_wsgi.pipeline.authenticators.session import CookieSession
from ory_wsgi.pipeline.request import request_facts


def environ(**extra: str) -> dict[str, object]:
    built = EnvironBuilder(path="/members", base_url="https://app.example.com").get_environ()
    built.update(extra)
    return built


def test_the_requests_own_scheme_and_host_by_default() -> None:
    facts = request_facts(environ())
    assert (facts.scheme, facts.host) == ("https", "app.example.com")


def test_server_name_when_there_is_no_host_header() -> None:
    bare = environ()
    del bare["HTTP_HOST"]
    assert request_facts(bare).host == "app.example.com"


def test_the_adapters_scheme_and_host_win() -> None:
    facts = request_facts(environ(), scheme="http", host="internal.example:8080")
    assert (facts.scheme, facts.host) == ("http", "internal.example:8080")


@pytest.mark.parametrize("key", ["subject_from", "extra_from"])
@pytest.mark.parametrize(
    "path", ["identity..id", ".identity", "identity.", "identity.*", "a.b#c", "x|y", "@that"]
)
def test_a_path_that_is_not_plain_dots_is_refused_at_load(key: str, path: str) -> None:
    authenticator = CookieSession(services("http://127.0.0.1:9"))
    with pytest.raises(ConfigError, match=key):
        authenticator.prepare({key: path}, 'rule "r"')


@pytest.mark.parametrize("path", ["identity.id", "identity.traits.email", "@this"])
def test_plain_dotted_paths_are_accepted(path: str) -> None:
    authenticator = CookieSession(services("http://127.0.0.1:9"))
    authenticator.prepare({"subject_from": path}, 'rule "r"')
