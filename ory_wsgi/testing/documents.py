"""The stand-in's records and the JSON documents Kratos builds from them, in Kratos' key order."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from werkzeug.http import http_date

Document = dict[str, Any]

DEFAULT_SCHEMA_ID = "default"

# Go's encoding/json escapes these even inside strings; herodot keeps that default.
_GO_JSON_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)

DEFAULT_MESSAGES = {
    400: "The request was malformed or contained invalid parameters",
    401: "The request could not be authorized",
    403: "The requested action was forbidden",
    404: "The requested resource could not be found",
    405: "The requested method is not allowed",
    409: "The request could not be completed due to a conflict",
    410: "The requested resource is no longer available",
    429: "The request was rate limited",
    500: "An internal server error occurred, please contact the system administrator",
    502: "Bad Gateway",
    503: "The service is temporarily unavailable",
}


def go_json(document: Any) -> bytes:
    """Serialise like Go's json.Encoder: compact, HTML characters escaped, trailing newline."""
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
    return (text.translate(_GO_JSON_ESCAPES) + "\n").encode()


def rfc3339(moment: datetime) -> str:
    """A UTC time as Go's RFC3339Nano writes it: fractions without trailing zeros, then Z."""
    text = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"


def now() -> datetime:
    return datetime.now(UTC)


def schema_url(base: str, schema_id: str) -> str:
    encoded = base64.urlsafe_b64encode(schema_id.encode()).rstrip(b"=").decode()
    return f"{base}/schemas/{encoded}"


def go_cookie(
    name: str,
    value: str,
    *,
    expires: datetime,
    max_age: int,
    secure: bool,
) -> str:
    """A Set-Cookie value with attributes in the order Go's net/http writes them.

    `max_age` <= 0 clears the cookie (Go writes `Max-Age=0` for a negative MaxAge).
    """
    parts = [f"{name}={value}", "Path=/", f"Expires={http_date(expires)}"]
    parts.append(f"Max-Age={max(max_age, 0)}")
    parts.append("HttpOnly")
    if secure:
        parts.append("Secure")
    parts.append("SameSite=Lax")
    return "; ".join(parts)


class KratosError(Exception):
    """An error Kratos answers in its envelope (herodot's DefaultError)."""

    def __init__(
        self,
        status: int,
        *,
        error_id: str = "",
        reason: str = "",
        message: str = "",
        details: Document | None = None,
        redirect_browser_to: str = "",
    ) -> None:
        super().__init__(message or reason or DEFAULT_MESSAGES.get(status, ""))
        self.status = status
        self.error_id = error_id
        self.reason = reason
        self.message = message or DEFAULT_MESSAGES.get(status, HTTPStatus(status).phrase)
        self.details = details
        self.redirect_browser_to = redirect_browser_to

    def error_document(self, request_id: str = "") -> Document:
        error: Document = {}
        if self.error_id:
            error["id"] = self.error_id
        error["code"] = self.status
        error["status"] = HTTPStatus(self.status).phrase
        if request_id:
            error["request"] = request_id
        if self.reason:
            error["reason"] = self.reason
        if self.details is not None:
            error["details"] = self.details
        error["message"] = self.message
        return error

    def envelope(self, request_id: str = "") -> Document:
        document: Document = {"error": self.error_document(request_id)}
        if self.redirect_browser_to:
            document["redirect_browser_to"] = self.redirect_browser_to
        return document


@dataclass
class IdentityRecord:
    id: str
    email: str
    password: str
    traits: Document
    state: str
    created_at: datetime
    updated_at: datetime
    metadata_public: Any = None
    verified: bool = False
    address_id: str = ""
    recovery_address_id: str = ""
    totp_code: str | None = None


@dataclass
class AuthenticationMethod:
    method: str
    aal: str
    completed_at: datetime


@dataclass
class SessionRecord:
    id: str
    token: str
    identity_id: str
    aal: str
    methods: list[AuthenticationMethod]
    issued_at: datetime
    authenticated_at: datetime
    expires_at: datetime
    devices: list[Document] = field(default_factory=list)
    revoked: bool = False


@dataclass
class FlowRecord:
    id: str
    kind: str  # "login", "registration", "settings", "recovery" or "verification"
    type: str  # "browser" or "api"
    request_url: str
    return_to: str
    requested_aal: str
    refresh: bool
    csrf_token: str
    issued_at: datetime
    expires_at: datetime
    messages: list[Document] = field(default_factory=list)
    values: dict[str, str] = field(default_factory=dict)
    # Settings: whose account; recovery and verification: the address and the code sent to it.
    identity_id: str = ""
    state: str = "choose_method"
    email: str = ""
    code: str = ""
    attempts: int = 0
    continue_with: list[Document] = field(default_factory=list)


@dataclass(frozen=True)
class Mail:
    """A message the stand-in "sent": kept in memory and shown on its /ui/mail page."""

    id: str
    to: str
    subject: str
    body: str
    code: str
    sent_at: datetime


@dataclass
class StoredError:
    id: str
    error: Document
    created_at: datetime


def identity_document(identity: IdentityRecord, base: str) -> Document:
    document: Document = {
        "id": identity.id,
        "schema_id": DEFAULT_SCHEMA_ID,
        "schema_url": schema_url(base, DEFAULT_SCHEMA_ID),
        "state": identity.state,
        "traits": identity.traits,
    }
    created, updated = rfc3339(identity.created_at), rfc3339(identity.updated_at)
    if identity.email:
        address: Document = {
            "id": identity.address_id,
            "value": identity.email,
            "verified": identity.verified,
            "via": "email",
            "status": "completed" if identity.verified else "sent",
        }
        if identity.verified:
            address["verified_at"] = created
        address["created_at"] = created
        address["updated_at"] = updated
        document["verifiable_addresses"] = [address]
        document["recovery_addresses"] = [
            {
                "id": identity.recovery_address_id,
                "value": identity.email,
                "via": "email",
                "created_at": created,
                "updated_at": updated,
            }
        ]
    document["metadata_public"] = identity.metadata_public
    document["created_at"] = created
    document["updated_at"] = updated
    document["organization_id"] = None
    return document


def session_is_active(session: SessionRecord, identity: IdentityRecord, moment: datetime) -> bool:
    return not session.revoked and session.expires_at > moment and identity.state == "active"


def session_document(
    session: SessionRecord, identity: IdentityRecord, base: str, moment: datetime
) -> Document:
    return {
        "id": session.id,
        "active": session_is_active(session, identity, moment),
        "expires_at": rfc3339(session.expires_at),
        "authenticated_at": rfc3339(session.authenticated_at),
        "authenticator_assurance_level": session.aal,
        "authentication_methods": [
            {"method": m.method, "aal": m.aal, "completed_at": rfc3339(m.completed_at)}
            for m in session.methods
        ],
        "issued_at": rfc3339(session.issued_at),
        "identity": identity_document(identity, base),
        "devices": session.devices,
    }


def _input_node(
    group: str,
    name: str,
    input_type: str,
    *,
    value: str | None = None,
    required: bool = False,
    autocomplete: str = "",
    label: tuple[int, str] | None = None,
) -> Document:
    attributes: Document = {"name": name, "type": input_type}
    if value is not None:
        attributes["value"] = value
    if required:
        attributes["required"] = True
    if autocomplete:
        attributes["autocomplete"] = autocomplete
    attributes["disabled"] = False
    attributes["node_type"] = "input"
    meta: Document = {}
    if label is not None:
        meta["label"] = {"id": label[0], "text": label[1], "type": "info"}
    return {"type": "input", "group": group, "attributes": attributes, "messages": [], "meta": meta}


def _anchor_node(group: str, anchor_id: str, href: str, label: tuple[int, str]) -> Document:
    title = {"id": label[0], "text": label[1], "type": "info"}
    return {
        "type": "a",
        "group": group,
        "attributes": {"href": href, "title": title, "id": anchor_id, "node_type": "a"},
        "messages": [],
        "meta": {"label": title},
    }


def flow_nodes(flow: FlowRecord, identity: IdentityRecord | None = None) -> list[Document]:
    """The form of a flow as Kratos' UI nodes: what the HTML page renders, in order."""
    nodes: list[Document] = []
    if flow.type == "browser":
        nodes.append(
            _input_node("default", "csrf_token", "hidden", value=flow.csrf_token, required=True)
        )
    if flow.kind == "settings":
        return nodes + _settings_nodes(identity)
    if flow.kind in ("recovery", "verification"):
        return nodes + _code_nodes(flow)
    if flow.kind == "login" and flow.requested_aal == "aal2":
        nodes.append(
            _input_node(
                "totp",
                "totp_code",
                "text",
                required=True,
                autocomplete="one-time-code",
                label=(1070006, "Authentication code"),
            )
        )
        nodes.append(
            _input_node(
                "totp", "method", "submit", value="totp", label=(1010009, "Use Authenticator")
            )
        )
        return nodes
    if flow.kind == "login":
        nodes.append(
            _input_node(
                "default",
                "identifier",
                "text",
                value=flow.values.get("identifier", ""),
                required=True,
                # Kratos' enum value (the SDKs reject a bare "username").
                autocomplete="username webauthn",
                label=(1070004, "ID"),
            )
        )
        submit_label = (1010001, "Sign in")
    else:
        nodes.append(
            _input_node(
                "password",
                "traits.email",
                "email",
                value=flow.values.get("traits.email", ""),
                required=True,
                autocomplete="email",
                label=(1070002, "E-Mail"),
            )
        )
        submit_label = (1040001, "Sign up")
    nodes.append(
        _input_node(
            "password",
            "password",
            "password",
            required=True,
            autocomplete="current-password" if flow.kind == "login" else "new-password",
            label=(1070001, "Password"),
        )
    )
    nodes.append(_input_node("password", "method", "submit", value="password", label=submit_label))
    return nodes


def _settings_nodes(identity: IdentityRecord | None) -> list[Document]:
    email = identity.email if identity is not None else ""
    return [
        _input_node(
            "profile",
            "traits.email",
            "email",
            value=email,
            required=True,
            autocomplete="email",
            label=(1070002, "E-Mail"),
        ),
        _input_node("profile", "method", "submit", value="profile", label=(1070003, "Save")),
        _input_node(
            "password",
            "password",
            "password",
            required=True,
            autocomplete="new-password",
            label=(1070001, "Password"),
        ),
        _input_node("password", "method", "submit", value="password", label=(1070003, "Save")),
    ]


def _code_nodes(flow: FlowRecord) -> list[Document]:
    if flow.state == "passed_challenge":
        return [
            _anchor_node("code", "continue", flow.values.get("continue", ""), (1070009, "Continue"))
        ]
    if flow.state == "sent_email":
        code_label = (
            (1070010, "Recovery code")
            if flow.kind == "recovery"
            else (1070011, "Verification code")
        )
        return [
            _input_node("code", "code", "text", required=True, label=code_label),
            _input_node("code", "method", "hidden", value="code"),
            _input_node("code", "method", "submit", value="code", label=(1070005, "Submit")),
        ]
    return [
        _input_node(
            "code",
            "email",
            "email",
            value=flow.values.get("email", ""),
            required=True,
            autocomplete="email",
            label=(1070007, "Email"),
        ),
        _input_node("code", "method", "submit", value="code", label=(1070005, "Submit")),
    ]


def flow_document(flow: FlowRecord, base: str, identity: IdentityRecord | None = None) -> Document:
    """A flow as Kratos answers it; a settings flow needs its `identity`."""
    if flow.kind in ("settings", "recovery", "verification"):
        return _account_flow_document(flow, base, identity)
    document: Document = {
        "id": flow.id,
        "organization_id": None,
        "type": flow.type,
        "expires_at": rfc3339(flow.expires_at),
        "issued_at": rfc3339(flow.issued_at),
        "request_url": flow.request_url,
    }
    if flow.return_to:
        document["return_to"] = flow.return_to
    ui: Document = {
        "action": f"{base}/self-service/{flow.kind}?flow={flow.id}",
        "method": "POST",
        "nodes": flow_nodes(flow),
    }
    if flow.messages:
        ui["messages"] = flow.messages
    document["ui"] = ui
    if flow.kind == "login":
        # Kratos' registration flow keeps its timestamps out of the JSON; the login flow not.
        document["created_at"] = rfc3339(flow.issued_at)
        document["updated_at"] = rfc3339(flow.issued_at)
        document["refresh"] = flow.refresh
        document["requested_aal"] = flow.requested_aal
    document["state"] = "choose_method"
    return document


def _account_flow_document(
    flow: FlowRecord, base: str, identity: IdentityRecord | None
) -> Document:
    document: Document = {
        "id": flow.id,
        "type": flow.type,
        "expires_at": rfc3339(flow.expires_at),
        "issued_at": rfc3339(flow.issued_at),
        "request_url": flow.request_url,
    }
    if flow.return_to:
        document["return_to"] = flow.return_to
    if flow.kind != "settings":
        document["active"] = "code"
    ui: Document = {
        "action": f"{base}/self-service/{flow.kind}?flow={flow.id}",
        "method": "POST",
        "nodes": flow_nodes(flow, identity),
    }
    if flow.messages:
        ui["messages"] = flow.messages
    document["ui"] = ui
    if flow.kind == "settings" and identity is not None:
        document["identity"] = identity_document(identity, base)
    document["state"] = flow.state
    if flow.continue_with:
        document["continue_with"] = flow.continue_with
    return document


def schema_document(base: str) -> Document:
    """The identity schema every stand-in identity uses: an email identifier and a password."""
    return {
        "$id": schema_url(base, DEFAULT_SCHEMA_ID),
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Person",
        "type": "object",
        "properties": {
            "traits": {
                "type": "object",
                "properties": {
                    "email": {
                        "type": "string",
                        "format": "email",
                        "title": "E-Mail",
                        "ory.sh/kratos": {
                            "credentials": {"password": {"identifier": True}},
                            "verification": {"via": "email"},
                            "recovery": {"via": "email"},
                        },
                    }
                },
                "required": ["email"],
                "additionalProperties": True,
            }
        },
    }
