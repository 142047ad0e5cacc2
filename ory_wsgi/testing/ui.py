"""The stand-in's plain HTML UI: the flow pages, welcome, error, and the local "mail" page."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from werkzeug.wrappers import Response

from ory_wsgi.testing import pages
from ory_wsgi.testing.documents import flow_document
from ory_wsgi.testing.responses import Call, html_response, redirect
from ory_wsgi.testing.store import KratosStore, random_token

_TITLES = {
    "login": "Sign in",
    "registration": "Create an account",
    "settings": "Account settings",
    "recovery": "Recover your account",
    "verification": "Verify your email address",
}


class UiPages(KratosStore):
    """Serves the pages Kratos' flows redirect a browser to."""

    def _ui_flow(self, call: Call, kind: str) -> Response:
        flow_id = call.request.args.get("flow", "")
        _, token = self._credential(call.request)
        with self._lock:
            flow = self._flows.get(flow_id)
            if flow is not None and flow.kind != kind:
                flow = None
            if flow is not None and kind == "settings":
                # Like Kratos' UI, which fetches the flow with the browser's cookie: only its owner.
                found = self._active_session(token)
                if found is None or found[1].id != flow.identity_id:
                    flow = None
            identity = self._identities.get(flow.identity_id) if flow else None
            document = flow_document(flow, call.base, identity) if flow else None
        if document is None:
            # Ory's hosted UI answers a relative Location here; proxies must cope with it.
            query = "" if flow_id else call.request.query_string.decode("latin-1")
            return redirect(f"../self-service/{kind}/browser" + (f"?{query}" if query else ""))
        return_to = document.get("return_to", "")
        suffix = f"?{urlencode({'return_to': return_to})}" if return_to else ""
        title = _TITLES[kind]
        if kind == "login" and document.get("requested_aal") == "aal2":
            title = "Second factor"
        links: list[tuple[str, str]] = []
        if kind == "login":
            links = [
                ("Create an account", f"{call.base}/self-service/registration/browser{suffix}"),
                ("Forgot your password?", f"{call.base}/self-service/recovery/browser{suffix}"),
            ]
        elif kind == "registration":
            links = [("Sign in instead", f"{call.base}/self-service/login/browser{suffix}")]
        elif kind in ("recovery", "verification"):
            links = [("Back to sign in", f"{call.base}/self-service/login/browser{suffix}")]
        if kind in ("recovery", "verification"):
            links.append(("Open the local mailbox", f"{call.base}/ui/mail"))
        if kind == "settings":
            links = [("Done", return_to or self._default_return_url(call.base))]
        elif self.default_return_url:
            links.append(("Back to the app", self.default_return_url))
        hint = self.login_hint if kind == "login" and title != "Second factor" else ""
        return html_response(pages.flow_page(title, document, links, hint=hint))

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
            links = [
                ("Account settings", f"{call.base}/self-service/settings/browser"),
                ("Verify your email address", f"{call.base}/self-service/verification/browser"),
                ("Log out", f"{call.base}/self-service/logout?token={quote(logout_token)}"),
            ]
        return html_response(pages.welcome_page(session_json, links))

    def _ui_error(self, call: Call) -> Response:
        with self._lock:
            stored = self._errors.get(call.request.args.get("id", ""))
        error = stored.error if stored else None
        return html_response(pages.error_page(error, f"{call.base}/ui/welcome"))

    def _ui_mail(self, call: Call) -> Response:
        with self._lock:
            mails = list(reversed(self._outbox))
        return html_response(pages.mail_page(mails, f"{call.base}/ui/welcome"))
