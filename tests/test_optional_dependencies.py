"""Embedding needs neither gunicorn nor requests: a Flask or Django user installs neither.

A subprocess whose import system refuses both imports ory_wsgi and its
embedding modules, wraps a WSGI app and a Flask app, and answers requests
with a real session from the Kratos stand-in.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from ory_wsgi.testing import FakeKratos

REFUSED = ("gunicorn", "requests")

SCRIPT = textwrap.dedent(
    """
    import json
    import sys

    REFUSED = {refused!r}

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in REFUSED:
                raise ModuleNotFoundError(f"{{name}} is not installed here", name=name)
            return None

    sys.meta_path.insert(0, Refuse())
    for name in list(sys.modules):
        if name.partition(".")[0] in REFUSED:
            del sys.modules[name]

    import django
    from django.conf import settings

    settings.configure(INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes"])
    django.setup()

    import ory_wsgi
    import ory_wsgi.django
    import ory_wsgi.flask
    from flask import Flask
    from werkzeug.test import Client

    ory_url, token = sys.argv[1], sys.argv[2]
    public_url = "http://app.example.test"

    def echo(environ, start_response):
        identity = environ.get("ory.identity")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [(identity["id"] if identity else "anonymous").encode()]

    wsgi = Client(
        ory_wsgi.OryMiddleware(
            echo, sdk_url=ory_url, public_url=public_url, protect=[{{"prefix": "/members"}}]
        )
    )
    flask_app = Flask("embedded")
    flask_app.config.update(ORY_SDK_URL=ory_url, ORY_PUBLIC_URL=public_url)
    ory_wsgi.flask.Ory(flask_app)

    @flask_app.get("/account")
    @ory_wsgi.flask.login_required
    def account():
        return ory_wsgi.flask.current_identity["id"]

    flask = flask_app.test_client()
    answers = {{
        "wsgi_member": wsgi.get("/members", headers={{"X-Session-Token": token}}),
        "wsgi_anonymous": wsgi.get("/members"),
        "wsgi_open": wsgi.get("/"),
        "flask_member": flask.get("/account", headers={{"X-Session-Token": token}}),
        "flask_anonymous": flask.get("/account"),
    }}
    print(json.dumps({{
        "answers": {{k: [a.status_code, a.get_data(as_text=True)] for k, a in answers.items()}},
        "loaded": sorted(m for m in sys.modules if m.partition(".")[0] in REFUSED),
    }}))
    """
).format(refused=REFUSED)


def test_embedding_runs_without_gunicorn_and_requests(fake_ory: FakeKratos) -> None:
    identity = fake_ory.add_identity("ada@example.com", "correct horse battery")
    _, token = fake_ory.create_session(identity["id"])
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, fake_ory.url, token],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["loaded"] == []
    answers = report["answers"]
    assert answers["wsgi_member"] == [200, identity["id"]]
    assert answers["wsgi_anonymous"][0] == 401
    assert answers["wsgi_open"] == [200, "anonymous"]
    assert answers["flask_member"] == [200, identity["id"]]
    assert answers["flask_anonymous"][0] == 401
    assert fake_ory.whoami_calls == 2


def run_refusing(code: str) -> subprocess.CompletedProcess[str]:
    """`code` run after the refusing finder is in place."""
    refusal = SCRIPT.split("import django\n")[0]
    return subprocess.run(
        [sys.executable, "-c", refusal + code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_refusal_is_real() -> None:
    """The finder does refuse: without it the test above would pass with both installed."""
    done = run_refusing("import requests\n")
    assert done.returncode != 0
    assert "requests is not installed here" in done.stderr


def test_demo_without_requests_says_which_extra_in_one_line() -> None:
    done = run_refusing("from ory_wsgi.cli import main\nsys.exit(main(['demo', '--port', '9']))\n")
    assert done.returncode == 1
    assert done.stderr == "ory-wsgi: the demo needs requests: pip install 'ory_wsgi[demo]'\n"
