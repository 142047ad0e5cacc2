"""A Flask app that knows its users from Ory. Run: cd examples && flask --app flask_app run"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

from ory_wsgi.flask import Ory, current_identity, login_required


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config["ORY_SDK_URL"] = os.environ.get("ORY_SDK_URL", "http://127.0.0.1:4433")
    app.config["ORY_PUBLIC_URL"] = os.environ.get("APP_URL", "http://127.0.0.1:5000")
    app.config.update(config or {})
    Ory(app)

    @app.get("/")
    def home() -> dict[str, Any]:
        if not current_identity:  # a proxy: false, never None, without a session
            return {"user": None, "login": "/.ory/self-service/login/browser"}
        return {"user": current_identity["traits"]["email"], "logout": "/.ory/proxy/logout"}

    @app.get("/members")
    @login_required
    def members() -> dict[str, Any]:
        return {"id": current_identity["id"], "email": current_identity["traits"]["email"]}

    @app.post("/members/settings")
    @login_required(aal="aal2")
    def change_settings() -> dict[str, Any]:
        return {"saved": True}

    return app
