"""The stand-in's account flows: settings (traits, password), recovery and verification by a
code "mailed" to the local outbox, and the signed-in user's own sessions (`/sessions`).

Like Kratos: settings need a session of the flow's identity; recovery refuses a signed-in
browser; a code is single-use and sent only to a known address (no mail to strangers); a
recovered account gets a session and a settings flow (`continue_with` for API clients, a 303
for a browser, a 422 `browser_location_change_required` for a browser asking for JSON).
"""

from __future__ import annotations

import hmac
import secrets
import uuid
from datetime import timedelta
from urllib.parse import urlencode

from werkzeug.wrappers import Response

from ory_wsgi.testing.documents import (
    AuthenticationMethod,
    Document,
    FlowRecord,
    IdentityRecord,
    KratosError,
    Mail,
    SessionRecord,
    now,
)
from ory_wsgi.testing.flows import MIN_PASSWORD_LENGTH, FlowEndpoints
from ory_wsgi.testing.responses import (
    Call,
    FlowRejected,
    json_response,
    redirect,
    session_inactive,
    whoami_unauthorized,
)

# Kratos' privileged_session_max_age default: a password or identifier change needs a sign-in
# this recent. A wrong recovery or verification code this many times uses the code up.
PRIVILEGED_SESSION = timedelta(minutes=15)
MAX_CODE_ATTEMPTS = 5

_SAVED = {"id": 1050001, "text": "Your changes have been saved!", "type": "success"}
_RECOVERED = {
    "id": 1060001,
    "text": (
        "You successfully recovered your account. Please change your password or set up an"
        " alternative login method (e.g. social sign in) within the next 15.00 minutes."
    ),
    "type": "success",
}
_VERIFIED = {
    "id": 1080002,
    "text": "You successfully verified your email address.",
    "type": "success",
}
_CODE_SENT = {
    "recovery": 1060003,
    "verification": 1080003,
}
_CODE_SENT_TEXT = (
    "An email containing a {what} code has been sent to the email address you provided. If you"
    " have not received an email, check the spelling of the address and make sure to use the"
    " address you registered with."
)
_CODE_INVALID = {"recovery": 4060006, "verification": 4070006}
_SUBJECTS = {
    "recovery": "Recover access to your account",
    "verification": "Please verify your email address",
}


class AccountFlows(FlowEndpoints):
    """Settings, recovery and verification flows, and the session list of the signed-in user."""

    # ----- settings -----

    def _start_settings(self, call: Call, flow_type: str) -> Response:
        return_to = self._checked_return_to(call, call.request.args.get("return_to", ""))
        _, token = self._credential(call.request)
        with self._lock:
            found = self._active_session(token)
        if found is None:
            if flow_type == "browser" and not call.wants_json:
                return redirect(f"{call.base}/self-service/login/browser")
            raise session_inactive()
        identity = found[1]
        flow = self._create_flow(
            call, "settings", flow_type, return_to, identity_id=identity.id, state="show_form"
        )
        return self._flow_started(call, flow)

    def _get_account_flow(self, call: Call, kind: str) -> Response:
        flow = self._flow(call.request.args.get("id", ""), kind)
        if kind == "settings":
            self._owner_session(call, flow)
        return json_response(self._flow_json(flow, call.base))

    def _owner_session(self, call: Call, flow: FlowRecord) -> tuple[SessionRecord, IdentityRecord]:
        """The session and identity of a settings flow, if the request's session is its own."""
        _, token = self._credential(call.request)
        with self._lock:
            found = self._active_session(token)
        if found is None:
            raise session_inactive()
        if found[1].id != flow.identity_id:
            raise KratosError(
                403,
                error_id="security_identity_mismatch",
                reason="The request was initiated by another identity.",
            )
        return found

    def _submit_settings(self, call: Call) -> Response:
        flow = self._flow(call.request.args.get("flow", ""), "settings")
        form = self._submitted_fields(call.request)
        self._check_csrf(call, flow, form)
        session, identity = self._owner_session(call, flow)
        method = form.get("method", "")
        new_email = form.get("traits.email", identity.email).strip().lower()
        protected = method == "password" or (
            method == "profile" and new_email != identity.email.lower()
        )
        if protected and now() - session.authenticated_at > PRIVILEGED_SESSION:
            return self._refresh_required(call, flow)
        try:
            if method == "profile":
                self._update_traits(identity, form)
            elif method == "password":
                self._update_password(identity, form.get("password", ""))
            else:
                raise FlowRejected(4000002, "Property method is missing.")
        except FlowRejected as rejected:
            return self._rejected(call, flow, rejected, 400)
        with self._lock:
            flow.state = "success"
            flow.messages = [_SAVED]
        if flow.type == "browser" and not call.wants_json:
            return redirect(flow.return_to or f"{call.base}/ui/settings?flow={flow.id}", "POST")
        return json_response(self._flow_json(flow, call.base))

    def _refresh_required(self, call: Call, flow: FlowRecord) -> Response:
        """Kratos' answer to a password or identifier change from an old sign-in: log in again."""
        settings_url = f"{call.base}/ui/settings?flow={flow.id}"
        login = f"{call.base}/self-service/login/browser?" + urlencode(
            {"refresh": "true", "return_to": settings_url}
        )
        if flow.type == "browser" and not call.wants_json:
            return redirect(login, "POST")
        return self._error_response(
            call,
            KratosError(
                403,
                error_id="session_refresh_required",
                reason=(
                    "The login session is too old and thus not allowed to update these fields."
                    " Please re-authenticate."
                ),
                message="The requested action was forbidden",
                redirect_browser_to=login,
            ),
            False,
        )

    def _update_traits(self, identity: IdentityRecord, form: dict[str, str]) -> None:
        traits = {
            key.removeprefix("traits."): value
            for key, value in form.items()
            if key.startswith("traits.")
        }
        email = str(traits.get("email", "")).strip()
        if not email:
            raise FlowRejected(4000002, "Property email is missing.")
        if "@" not in email:
            raise FlowRejected(4000001, f'"{email}" is not valid "email"')
        with self._lock:
            owner = self._identity_by_email.get(email.lower())
            if owner is not None and owner != identity.id:
                raise FlowRejected(
                    4000007,
                    "An account with the same identifier (email, phone, username, ...) exists"
                    " already.",
                )
            if email.lower() != identity.email.lower():
                del self._identity_by_email[identity.email.lower()]
                self._identity_by_email[email.lower()] = identity.id
                identity.verified = False
                identity.address_id = str(uuid.uuid4())
                identity.recovery_address_id = str(uuid.uuid4())
            identity.email = email
            identity.traits = {**traits, "email": email}
            identity.updated_at = now()

    def _update_password(self, identity: IdentityRecord, password: str) -> None:
        if not password:
            raise FlowRejected(4000002, "Property password is missing.")
        if len(password) < MIN_PASSWORD_LENGTH:
            raise FlowRejected(
                4000032,
                f"The password must be at least {MIN_PASSWORD_LENGTH} characters long,"
                f" but got {len(password)}.",
            )
        with self._lock:
            identity.password = password
            identity.updated_at = now()

    # ----- recovery and verification -----

    def _start_code_flow(self, call: Call, kind: str, flow_type: str) -> Response:
        return_to = self._checked_return_to(call, call.request.args.get("return_to", ""))
        if kind == "recovery":
            _, token = self._credential(call.request)
            with self._lock:
                signed_in = self._active_session(token) is not None
            if signed_in:
                if flow_type == "browser" and not call.wants_json:
                    return redirect(return_to or self._default_return_url(call.base))
                raise KratosError(
                    400,
                    error_id="session_already_available",
                    reason="A valid session was detected and thus recovery is not possible.",
                    message="you are already logged in",
                )
        flow = self._create_flow(call, kind, flow_type, return_to)
        return self._flow_started(call, flow)

    def _submit_code_flow(self, call: Call, kind: str) -> Response:
        flow = self._flow(call.request.args.get("flow", ""), kind)
        form = self._submitted_fields(call.request)
        self._check_csrf(call, flow, form)
        try:
            if form.get("code"):
                if kind == "recovery":
                    return self._recover(call, flow, form["code"])
                self._verify(call, flow, form["code"])
            else:
                self._send_code(flow, form.get("email", ""))
        except FlowRejected as rejected:
            return self._rejected(call, flow, rejected, 400)
        if flow.type == "browser" and not call.wants_json:
            return redirect(f"{call.base}/ui/{kind}?flow={flow.id}", "POST")
        return json_response(self._flow_json(flow, call.base))

    def _send_code(self, flow: FlowRecord, email: str) -> None:
        email = email.strip()
        if not email:
            raise FlowRejected(4000002, "Property email is missing.")
        if "@" not in email:
            raise FlowRejected(4000001, f'"{email}" is not valid "email"')
        kind = flow.kind
        code = f"{secrets.randbelow(10**6):06d}"
        with self._lock:
            flow.email = email
            flow.code = code
            flow.state = "sent_email"
            flow.values = {"email": email}
            flow.messages = [
                {
                    "id": _CODE_SENT[kind],
                    "text": _CODE_SENT_TEXT.format(what=kind),
                    "type": "info",
                }
            ]
            # Kratos sends nothing to an unknown address (notify_unknown_recipients is off).
            if email.lower() in self._identity_by_email:
                self._outbox.append(
                    Mail(
                        id=str(uuid.uuid4()),
                        to=email,
                        subject=_SUBJECTS[kind],
                        body=f"Your {kind} code is: {code}",
                        code=code,
                        sent_at=now(),
                    )
                )

    def _take_code(self, flow: FlowRecord, code: str) -> IdentityRecord:
        """The identity the flow's code was sent to; the code is used up."""
        with self._lock:
            valid = (
                flow.state == "sent_email"
                and bool(flow.code)
                and hmac.compare_digest(code.strip().encode(), flow.code.encode())
            )
            identity = self._identities.get(self._identity_by_email.get(flow.email.lower(), ""))
            if not valid or identity is None:
                flow.attempts += 1
                if flow.attempts >= MAX_CODE_ATTEMPTS:
                    flow.code = ""
                raise FlowRejected(
                    _CODE_INVALID[flow.kind],
                    f"The {flow.kind} code is invalid or has already been used. Please try again.",
                )
            flow.code = ""
            flow.state = "passed_challenge"
            return identity

    def _verify(self, call: Call, flow: FlowRecord, code: str) -> None:
        identity = self._take_code(flow, code)
        with self._lock:
            if identity.email.lower() == flow.email.lower():
                identity.verified = True
                identity.updated_at = now()
            flow.messages = [_VERIFIED]
            flow.values = {"continue": flow.return_to or self._default_return_url(call.base)}

    def _recover(self, call: Call, flow: FlowRecord, code: str) -> Response:
        identity = self._take_code(flow, code)
        with self._lock:
            session = self._new_session(identity.id, "aal1", call.request, None)
            session.methods = [AuthenticationMethod("code_recovery", "aal1", session.issued_at)]
            flow.messages = [_RECOVERED]
        settings = self._create_flow(
            call,
            "settings",
            flow.type,
            flow.return_to,
            identity_id=identity.id,
            state="show_form",
        )
        settings.messages = [_RECOVERED]
        settings_url = f"{call.base}/ui/settings?flow={settings.id}"
        if flow.type == "api":
            flow.continue_with = [
                {"action": "set_ory_session_token", "ory_session_token": session.token},
                {"action": "show_settings_ui", "flow": {"id": settings.id, "url": settings_url}},
            ]
            return json_response(self._flow_json(flow, call.base))
        if call.wants_json:
            response = self._error_response(
                call,
                KratosError(
                    422,
                    error_id="browser_location_change_required",
                    reason=(
                        "In order to complete this flow please redirect the browser to: "
                        + settings_url
                    ),
                    message="browser location change required",
                    redirect_browser_to=settings_url,
                ),
                False,
            )
        else:
            response = redirect(settings_url, "POST")
        response.headers.add("Set-Cookie", self._session_cookie_header(session))
        return response

    def _rejected(
        self, call: Call, flow: FlowRecord, rejected: FlowRejected, status: int
    ) -> Response:
        with self._lock:
            flow.messages = [rejected.message]
        if flow.type == "browser" and not call.wants_json:
            return redirect(f"{call.base}/ui/{flow.kind}?flow={flow.id}", "POST")
        return json_response(self._flow_json(flow, call.base), status)

    # ----- the signed-in user's sessions -----

    def _own_session(self, call: Call) -> tuple[SessionRecord, IdentityRecord]:
        _, token = self._credential(call.request)
        with self._lock:
            found = self._active_session(token)
        if found is None:
            raise whoami_unauthorized()
        return found

    def _others(self, current: SessionRecord) -> list[SessionRecord]:
        moment = now()
        return [
            session
            for session in self._sessions.values()
            if session.identity_id == current.identity_id
            and session.id != current.id
            and not session.revoked
            and session.expires_at > moment
        ]

    def _list_sessions(self, call: Call) -> Response:
        """`GET /sessions`: the identity's other active sessions (not the current one)."""
        current, _ = self._own_session(call)
        with self._lock:
            documents: list[Document] = [
                self._session_json(session, call.base) for session in self._others(current)
            ]
        response = json_response(documents)
        response.headers["X-Total-Count"] = str(len(documents))
        return response

    def _revoke_other_sessions(self, call: Call) -> Response:
        current, _ = self._own_session(call)
        with self._lock:
            others = self._others(current)
            for session in others:
                session.revoked = True
        return json_response({"count": len(others)})

    def _revoke_session(self, call: Call) -> Response:
        current, _ = self._own_session(call)
        session_id = str(call.route_args.get("session_id", ""))
        if session_id == current.id:
            raise KratosError(
                400,
                reason=(
                    "You are not allowed to revoke your current session, please use logout instead."
                ),
            )
        with self._lock:
            target = self._sessions.get(session_id)
            if target is None or target.identity_id != current.identity_id:
                raise KratosError(404, reason="The session could not be found.")
            target.revoked = True
        response = Response(status=204)
        del response.headers["Content-Type"]
        return response
