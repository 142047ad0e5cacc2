"""The stand-in's self-service flows: browser and API login and registration, and logout."""

from __future__ import annotations

import hmac
import json
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode, urljoin, urlsplit

from werkzeug.wrappers import Request, Response

from ory_wsgi.testing.documents import (
    AuthenticationMethod,
    Document,
    FlowRecord,
    IdentityRecord,
    KratosError,
    SessionRecord,
    flow_document,
    go_cookie,
    identity_document,
    now,
)
from ory_wsgi.testing.responses import (
    Call,
    FlowRejected,
    csrf_violation,
    json_response,
    redirect,
    session_inactive,
)
from ory_wsgi.testing.store import KratosStore, random_token

_EPOCH_PLUS_ONE = datetime.fromtimestamp(1, UTC)
_FLOW_LIFESPAN = timedelta(hours=1)
MIN_PASSWORD_LENGTH = 8
_FLOWS_BEFORE_PRUNING = 1000


class FlowEndpoints(KratosStore):
    """Starts, shows and completes login and registration flows, and logs out."""

    # ----- flows -----

    def _start_flow(self, call: Call, kind: str, flow_type: str) -> Response:
        args = call.request.args
        requested_aal = args.get("aal", "aal1") if kind == "login" else "aal1"
        if requested_aal not in ("aal1", "aal2"):
            raise KratosError(
                400,
                reason=f"Unable to parse Authenticator Assurance Level (AAL): {requested_aal}",
            )
        refresh = kind == "login" and args.get("refresh") == "true"
        return_to = self._checked_return_to(call, args.get("return_to", ""))
        _, token = self._credential(call.request)
        with self._lock:
            found = self._active_session(token)
        if found is not None:
            session, identity = found
            upgrading = (
                requested_aal == "aal2" and session.aal == "aal1" and identity.totp_code is not None
            )
            if not (kind == "login" and (refresh or upgrading)):
                return self._already_logged_in(call, kind, flow_type, return_to)
        elif requested_aal == "aal2":
            raise KratosError(
                401,
                error_id="session_aal1_required",
                reason="You can not requested a higher AAL (AAL2/AAL3) without an active session.",
                message="aal2 and aal3 can only be requested if a session exists already",
            )
        flow = self._create_flow(
            call, kind, flow_type, return_to, requested_aal=requested_aal, refresh=refresh
        )
        return self._flow_started(call, flow)

    def _create_flow(
        self,
        call: Call,
        kind: str,
        flow_type: str,
        return_to: str,
        *,
        requested_aal: str = "aal1",
        refresh: bool = False,
        identity_id: str = "",
        state: str = "choose_method",
    ) -> FlowRecord:
        csrf_token = ""
        if flow_type == "browser":
            existing = call.request.cookies.get(self.csrf_cookie_name_for(call.base), "")
            csrf_token = existing if len(existing) >= 32 else secrets.token_urlsafe(32)
        moment = now()
        query = call.request.query_string.decode("latin-1")
        flow = FlowRecord(
            id=str(uuid.uuid4()),
            kind=kind,
            type=flow_type,
            request_url=f"{call.base}{call.request.path}" + (f"?{query}" if query else ""),
            return_to=return_to,
            requested_aal=requested_aal,
            refresh=refresh,
            csrf_token=csrf_token,
            issued_at=moment,
            expires_at=moment + _FLOW_LIFESPAN,
            identity_id=identity_id,
            state=state,
        )
        with self._lock:
            if len(self._flows) >= _FLOWS_BEFORE_PRUNING:
                self._flows = {k: f for k, f in self._flows.items() if f.expires_at > moment}
            self._flows[flow.id] = flow
        return flow

    def _flow_started(self, call: Call, flow: FlowRecord) -> Response:
        """A browser goes to the flow's UI page; an API client or a JSON request gets the flow."""
        if flow.type == "browser" and not call.wants_json:
            response = redirect(f"{call.base}/ui/{flow.kind}?flow={flow.id}")
        else:
            response = json_response(self._flow_json(flow, call.base))
        if flow.csrf_token:
            response.headers.add("Set-Cookie", self._csrf_cookie(call.base, flow.csrf_token))
        return response

    def _flow_json(self, flow: FlowRecord, base: str) -> Document:
        with self._lock:
            identity = self._identities.get(flow.identity_id) if flow.identity_id else None
            return flow_document(flow, base, identity)

    def _check_csrf(self, call: Call, flow: FlowRecord, form: dict[str, str]) -> None:
        """A browser flow's form must carry the flow's CSRF token, and so must the cookie."""
        if flow.type != "browser":
            return
        sent = form.get("csrf_token", "")
        cookie = call.request.cookies.get(self.csrf_cookie_name_for(call.base), "")
        if not (
            hmac.compare_digest(sent.encode(), flow.csrf_token.encode())
            and hmac.compare_digest(cookie.encode(), flow.csrf_token.encode())
        ):
            raise csrf_violation()

    def _already_logged_in(self, call: Call, kind: str, flow_type: str, return_to: str) -> Response:
        if flow_type == "browser" and not call.wants_json:
            return redirect(return_to or self._default_return_url(call.base))
        action = "login" if kind == "login" else "registration"
        raise KratosError(
            400,
            error_id="session_already_available",
            reason=(
                f"A valid session was detected and thus {action} is not possible."
                + (" Did you forget to set `?refresh=true`?" if kind == "login" else "")
            ),
            message="you are already logged in",
        )

    def _get_flow(self, call: Call, kind: str) -> Response:
        flow = self._flow(call.request.args.get("id", ""), kind)
        return json_response(self._flow_json(flow, call.base))

    def _submit_flow(self, call: Call, kind: str) -> Response:
        flow = self._flow(call.request.args.get("flow", ""), kind)
        form = self._submitted_fields(call.request)
        self._check_csrf(call, flow, form)
        try:
            if kind == "login":
                session, identity = self._complete_login(call, flow, form)
            else:
                session, identity = self._complete_registration(call, flow, form)
        except FlowRejected as rejected:
            with self._lock:
                flow.messages = [rejected.message]
                flow.values = {k: v for k, v in form.items() if k in ("identifier", "traits.email")}
            if flow.type == "browser" and not call.wants_json:
                return redirect(f"{call.base}/ui/{kind}?flow={flow.id}", "POST")
            return json_response(flow_document(flow, call.base), 400)
        with self._lock:
            self._flows.pop(flow.id, None)
            session_json = self._session_json(session, call.base)
            identity_json = identity_document(identity, call.base)
        target = flow.return_to or self._default_return_url(call.base)
        if identity.totp_code is not None and session.aal == "aal1":
            target = f"{call.base}/self-service/login/browser?aal=aal2"
            if flow.return_to:
                target += "&" + urlencode({"return_to": flow.return_to})
        if flow.type == "api":
            document: Document = {"session_token": session.token, "session": session_json}
            if kind == "registration":
                document = {"identity": identity_json, **document}
            return json_response(document)
        if call.wants_json:
            document = {"session": session_json}
            if kind == "registration":
                document = {"identity": identity_json, **document}
            document["continue_with"] = [
                {"action": "redirect_browser_to", "redirect_browser_to": target}
            ]
            response = json_response(document)
        else:
            response = redirect(target, "POST")
        response.headers.add("Set-Cookie", self._session_cookie_header(session))
        return response

    def _complete_login(
        self, call: Call, flow: FlowRecord, form: dict[str, str]
    ) -> tuple[SessionRecord, IdentityRecord]:
        _, token = self._credential(call.request)
        with self._lock:
            current = self._active_session(token)
            if flow.requested_aal == "aal2":
                if current is None:
                    raise session_inactive()
                session, identity = current
                code = form.get("totp_code", "")
                if not code:
                    raise FlowRejected(4000002, "Property totp_code is missing.")
                if identity.totp_code is None or not hmac.compare_digest(
                    code.encode(), identity.totp_code.encode()
                ):
                    raise FlowRejected(
                        4000008, "The provided authentication code is invalid, please try again."
                    )
                moment = now()
                session.aal = "aal2"
                session.methods.append(AuthenticationMethod("totp", "aal2", moment))
                return session, identity
            identifier = form.get("identifier", "") or form.get("password_identifier", "")
            password = form.get("password", "")
            for name, value in (("identifier", identifier), ("password", password)):
                if not value:
                    raise FlowRejected(4000002, f"Property {name} is missing.")
            identity_id = self._identity_by_email.get(identifier.strip().lower(), "")
            identity_record = self._identities.get(identity_id)
            if identity_record is None or not hmac.compare_digest(
                password.encode(), identity_record.password.encode()
            ):
                raise FlowRejected(
                    4000006,
                    "The provided credentials are invalid, check for spelling mistakes in your"
                    " password or username, email address, or phone number.",
                )
            if identity_record.state != "active":
                raise FlowRejected(
                    4010011,
                    "This account has been disabled. Please contact support for assistance.",
                )
            if flow.refresh and current is not None and current[1].id == identity_record.id:
                session = current[0]
                moment = now()
                session.authenticated_at = moment
                session.methods.append(AuthenticationMethod("password", "aal1", moment))
                return session, identity_record
            return self._new_session(
                identity_record.id, "aal1", call.request, None
            ), identity_record

    def _complete_registration(
        self, call: Call, flow: FlowRecord, form: dict[str, str]
    ) -> tuple[SessionRecord, IdentityRecord]:
        email = form.get("traits.email", "").strip()
        password = form.get("password", "")
        for name, value in (("email", email), ("password", password)):
            if not value:
                raise FlowRejected(4000002, f"Property {name} is missing.")
        if "@" not in email:
            raise FlowRejected(4000001, f'"{email}" is not valid "email"')
        if len(password) < MIN_PASSWORD_LENGTH:
            raise FlowRejected(
                4000032,
                f"The password must be at least {MIN_PASSWORD_LENGTH} characters long,"
                f" but got {len(password)}.",
            )
        traits = {
            key.removeprefix("traits."): value
            for key, value in form.items()
            if key.startswith("traits.")
        }
        try:
            created = self.add_identity(email, password, traits=traits)
        except ValueError:
            raise FlowRejected(
                4000007,
                "An account with the same identifier (email, phone, username, ...) exists already.",
            ) from None
        with self._lock:
            session = self._new_session(created["id"], "aal1", call.request, None)
            return session, self._identities[created["id"]]

    @staticmethod
    def _submitted_fields(request: Request) -> dict[str, str]:
        """The submitted fields, flattened to form names (`traits.email`) whether form or JSON."""
        if request.mimetype != "application/json":
            return {key: value for key, value in request.form.items()}
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise KratosError(400, reason="Unable to decode JSON payload.")
        fields: dict[str, str] = {}
        for key, value in body.items():
            if isinstance(value, dict):
                fields.update({f"{key}.{k}": str(v) for k, v in value.items()})
            elif value is not None:
                fields[str(key)] = str(value)
        return fields

    # ----- logout -----

    def _logout_browser(self, call: Call) -> Response:
        return_to = self._checked_return_to(call, call.request.args.get("return_to", ""))
        _, token = self._credential(call.request)
        logout_token = random_token("ory_lo_")
        with self._lock:
            found = self._active_session(token)
            if found is None:
                raise session_inactive()
            self._logout_tokens[logout_token] = found[0].id
        query = {"token": logout_token}
        if return_to:
            query["return_to"] = return_to
        return json_response(
            {
                "logout_url": f"{call.base}/self-service/logout?{urlencode(query)}",
                "logout_token": logout_token,
            }
        )

    def _logout(self, call: Call) -> Response:
        logout_token = call.request.args.get("token", "")
        return_to = self._checked_return_to(call, call.request.args.get("return_to", ""))
        with self._lock:
            session_id = self._logout_tokens.pop(logout_token, None)
            if session_id is None:
                raise session_inactive()
            session = self._sessions.get(session_id)
            if session is not None:
                session.revoked = True
        if call.wants_json:
            response = Response(status=204)
            del response.headers["Content-Type"]
        else:
            response = redirect(return_to or self._default_return_url(call.base))
        response.headers.add(
            "Set-Cookie",
            go_cookie(
                self.cookie_name,
                "",
                expires=_EPOCH_PLUS_ONE,
                max_age=0,
                secure=self.secure_cookies,
            ),
        )
        return response

    def _logout_api(self, call: Call) -> Response:
        """`DELETE /self-service/logout/api` with `{"session_token": …}`: revoke it, 204."""
        token = self._submitted_fields(call.request).get("session_token", "")
        if not token:
            raise KratosError(400, reason="Property session_token is missing.")
        with self._lock:
            session = self._sessions.get(self._session_by_token.get(token, ""))
            if session is None or session.revoked:
                raise KratosError(
                    403,
                    reason="Unable to log out because the session token does not exist.",
                )
            session.revoked = True
        response = Response(status=204)
        del response.headers["Content-Type"]
        return response

    # ----- internals -----

    def _checked_return_to(self, call: Call, raw: str) -> str:
        """The return_to to honour: allowed → kept, no allow-list → dropped, refused → 400."""
        if not raw:
            return ""
        target = urljoin(call.base + "/", raw)
        parsed = urlsplit(target)
        host = parsed.netloc.rpartition("@")[2].lower()
        path = parsed.path or "/"
        for allowed in [*self.allowed_return_urls, call.base]:
            allowed_url = urlsplit(allowed)
            allowed_host = allowed_url.netloc.rpartition("@")[2].lower()
            host_matches = (
                host.endswith(allowed_host[1:])
                if allowed_host.startswith("*")
                else host == allowed_host
            )
            if (
                parsed.scheme.lower() == allowed_url.scheme.lower()
                and host_matches
                and path.startswith(allowed_url.path or "/")
            ):
                return target
        if not self.allowed_return_urls:
            return ""
        raise KratosError(
            400,
            error_id="self_service_flow_return_to_forbidden",
            reason=f"Requested return_to URL {json.dumps(raw)} is not allowed.",
        )

    def _flow(self, flow_id: str, kind: str) -> FlowRecord:
        with self._lock:
            flow = self._flows.get(flow_id)
        if flow is None or flow.kind != kind:
            raise KratosError(404, reason=f"The {kind} flow could not be found.")
        if flow.expires_at <= now():
            raise KratosError(
                410,
                error_id="self_service_flow_expired",
                reason=f"The {kind} flow has expired. Please start a new one.",
            )
        return flow
