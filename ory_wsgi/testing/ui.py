"""The stand-in's plain HTML UI: the login, registration, welcome, error and notice pages."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from werkzeug.wrappers import Response

from ory_wsgi.testing import pages
from ory_wsgi.testing.documents import flow_document
from ory_wsgi.testing.responses import Call, html_response, redirect
from ory_wsgi.testing.store import KratosStore, random_token


class UiPages(KratosStore):
    """Serves the pages Kratos' flows redirect a browser to."""

    def _ui_flow(self, call: Call, kind: str) -> Response:
        flow_id = call.request.args.get("flow", "")
        with self._lock:
            flow = self._flows.get(flow_id)
            document = flow_document(flow, call.base) if flow and flow.kind == kind else None
        if document is None:
            # Ory's hosted UI answers a relative Location here; proxies must cope with it.
            query = "" if flow_id else call.request.query_string.decode("latin-1")
            return redirect(f"../self-service/{kind}/browser" + (f"?{query}" if query else ""))
        return_to = document.get("return_to", "")
        suffix = f"?{urlencode({'return_to': return_to})}" if return_to else ""
        if kind == "login":
            title = "Sign in" if document.get("requested_aal") != "aal2" else "Second factor"
            links = [
                ("Create an account", f"{call.base}/self-service/registration/browser{suffix}")
            ]
        else:
            title = "Create an account"
            links = [("Sign in instead", f"{call.base}/self-service/login/browser{suffix}")]
        return html_response(pages.flow_page(title, document, links))

    def _ui_welcome(self, call: Call) -> Response:
        _, token = self._credential(call.request)
        with self._lock:
            found = self._active_session(token)
            session_json = None
            if found is not None:
                session_json = self._session_json(found[0], call.base)
                logout_token = random_token("ory_lo_")
                self._logout_tokens[logout_token] = found[0].id
        if session_json is None:
            links = [
                ("Sign in", f"{call.base}/self-service/login/browser"),
                ("Create an account", f"{call.base}/self-service/registration/browser"),
            ]
        else:
            links = [("Log out", f"{call.base}/self-service/logout?token={quote(logout_token)}")]
        return html_response(pages.welcome_page(session_json, links))

    def _ui_error(self, call: Call) -> Response:
        with self._lock:
            stored = self._errors.get(call.request.args.get("id", ""))
        error = stored.error if stored else None
        return html_response(pages.error_page(error, f"{call.base}/ui/welcome"))

    def _ui_notice(self, call: Call) -> Response:
        title = call.request.path.rsplit("/", 1)[-1].capitalize()
        text = f"{title} is not available in the local Ory stand-in."
        return html_response(pages.notice_page(title, text, f"{call.base}/ui/welcome"))
