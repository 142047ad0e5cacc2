"""The JWT key set in Redis (`[jwt] keys_backend = "redis"`): one key set for every host.

Two gunicorn proxies x 2 workers with separate state directories publish the
same JWKS; `ory-wsgi keys rotate -c FILE` reaches every worker without a
restart; a worker that starts while Redis is out uses its last copy.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from servers import Gunicorn, RedisServer, ThreadedServer, free_port, toml_lines
from werkzeug.test import Client

from ory_wsgi import cli, make_app
from ory_wsgi.errors import ConfigError
from ory_wsgi.keys import generate_key_set_file
from ory_wsgi.testing import FakeKratos

Start = Callable[[], list[Gunicorn]]


def config_text(
    upstream: str, ory: str, redis: str | dict[str, Any], state_dir: Path, port: int = 0
) -> str:
    """`redis`: the URL, or the `[session_cache]` settings (`fleet_redis`)."""
    redis_settings = {"redis_url": redis} if isinstance(redis, str) else redis
    return (
        f'[proxy]\nupstream = "{upstream}"\npublic_url = "http://127.0.0.1:{port or 4000}"\n'
        f'state_dir = "{state_dir}"\n[ory]\nsdk_url = "{ory}"\n'
        f'[session_cache]\n{toml_lines(redis_settings)}[jwt]\nkeys_backend = "redis"\n'
    )


@pytest.fixture
def two_proxies(
    start_proxy: Callable[..., Gunicorn],
    upstream: ThreadedServer,
    fake_ory: FakeKratos,
    fleet_redis: dict[str, Any],
    tmp_path: Path,
) -> Start:
    def start() -> list[Gunicorn]:
        proxies = []
        for name in ("a", "b"):
            port = free_port()
            text = config_text(upstream.url, fake_ory.url, fleet_redis, tmp_path / name, port)
            proxies.append(start_proxy(text, workers=2, port=port))
        return proxies

    return start


def jwks_everywhere(proxies: list[Gunicorn]) -> set[bytes]:
    """The JWKS bytes served by 8 concurrent requests to each proxy (every worker answers)."""
    urls = [f"{p.url}/.ory/jwks.json" for p in proxies for _ in range(8)]
    with ThreadPoolExecutor(len(urls)) as pool:
        answers = list(
            pool.map(lambda u: requests.get(u, headers={"Connection": "close"}, timeout=20), urls)
        )
    assert all(a.status_code == 200 for a in answers)
    return {a.content for a in answers}


def signing_kids(proxies: list[Gunicorn], token: str) -> set[str]:
    kids = set()
    for proxy in proxies:
        for _ in range(6):
            answer = requests.get(
                f"{proxy.url}/x",
                headers={"X-Session-Token": token, "Connection": "close"},
                timeout=20,
            )
            jwt = answer.json()["headers"]["Authorization"].removeprefix("Bearer ")
            header = json.loads(base64.urlsafe_b64decode(jwt.split(".")[0] + "=="))
            kids.add(header["kid"])
    return kids


def test_every_worker_of_every_host_publishes_the_same_key_set(
    two_proxies: Start, tmp_path: Path, fake_ory: FakeKratos
) -> None:
    proxies = two_proxies()
    documents = jwks_everywhere(proxies)
    assert len(documents) == 1
    (kid,) = [key["kid"] for key in json.loads(documents.pop())["keys"]]
    _, token = fake_ory.create_session(fake_ory.add_identity("k@example.com", "pw")["id"])
    assert signing_kids(proxies, token) == {kid}
    # No host generated a key of its own: both state directories hold the Redis copy.
    assert not (tmp_path / "a" / "jwks.json").exists()
    assert (tmp_path / "a" / "jwks-redis.json").stat().st_mode & 0o777 == 0o600


def test_keys_rotate_reaches_every_worker_without_a_restart(
    two_proxies: Start, tmp_path: Path, fake_ory: FakeKratos, capsys: pytest.CaptureFixture[str]
) -> None:
    proxies = two_proxies()
    (old,) = [k["kid"] for k in json.loads(jwks_everywhere(proxies).pop())["keys"]]
    assert cli.main(["keys", "rotate", "-c", str(tmp_path / "ory-0.toml")]) == 0
    new = capsys.readouterr().out.split("added signing key ")[1].split()[0]
    rotated = time.monotonic()
    while time.monotonic() - rotated < 60:
        documents = jwks_everywhere(proxies)
        if len(documents) == 1 and [
            k["kid"] for k in json.loads(next(iter(documents)))["keys"]
        ] == [new, old]:
            break
        time.sleep(0.5)
    assert time.monotonic() - rotated < 15
    _, token = fake_ory.create_session(fake_ory.add_identity("r@example.com", "pw")["id"])
    assert signing_kids(proxies, token) == {new}


def test_the_first_start_seeds_redis_from_the_key_file(
    redis_server: RedisServer, fake_ory: FakeKratos, tmp_path: Path
) -> None:
    kid = generate_key_set_file(str(tmp_path / "keys.json"))
    app_config = tmp_path / "ory.toml"
    app_config.write_text(
        config_text("http://127.0.0.1:9", fake_ory.url, redis_server.url, tmp_path / "s")
        + f'keys_file = "{tmp_path / "keys.json"}"\n'
    )
    make_app(app_config)
    stored = redis.Redis.from_url(redis_server.url).get("ory_wsgi:v1:jwks")
    assert stored is not None and json.loads(stored)["keys"][0]["kid"] == kid


def test_a_worker_starting_without_redis_uses_its_last_copy_or_refuses(
    redis_server: RedisServer, fake_ory: FakeKratos, tmp_path: Path
) -> None:
    text = config_text("http://127.0.0.1:9", fake_ory.url, redis_server.url, tmp_path / "s")
    make_app(upstream="http://127.0.0.1:9", **_overrides(text, tmp_path))
    redis_server.stop()
    make_app(upstream="http://127.0.0.1:9", **_overrides(text, tmp_path))  # the copy
    (tmp_path / "s" / "jwks-redis.json").unlink()
    with pytest.raises(ConfigError, match="cannot read the key set from Redis"):
        make_app(upstream="http://127.0.0.1:9", **_overrides(text, tmp_path))


def test_keys_rotate_without_a_file_needs_the_redis_backend(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "ory.toml"
    config.write_text('[proxy]\nupstream = "http://127.0.0.1:9"\n')
    assert cli.main(["keys", "rotate", "-c", str(config)]) == 2
    assert "name the key FILE" in capsys.readouterr().err


def _overrides(text: str, tmp_path: Path) -> dict[str, object]:
    path = tmp_path / "start.toml"
    path.write_text(text)
    return {"config": path}


def test_keys_in_redis_keep_signing_while_redis_is_out_and_readiness_says_so(
    redis_server: RedisServer, fake_ory: FakeKratos, tmp_path: Path
) -> None:
    text = config_text("http://127.0.0.1:9", fake_ory.url, redis_server.url, tmp_path / "s")
    client = Client(make_app(**_overrides(text, tmp_path)))
    jwks = client.get("/.ory/jwks.json").data
    assert client.get("/.ory/proxy/health/ready").json == {"status": "ok"}
    redis_server.stop()
    time.sleep(3.2)  # the key set is read again every 3 s
    assert client.get("/.ory/jwks.json").data == jwks
    ready = client.get("/.ory/proxy/health/ready")
    assert ready.status_code == 200 and ready.json is not None
    assert ready.json["degraded"] is True and ready.json["reason"].startswith("redis_unavailable")
