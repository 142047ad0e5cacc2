"""The stand-in's /sessions/whoami endpoint, its call counters and its fault injection."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlencode

from werkzeug.wrappers import Response

from ory_wsgi.testing.documents import KratosError, now, session_document
from ory_wsgi.testing.responses import (
    JSON_TYPE,
    SESSION_CACHE_CONTROL,
    Call,
    json_response,
    whoami_unauthorized,
)
from ory_wsgi.testing.store import Fault, KratosStore, LoggedRequest, token_from_cookie


class WhoamiEndpoint(KratosStore):
    """Answers whoami like Kratos; counts the calls and fails on demand."""

    # ----- counters, request log and faults -----

    @property
    def whoami_calls(self) -> int:
        with self._lock:
            return self._whoami_total

    @property
    def whoami_calls_by_kind(self) -> dict[str, int]:
        """Whoami calls by the credential that won: token, cookie, bearer or none."""
        with self._lock:
            return dict(self._whoami_by_kind)

    def whoami_calls_for(self, credential: str) -> int:
        """Whoami calls that presented this session token (or this session cookie value)."""
        token = token_from_cookie(credential) if not credential.startswith("ory_st_") else None
        with self._lock:
            return self._whoami_by_token[token or credential]

    @property
    def request_log(self) -> list[LoggedRequest]:
        """The last 1000 requests, oldest first."""
        with self._lock:
            return list(self._request_log)

    def reset_counters(self) -> None:
        """Zero the whoami counters and empty the request log."""
        with self._lock:
            self._whoami_total = 0
            self._whoami_by_kind.clear()
            self._whoami_by_token.clear()
            self._request_log.clear()

    def fail_whoami(
        self, status: int = 500, *, times: int | None = None, retry_after: str = ""
    ) -> None:
        """Whoami answers `status` in the error envelope (`times` calls, or until heal)."""
        self._set_fault(Fault("status", status, times, retry_after))

    def fail_next(self, status: int = 500) -> None:
        """The next whoami call only answers `status`."""
        self.fail_whoami(status, times=1)

    def garble_whoami(self, *, times: int | None = None) -> None:
        """Whoami answers 200 with a body that is not JSON."""
        self._set_fault(Fault("garbage", 200, times))

    def drop_whoami(self, *, times: int | None = None) -> None:
        """Whoami closes the connection without answering."""
        self._set_fault(Fault("close", 0, times))

    def heal(self) -> None:
        """Remove any whoami fault and delay."""
        with self._lock:
            self._fault = None
            self.whoami_delay = 0.0

    def _set_fault(self, fault: Fault) -> None:
        with self._lock:
            self._fault = fault

    def _take_fault(self) -> Fault | None:
        fault = self._fault
        if fault is None:
            return None
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._fault = None
        return fault

    # ----- whoami -----

    def _whoami(self, call: Call) -> Response:
        kind, token = self._credential(call.request)
        with self._lock:
            self._whoami_total += 1
            self._whoami_by_kind[kind] += 1
            if token is not None:
                self._whoami_by_token[token] += 1
            fault = self._take_fault()
            delay = self.whoami_delay
        if delay > 0:
            time.sleep(delay)
        if fault is not None:
            return self._faulty_whoami(call, fault)
        with self._lock:
            found = self._active_session(token)
            if found is None:
                raise whoami_unauthorized()
            session, identity = found
            if identity.totp_code is not None and session.aal == "aal1":
                raise self._aal2_required(call)
            document = session_document(session, identity, call.base, now())
        if "tokenize_as" in call.request.args:
            raise KratosError(
                400,
                reason="Unable to tokenize the session: the template does not exist.",
            )
        response = json_response(document)
        response.headers["X-Kratos-Authenticated-Identity-Id"] = identity.id
        response.headers["Cache-Control"] = SESSION_CACHE_CONTROL
        return response

    def _aal2_required(self, call: Call) -> KratosError:
        target = f"{call.base}/self-service/login/browser?aal=aal2"
        return_to = call.request.args.get("return_to", "")
        if return_to:
            target += "&" + urlencode({"return_to": return_to})
        return KratosError(
            403,
            error_id="session_aal2_required",
            reason=(
                "An active session was found but it does not fulfill the requested Authenticator"
                " Assurance Level. Please verify yourself with a second factor to resolve this"
                " issue."
            ),
            details={"redirect_browser_to": target},
            message="Session does not fulfill the requested Authenticator Assurance Level",
            redirect_browser_to=target,
        )

    def _faulty_whoami(self, call: Call, fault: Fault) -> Response:
        if fault.kind == "close":
            connection = call.request.environ.get("werkzeug.socket") or call.request.environ.get(
                "gunicorn.socket"
            )
            if connection is not None:
                connection.shutdown(socket.SHUT_RDWR)
            raise ConnectionResetError("whoami dropped the connection on purpose")
        if fault.kind == "garbage":
            return Response(b"<html>this is not JSON", status=200, content_type=JSON_TYPE)
        response = self._error_response(call, KratosError(fault.status), False)
        if fault.retry_after:
            response.headers["Retry-After"] = fault.retry_after
        return response
