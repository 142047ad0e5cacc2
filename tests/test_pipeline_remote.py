"""The `remote` authorizer: the request's own body to a service, and on to the upstream.

In-process against pytest-httpserver for the handler (status mapping, framing,
limits), and under gunicorn for the promise that matters: the bytes the
service judged are the bytes the upstream receives.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import ProxyFactory
from pytest_httpserver import HTTPServer
from servers import Gunicorn, ThreadedServer
from test_faults import TRICKLE_CONFIG, TRICKLES, trickle
from test_pipeline_authorizers import WHERE, doc_rule, refusal, session_with
from test_pipeline_mutators import make_services
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

from ory_wsgi.errors import ConfigError
from ory_wsgi.pipeline.authorizers import AUTHORIZERS
from ory_wsgi.pipeline.request import request_facts
from ory_wsgi.pipeline.state import RequestFacts
from ory_wsgi.settings import ProxySettings, Settings
from ory_wsgi.testing import FakeKratos

BODY = b'{"amount": 12, "to": "acct-7"}'


def remote(url: str, *, max_body_size: int = 0, **config: Any) -> tuple[Any, Any]:
    services = make_services(None)
    if max_body_size:
        services = type(services)(
            Settings(proxy=ProxySettings(max_body_size=max_body_size)),
            *(getattr(services, f) for f in ("public_url", "keys", "client", "cache")),
            services.cookie_names,
        )
    handler = AUTHORIZERS["remote"](services)
    settings = {
        "remote": url,
        "headers": {"X-Subject": "{{ .Subject }}"},
        "forward_response_headers_to_upstream": ["X-Tenant"],
        **config,
    }
    return handler, handler.prepare(settings, WHERE)


def posted(body: bytes = BODY, **environ: Any) -> RequestFacts:
    env = EnvironBuilder(
        method="POST",
        path="/api/pay",
        data=body,
        headers={"Authorization": "Bearer client-token", "Content-Type": "application/json"},
    ).get_environ()
    env.update(environ)
    return request_facts(env)


def test_remote_posts_the_body_and_hands_the_same_bytes_on(httpserver: HTTPServer) -> None:
    ada = session_with(("d",))
    httpserver.expect_request(
        "/check",
        method="POST",
        data=BODY,
        headers={
            "Content-Type": "application/json",
            "Authorization": "Bearer client-token",
            "X-Subject": ada.subject,
        },
    ).respond_with_data("", 200, headers={"X-Tenant": "acme", "X-Other": "no"})
    handler, prepared = remote(httpserver.url_for("/check"))
    request = posted()
    handler.authorize(request, ada, prepared)
    assert ada.header == {"X-Tenant": "acme"}
    environ = request.environ
    assert environ["wsgi.input"].read() == BODY
    assert environ["CONTENT_LENGTH"] == str(len(BODY))
    assert len(httpserver.log) == 1


def test_remote_decodes_a_chunked_body_once(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/check", data=BODY).respond_with_data("", 200)
    handler, prepared = remote(httpserver.url_for("/check"))
    request = posted(b"", **{"wsgi.input": io.BytesIO(BODY), "HTTP_TRANSFER_ENCODING": "chunked"})
    request.environ.pop("CONTENT_LENGTH", None)  # type: ignore[attr-defined]
    handler.authorize(request, session_with(("d",)), prepared)
    assert "HTTP_TRANSFER_ENCODING" not in request.environ
    assert request.environ["CONTENT_LENGTH"] == str(len(BODY))
    assert request.environ["wsgi.input"].read() == BODY


def test_remote_status_decides(httpserver: HTTPServer) -> None:
    handler, prepared = remote(httpserver.url_for("/check"))
    for status, expected in ((403, 403), (429, 429), (401, 503), (500, 503), (302, 503)):
        httpserver.expect_request("/check").respond_with_data(
            "", status, headers={"Retry-After": "9", "X-RateLimit-Remaining": "0"}
        )
        error = refusal(handler, session_with(("d",)), prepared, posted())
        assert error.status == expected, status
        if expected == 429:
            assert error.header("Retry-After") == "9"
            assert error.header("X-RateLimit-Remaining") == "0"
        if expected == 503:
            assert error.header("Retry-After") == "5"
        httpserver.clear()


def test_remote_refuses_a_body_over_the_limit_without_reading_it(httpserver: HTTPServer) -> None:
    handler, prepared = remote(httpserver.url_for("/check"), max_body_size=16)
    unread = io.BytesIO(BODY)
    error = refusal(handler, session_with(("d",)), prepared, posted(**{"wsgi.input": unread}))
    assert error.status == 413
    assert unread.tell() == 0
    # Chunked, no length announced: counted while read.
    request = posted(
        b"", **{"wsgi.input": io.BytesIO(BODY * 2), "HTTP_TRANSFER_ENCODING": "chunked"}
    )
    request.environ.pop("CONTENT_LENGTH", None)  # type: ignore[attr-defined]
    assert refusal(handler, session_with(("d",)), prepared, request).status == 413
    assert len(httpserver.log) == 0


@pytest.mark.parametrize(
    "environ",
    [
        {"HTTP_TRANSFER_ENCODING": "gzip, chunked"},
        {"HTTP_TRANSFER_ENCODING": "chunked, chunked"},
        {"HTTP_TRANSFER_ENCODING": "chunked"},  # next to the Content-Length
        {"CONTENT_LENGTH": "1e3"},
        {"CONTENT_LENGTH": "²"},
        {"CONTENT_LENGTH": str(len(BODY) + 5)},  # the client stops short
    ],
)
def test_remote_refuses_a_body_framed_two_ways(
    httpserver: HTTPServer, environ: dict[str, str]
) -> None:
    handler, prepared = remote(httpserver.url_for("/check"))
    error = refusal(handler, session_with(("d",)), prepared, posted(**environ))
    assert error.status == 400
    assert len(httpserver.log) == 0


def test_remote_without_a_body_sends_an_empty_one(httpserver: HTTPServer) -> None:
    # What the decisions endpoint sees: the gateway keeps the body.
    httpserver.expect_request("/check", data=b"").respond_with_data("", 200)
    handler, prepared = remote(httpserver.url_for("/check"))
    env = EnvironBuilder(method="GET", path="/api/pay").get_environ()
    handler.authorize(request_facts(env), session_with(("d",)), prepared)
    assert httpserver.log[0][0].headers["Content-Length"] == "0"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"remote": "ftp://x/"}, "remote must be"),
        ({"remote": "http://user:pw@authz/check"}, "must not hold credentials"),
        ({"payload": "{}"}, "unknown config key"),
        ({"headers": {"Content-Length": "1"}}, "cannot be set"),
        ({"retry": {"max_delay": "0s"}}, "max_delay must be"),
    ],
)
def test_remote_config_is_checked_at_load(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        remote("http://127.0.0.1:1/check", **changes)


def test_the_remote_example_in_the_docs(httpserver: HTTPServer) -> None:
    config = {**doc_rule("remote")["authorizer"]["config"]}
    config["remote"] = httpserver.url_for("/check")
    handler = AUTHORIZERS["remote"](make_services(None))
    prepared = handler.prepare(config, WHERE)
    ada = session_with(("q3",))
    httpserver.expect_request(
        "/check", data=BODY, headers={"X-Subject": ada.subject}
    ).respond_with_data("", 200, headers={"X-Tenant": "acme"})
    handler.authorize(posted(), ada, prepared)
    assert ada.header == {"X-Tenant": "acme"}
    # An answer without it: set empty, so the client's own X-Tenant cannot pass as the service's.
    httpserver.clear()
    httpserver.expect_request("/check").respond_with_data("", 200)
    bob = session_with(("q3",))
    handler.authorize(posted(), bob, prepared)
    assert bob.header == {"X-Tenant": ""}


def judge(request: Request) -> Response:
    """The service: allows a transfer of at most 100, whatever framing brought the body."""
    document = json.loads(request.get_data() or b"{}")
    return Response("", 200 if document.get("amount", 1000) <= 100 else 403)


def remote_proxy(
    tmp_path: Path, start_proxy: ProxyFactory, upstream: str, ory: str, remote: str, extra: str
) -> Gunicorn:
    """The proxy under gunicorn with one rule: anonymous POST /pay, the `remote` authorizer."""
    rules = tmp_path / "rules.json"
    rules.write_text(
        json.dumps(
            [
                {
                    "id": "pay",
                    "match": {"methods": ["POST"], "url": "<https?>://<[^/]+>/pay"},
                    "authenticators": [{"handler": "anonymous"}],
                    "authorizer": {"handler": "remote", "config": {"remote": remote}},
                    "mutators": [{"handler": "noop"}],
                }
            ]
        )
    )
    return start_proxy(
        f'[proxy]\nupstream = "{upstream}"\n{extra}'
        f'[ory]\nsdk_url = "{ory}"\n'
        f'[access_rules]\nrepositories = ["{rules}"]\n'
        "[authenticators.anonymous]\nenabled = true\n[authorizers.remote]\nenabled = true\n"
        "[mutators.noop]\nenabled = true\n"
    )


def test_the_upstream_gets_the_bytes_the_service_judged(
    tmp_path: Path,
    start_proxy: ProxyFactory,
    upstream: ThreadedServer,
    httpserver: HTTPServer,
    fake_ory: FakeKratos,
) -> None:
    httpserver.expect_request("/check").respond_with_handler(judge)
    proxy = remote_proxy(
        tmp_path,
        start_proxy,
        upstream.url,
        fake_ory.url,
        httpserver.url_for("/check"),
        "max_body_size = 4096\n",
    )
    small = json.dumps({"amount": 12, "pad": "x" * 1000}).encode()
    for body in (small, iter([small[:500], small[500:]])):  # sized, then chunked
        answer = requests.post(f"{proxy.url}/pay", data=body, timeout=10)
        assert answer.status_code == 200
        echoed = answer.json()
        assert echoed["size"] == len(small)
        assert echoed["sha256"] == hashlib.sha256(small).hexdigest()
    big = json.dumps({"amount": 500}).encode()
    assert requests.post(f"{proxy.url}/pay", data=big, timeout=10).status_code == 403
    too_big = json.dumps({"amount": 1, "pad": "x" * 5000}).encode()
    assert requests.post(f"{proxy.url}/pay", data=too_big, timeout=10).status_code == 413


@pytest.mark.parametrize("case", ["sized_one_byte_a_second", "chunked_one_chunk_a_second"])
def test_a_body_trickled_to_the_remote_check_is_408_at_its_deadline(
    tmp_path: Path,
    start_proxy: ProxyFactory,
    upstream: ThreadedServer,
    httpserver: HTTPServer,
    fake_ory: FakeKratos,
    case: str,
) -> None:
    # gunicorn puts no limit on a body: the authorizer's read is held to the forwarder's.
    httpserver.expect_request("/check").respond_with_data("", 200)
    proxy = remote_proxy(
        tmp_path,
        start_proxy,
        upstream.url,
        fake_ory.url,
        httpserver.url_for("/check"),
        TRICKLE_CONFIG,
    )
    head, pieces = TRICKLES[case]
    status, seconds = trickle(proxy.port, head.replace(b"/echo", b"/pay"), pieces, pause=0.5)
    assert status == 408
    assert seconds < 8
    assert len(httpserver.log) == 0
    time.sleep(0.2)
    log = proxy.log()
    assert log.count("body_timeout:") == 1, log
    assert "Traceback" not in log
