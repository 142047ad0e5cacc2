"""Per-rule upstreams through the proxy under gunicorn, over real sockets.

Three upstreams: the test app (`[proxy] upstream`), a second copy of it
that records what it receives, and an https copy signed by a private CA;
plus a WebSocket app. Rules route to each with `strip_path`, a path prefix
in `upstream.url` and `preserve_host` both ways; a rule whose upstream
cannot be used fails closed while the others serve; a reloaded rule file
adds an upstream; rules sharing an upstream share its connection pool.
The decisions endpoint ignores upstreams; the embedded middleware ignores
them with one warning.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from certs import TestCA
from conftest import ProxyFactory
from flask import Flask
from recording import RecordingUpstream
from servers import Gunicorn, ThreadedServer, free_port, wait_for_log
from test_upstream_tls import ca, tls_app  # noqa: F401 - the https upstream's fixtures
from test_websocket import echo  # noqa: F401 - the WebSocket app's fixture
from websockets.sync.client import connect
from werkzeug.test import Client
from ws_echo import EchoApp

from ory_wsgi.app import make_app
from ory_wsgi.middleware import OryMiddleware
from ory_wsgi.rules.model import AccessRule, Match, RuleSet, Upstream
from ory_wsgi.settings import load_settings
from ory_wsgi.testing import FakeKratos
from ory_wsgi.upstream.router import Route, UpstreamRouter

HOST = "<[^/]+>"
HANDLERS = """
[access_rules]
repositories = ["{rules}"]
[authenticators.anonymous]
enabled = true
[authenticators.noop]
enabled = true
[authorizers.allow]
enabled = true
[mutators.noop]
enabled = true
"""
RULES = HANDLERS + "[decisions]\nenabled = true\n"


def rule(
    rule_id: str,
    prefix: str,
    upstream: dict[str, Any] | None = None,
    authenticator: str = "anonymous",
) -> dict[str, Any]:
    """An open rule (anonymous, allow) for `/<prefix>/...`."""
    document: dict[str, Any] = {
        "id": rule_id,
        "match": {"methods": ["GET"], "url": f"<https?>://{HOST}/{prefix}/<.*>"},
        "authenticators": [{"handler": authenticator}],
        "authorizer": {"handler": "allow"},
        "mutators": [{"handler": "noop"}],
    }
    if upstream is not None:
        document["upstream"] = upstream
    return document


@pytest.fixture(scope="module")
def second() -> Iterator[tuple[ThreadedServer, RecordingUpstream]]:
    """A second upstream: the test app, recording every request it gets."""
    recording = RecordingUpstream()
    server = ThreadedServer(recording)
    yield server, recording
    server.stop()


@pytest.fixture(scope="module")
def routed(
    tmp_path_factory: pytest.TempPathFactory,
    upstream: ThreadedServer,
    second: tuple[ThreadedServer, RecordingUpstream],
    tls_app: str,  # noqa: F811
    ca: TestCA,  # noqa: F811
    echo: EchoApp,  # noqa: F811
    upstream_gunicorn: Gunicorn,
    fake_ory_server: Any,
) -> Iterator[Gunicorn]:
    """The proxy (one worker) with rules to every upstream, and two broken ones."""
    directory = tmp_path_factory.mktemp("routed")
    b = second[0].url
    document = [
        rule("default", "a"),
        rule("default-stripped", "as", {"strip_path": "/as"}),
        rule("b", "b", {"url": b, "strip_path": "/b"}),
        # noop/allow/noop: the pipeline allows a request without credentials without
        # running the handlers; it must still go to the rule's upstream.
        rule("b-quiet", "bq", {"url": b, "strip_path": "/bq"}, authenticator="noop"),
        rule("b-host", "bh", {"url": b, "strip_path": "bh/", "preserve_host": True}),
        rule("b-prefix", "pre", {"url": f"{b}/base/"}),
        rule("b-prefix-stripped", "p2", {"url": f"{b}/base", "strip_path": "/p2"}),
        rule("tls", "tls", {"url": tls_app, "ca_file": str(ca.cert), "strip_path": "/tls"}),
        rule("ws", "ws", {"url": echo.url}),
        rule("g", "g", {"url": upstream_gunicorn.url, "strip_path": "/g"}),
        rule(
            "g-host",
            "gh",
            {"url": upstream_gunicorn.url, "strip_path": "/gh", "preserve_host": True},
        ),
        rule("broken-ca", "broken", {"url": tls_app, "ca_file": str(directory / "none.pem")}),
        rule("broken-tls-on-http", "plain", {"url": b, "server_name": "app.internal"}),
    ]
    rules_file = directory / "rules.json"
    rules_file.write_text(json.dumps(document))
    port = free_port()
    config = directory / "ory.toml"
    config.write_text(
        f'[proxy]\nupstream = "{upstream.url}"\npublic_url = "http://127.0.0.1:{port}"\n'
        f'read_timeout = "5s"\n[ory]\nsdk_url = "{fake_ory_server.url}"\n'
        + RULES.format(rules=rules_file)
    )
    server = Gunicorn(f'ory_wsgi:make_app("{config}")', cwd=directory, port=port, threads=4)
    yield server
    server.stop()


def test_rules_route_to_their_own_upstream_with_strip_path_and_prefix(
    routed: Gunicorn, upstream: ThreadedServer, second: tuple[ThreadedServer, RecordingUpstream]
) -> None:
    server, recording = second
    cases = [
        # path asked -> (upstream that answers, the target it gets)
        ("/a/x?q=1", upstream, "/a/x?q=1"),
        ("/as/x?q=1", upstream, "/x?q=1"),
        ("/b/x/y?q=1&r=%2F", server, "/x/y?q=1&r=%2F"),
        ("/b/", server, "/"),
        ("/bh/x", server, "/x"),
        ("/bq/x?q=1", server, "/x?q=1"),
        ("/pre/x?q=1", server, "/base/pre/x?q=1"),
        ("/p2/x?q=1", server, "/base/x?q=1"),
    ]
    for path, expected_server, target in cases:
        before = len(recording.seen)
        answer = requests.get(routed.url + path, timeout=5)
        assert answer.status_code == 200, (path, answer.text)
        if expected_server is server:
            assert [s.raw_uri for s in recording.since(before)] == [target], path
        else:
            assert recording.since(before) == [], path
            assert answer.json()["raw_uri"] == target, path


def test_the_normalised_path_the_rule_was_judged_on_is_stripped_and_sent(
    routed: Gunicorn, second: tuple[ThreadedServer, RecordingUpstream]
) -> None:
    recording = second[1]
    for raw, expected in (("/b/./z/../x?q=1", "/x?q=1"), ("/x/../b/y", "/y")):
        before = len(recording.seen)
        connection = http.client.HTTPConnection("127.0.0.1", routed.port, timeout=5)
        connection.request("GET", raw)
        assert connection.getresponse().status == 200, raw
        connection.close()
        assert [s.raw_uri for s in recording.since(before)] == [expected], raw


def test_strip_path_only_strips_a_whole_leading_segment(
    routed: Gunicorn, second: tuple[ThreadedServer, RecordingUpstream]
) -> None:
    # `/bh/` is stripped from `/bh/bh/x` once, and from nothing else.
    recording = second[1]
    before = len(recording.seen)
    assert requests.get(routed.url + "/bh/bh/x", timeout=5).status_code == 200
    assert [s.raw_uri for s in recording.since(before)] == ["/bh/x"]


def test_preserve_host_false_sends_the_upstreams_host_and_true_the_clients(
    routed: Gunicorn, upstream: ThreadedServer, second: tuple[ThreadedServer, RecordingUpstream]
) -> None:
    server, recording = second
    client_host = "app.example.com"
    headers = {"Host": client_host}
    requests.get(routed.url + "/b/x", headers=headers, timeout=5)
    sent = recording.seen[-1].headers
    assert sent["HTTP_HOST"] == f"127.0.0.1:{server.port}"
    assert sent["HTTP_X_FORWARDED_HOST"] == client_host
    requests.get(routed.url + "/bh/x", headers=headers, timeout=5)
    sent = recording.seen[-1].headers
    assert sent["HTTP_HOST"] == client_host
    assert sent["HTTP_X_FORWARDED_HOST"] == client_host
    # A rule without upstream.url follows [proxy] rewrite_host (false: the client's Host).
    echoed = requests.get(routed.url + "/a/x", headers=headers, timeout=5).json()
    assert echoed["headers"]["Host"] == client_host


def test_forwarded_and_identity_headers_are_handled_alike_for_every_upstream(
    routed: Gunicorn, upstream: ThreadedServer, second: tuple[ThreadedServer, RecordingUpstream]
) -> None:
    recording = second[1]
    spoofed = {
        "X-Forwarded-For": "6.6.6.6",
        "X-Forwarded-Host": "evil.example",
        "X-Ory-Subject": "admin",
    }
    requests.get(routed.url + "/b/x", headers=spoofed, timeout=5)
    sent = recording.seen[-1].headers
    echoed = requests.get(routed.url + "/a/x", headers=spoofed, timeout=5).json()["headers"]
    for headers in (sent, {"HTTP_" + k.upper().replace("-", "_"): v for k, v in echoed.items()}):
        assert headers["HTTP_X_FORWARDED_FOR"] == "127.0.0.1"
        assert headers["HTTP_X_FORWARDED_HOST"] != "evil.example"
        assert "HTTP_X_ORY_SUBJECT" not in headers


def test_an_https_upstream_per_rule_is_verified_against_the_rules_ca_file(
    routed: Gunicorn,
) -> None:
    answer = requests.get(routed.url + "/tls/x?q=1", timeout=5)
    assert answer.status_code == 200
    assert answer.json()["raw_uri"] == "/x?q=1"


def test_a_rule_whose_upstream_cannot_be_used_fails_closed_while_the_others_serve(
    routed: Gunicorn, second: tuple[ThreadedServer, RecordingUpstream]
) -> None:
    recording = second[1]
    before = len(recording.seen)
    for path in ("/broken/x", "/plain/x"):
        answer = requests.get(routed.url + path, timeout=5)
        assert answer.status_code == 500, path
        assert "Traceback" not in answer.text
    assert recording.since(before) == []
    assert requests.get(routed.url + "/b/x", timeout=5).status_code == 200
    log = wait_for_log(routed, "rule 'broken-tls-on-http'")
    lines = [line for line in log.splitlines() if "fails closed" in line]
    assert any(
        "rule 'broken-ca'" in line and "upstream.ca_file: no such file" in line for line in lines
    )
    assert any(
        "rule 'broken-tls-on-http'" in line and "upstream.server_name" in line for line in lines
    )


def test_rules_to_one_upstream_share_its_pool_and_its_connections_are_reused(
    routed: Gunicorn,
) -> None:
    # One worker, one request at a time: a reused connection keeps its source port.
    # (The gunicorn upstreams keep connections alive; werkzeug's test servers do not.)
    def port(path: str) -> str:
        answer = requests.get(routed.url + path, timeout=5)
        assert answer.status_code == 200, path
        return str(answer.json()["port"])

    shared = [port(path) for path in ("/g/peer", "/gh/peer", "/g/peer", "/gh/peer")]
    assert len(set(shared)) == 1, shared
    tls = [port("/tls/peer") for _ in range(3)]
    assert len(set(tls)) == 1, tls


def test_a_websocket_goes_to_its_rules_upstream(routed: Gunicorn, echo: EchoApp) -> None:  # noqa: F811
    before = len(echo.handshakes)
    with connect(routed.url.replace("http", "ws", 1) + "/ws/chat?room=1") as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "hi"
    handshake = echo.handshakes[before]
    assert handshake.path == "/ws/chat?room=1"
    assert handshake.headers["Host"] == echo.url.removeprefix("http://")


def test_the_decisions_endpoint_ignores_upstreams(
    routed: Gunicorn, second: tuple[ThreadedServer, RecordingUpstream]
) -> None:
    recording = second[1]
    before = len(recording.seen)
    for path in ("/b/x", "/pre/x", "/a/x", "/ws/x"):
        answer = requests.get(routed.url + "/.ory/proxy/decisions" + path, timeout=5)
        assert answer.status_code == 200, path
    assert recording.since(before) == []


def test_a_reloaded_rule_file_adds_an_upstream(
    tmp_path: Path, start_proxy: ProxyFactory, upstream: ThreadedServer, fake_ory: FakeKratos
) -> None:
    recording = RecordingUpstream()
    third = ThreadedServer(recording)
    try:
        rules_file = tmp_path / "rules.json"
        rules_file.write_text(json.dumps([rule("default", "a")]))
        proxy = start_proxy(
            f'[proxy]\nupstream = "{upstream.url}"\n[ory]\nsdk_url = "{fake_ory.url}"\n'
            + RULES.format(rules=rules_file)
        )
        assert requests.get(proxy.url + "/c/x", timeout=5).status_code == 404
        rules_file.write_text(
            json.dumps([rule("default", "a"), rule("c", "c", {"url": third.url})])
        )
        deadline = time.monotonic() + 10
        status = 404
        while status == 404 and time.monotonic() < deadline:
            time.sleep(0.2)
            status = requests.get(proxy.url + "/c/x", timeout=5).status_code
        assert status == 200
        assert [s.raw_uri for s in recording.seen] == ["/c/x"]
        assert requests.get(proxy.url + "/a/x", timeout=5).json()["raw_uri"] == "/a/x"
    finally:
        third.stop()


def test_the_embedded_middleware_ignores_a_rules_upstream_with_one_warning(
    tmp_path: Path, fake_ory: FakeKratos, caplog: pytest.LogCaptureFixture
) -> None:
    rules_file = tmp_path / "rules.json"
    rules_file.write_text(
        json.dumps([rule("elsewhere", "a", {"url": "http://127.0.0.1:9", "strip_path": "/a"})])
    )
    config = tmp_path / "ory.toml"
    config.write_text(
        '[proxy]\npublic_url = "https://app.example.com"\n'
        f'[ory]\nsdk_url = "{fake_ory.url}"\n' + HANDLERS.format(rules=rules_file)
    )
    flask = Flask(__name__)

    @flask.route("/a/<path:rest>")
    def page(rest: str) -> str:
        return f"app saw /a/{rest}"

    with caplog.at_level(logging.WARNING, logger="ory_wsgi.upstream"):
        flask.wsgi_app = OryMiddleware(flask.wsgi_app, load_settings(config, env={}))  # type: ignore[method-assign]
    warnings = [r.getMessage() for r in caplog.records if r.name == "ory_wsgi.upstream"]
    assert len(warnings) == 1 and "rule 'elsewhere': upstream ignored" in warnings[0]
    answer = Client(flask).get("/a/x")
    assert answer.status_code == 200
    assert answer.get_data(as_text=True) == "app saw /a/x"


@pytest.mark.parametrize(
    ("strip", "prefix", "target", "expected"),
    [
        ("/api", "", "/api/x?q=/api", "/x?q=/api"),
        ("/api", "", "/api", "/"),
        ("/api", "", "/api?q", "/?q"),
        ("/api", "", "/apix/y", "/apix/y"),
        ("/api", "", "/v1/api/x", "/v1/api/x"),
        ("/api", "/base", "/api", "/base"),
        ("/api", "/base", "/api/x", "/base/x"),
        ("", "/base", "/", "/base/"),
        ("/a/b", "", "/a/b/c", "/c"),
    ],
)
def test_route_target(strip: str, prefix: str, target: str, expected: str) -> None:
    route = Route(backend=None, app=None, strip=strip, prefix=prefix)  # type: ignore[arg-type]
    assert route.target(target) == expected


def test_one_backend_per_origin_and_tls_options_and_retain_drops_unused_ones(
    tmp_path: Path, upstream: ThreadedServer
) -> None:
    config = tmp_path / "ory.toml"
    config.write_text(f'[proxy]\nupstream = "{upstream.url}/"\n')
    router = UpstreamRouter(load_settings(config, env={}), "http://localhost")
    match = Match(("GET",), "http://<.*>")
    same = [
        Upstream(url=upstream.url),
        Upstream(url=upstream.url + "/other", strip_path="/x"),
        Upstream(url=upstream.url, preserve_host=True),
        Upstream(strip_path="/y"),
    ]
    other = Upstream(url="http://127.0.0.1:9")
    rules = [AccessRule(f"r{i}", "test", match, upstream=u) for i, u in enumerate([*same, other])]
    assert all(router.validate(r) == "" for r in rules)
    assert router.backends == 2
    default = router.default_backend
    assert all(router.backend_for(u) is default for u in same)
    router.retain(RuleSet(tuple(rules)))
    router.retain(RuleSet(tuple(rules[:1])))
    assert router.backends == 2  # the set before this one may still have requests on the way
    router.retain(RuleSet(tuple(rules[:1])))
    assert router.backends == 1
    assert router.backend_for(other) is None
    assert router.backend_for(Upstream()) is default
    assert "upstream.url" in router.validate(
        AccessRule("q", "test", match, upstream=Upstream(url=upstream.url + "/?a=1"))
    )


def test_under_rewrite_host_a_rule_without_url_keeps_the_clients_host_only_with_preserve_host(
    tmp_path: Path, upstream: ThreadedServer, fake_ory: FakeKratos
) -> None:
    rules_file = tmp_path / "rules.json"
    rules_file.write_text(
        json.dumps([rule("rewritten", "a"), rule("kept", "k", {"preserve_host": True})])
    )
    config = tmp_path / "ory.toml"
    config.write_text(
        f'[proxy]\nupstream = "{upstream.url}"\nrewrite_host = true\n'
        f'[ory]\nsdk_url = "{fake_ory.url}"\n' + HANDLERS.format(rules=rules_file)
    )
    server = ThreadedServer(make_app(str(config)), poll_interval=0.05)
    try:
        headers = {"Host": "app.example.com"}
        rewritten = requests.get(server.url + "/a/x", headers=headers, timeout=5).json()
        kept = requests.get(server.url + "/k/x", headers=headers, timeout=5).json()
    finally:
        server.stop()
    assert rewritten["headers"]["Host"] == f"127.0.0.1:{upstream.port}"
    assert rewritten["headers"]["X-Forwarded-Host"] == "app.example.com"
    assert kept["headers"]["Host"] == "app.example.com"
