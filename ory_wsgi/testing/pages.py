"""Plain HTML pages of the stand-in's UI (no JavaScript): the flow forms, welcome and error."""

from __future__ import annotations

from html import escape
from typing import Any

from ory_wsgi.testing.documents import Document, Mail, rfc3339

_STYLE = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;background:#f5f6f8;"
    "color:#1d2330;margin:0;padding:3rem 1rem;line-height:1.45}"
    "main{max-width:28rem;margin:0 auto;background:#fff;border:1px solid #e1e4ea;"
    "border-radius:10px;padding:1.5rem 2rem;box-shadow:0 1px 3px rgba(0,0,0,.06)}"
    "h1{font-size:1.4rem;margin:0 0 1rem}h2{font-size:1.1rem}"
    "label{display:block;margin:.9rem 0 .3rem;font-weight:600;font-size:.9rem}"
    "input{width:100%;padding:.55rem .6rem;box-sizing:border-box;border:1px solid #c6cbd4;"
    "border-radius:6px;font:inherit}"
    "button{margin-top:1.2rem;padding:.6rem 1.2rem;border:0;border-radius:6px;"
    "background:#3b5bdb;color:#fff;font:inherit;font-weight:600;cursor:pointer;width:100%}"
    "a{color:#3b5bdb}.hint{background:#eef2ff;border:1px solid #c7d2fe;border-radius:6px;"
    "padding:.6rem .8rem;font-size:.92rem}.error{color:#b00020}.success{color:#1b5e20}"
    "pre{overflow:auto;white-space:pre-wrap}"
    "form+form{margin-top:1.5rem;padding-top:.5rem;border-top:1px solid #e1e4ea}"
)


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(title)}</title>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<style>{_STYLE}</style></head>\n<body><main>\n<h1>{escape(title)}</h1>\n{body}\n"
        "</main></body></html>\n"
    )


def _messages(messages: list[Document]) -> str:
    return "".join(
        f'<p class={escape(str(m.get("type", "info")))} data-id="{m.get("id", "")}">'
        f"{escape(str(m.get('text', '')))}</p>\n"
        for m in messages
    )


def _node(node: Document) -> str:
    attributes: dict[str, Any] = node["attributes"]
    if node.get("type") == "a":
        title = attributes.get("title", {}).get("text", "")
        return f'<p><a href="{escape(str(attributes["href"]))}">{escape(str(title))}</a></p>\n'
    name, input_type = attributes["name"], attributes["type"]
    label = node.get("meta", {}).get("label", {}).get("text", name)
    value = attributes.get("value")
    if input_type == "submit":
        return (
            f'<button type=submit name="{escape(name)}" value="{escape(str(value or ""))}">'
            f"{escape(label)}</button>\n"
        )
    value_html = f' value="{escape(str(value))}"' if value not in (None, "") else ""
    required = " required" if attributes.get("required") else ""
    autocomplete = attributes.get("autocomplete")
    extra = f' autocomplete="{escape(autocomplete)}"' if autocomplete else ""
    field = (
        f'<input type="{escape(input_type)}" name="{escape(name)}"{value_html}{required}{extra}>'
    )
    if input_type == "hidden":
        return field + "\n"
    field_id = "field-" + name.replace(".", "-")
    field = field.replace("<input ", f'<input id="{field_id}" ', 1)
    return f'<label for="{field_id}">{escape(label)}</label>{field}\n' + _messages(node["messages"])


def flow_page(title: str, flow: Document, links: list[tuple[str, str]], *, hint: str = "") -> str:
    """A flow's forms, posting to its ui.action: one form per method group (settings has two,
    profile and password, each with the shared `default` nodes such as the CSRF token)."""
    ui = flow["ui"]
    nodes: list[Document] = ui["nodes"]
    shared = [node for node in nodes if node["group"] == "default"]
    groups: dict[str, list[Document]] = {}
    for node in nodes:
        if node["group"] != "default":
            groups.setdefault(node["group"], []).append(node)
    separate = len(groups) > 1
    form = ""
    for members in groups.values() if separate else [nodes]:
        inputs = [node for node in members if node.get("type") == "input"]
        fields = "".join(_node(node) for node in (shared + members if separate else members))
        if not inputs:
            form += fields
            continue
        form += (
            f'<form method="{escape(ui["method"])}" action="{escape(ui["action"])}">\n'
            f"{fields}</form>\n"
        )
    footer = "".join(
        f'<p><a href="{escape(href)}">{escape(text)}</a></p>\n' for text, href in links
    )
    intro = f"<p class=hint>{escape(hint)}</p>\n" if hint else ""
    return _page(title, intro + _messages(ui.get("messages", [])) + form + footer)


def welcome_page(session: Document | None, links: list[tuple[str, str]]) -> str:
    if session is None:
        status = "<p>You are not signed in.</p>\n"
    else:
        email = session["identity"]["traits"].get("email", session["identity"]["id"])
        status = (
            f"<p>Signed in as <strong>{escape(str(email))}</strong> "
            f"({escape(session['authenticator_assurance_level'])}).</p>\n"
        )
    footer = "".join(
        f'<p><a href="{escape(href)}">{escape(text)}</a></p>\n' for text, href in links
    )
    return _page("Welcome", status + footer)


def error_page(error: Document | None, home: str) -> str:
    if error is None:
        body = "<p>This error is unknown or has expired.</p>\n"
    else:
        detail = error.get("reason") or error.get("message", "")
        body = (
            f'<p class=error data-id="{escape(str(error.get("id", "")))}">'
            f"{error.get('code', '')} {escape(str(error.get('status', '')))}: "
            f"{escape(str(detail))}</p>\n"
        )
    return _page("Error", body + f'<p><a href="{escape(home)}">Back</a></p>\n')


def mail_page(mails: list[Mail], home: str) -> str:
    """The local mailbox: what the stand-in would have sent, newest first (never really sent)."""
    if not mails:
        body = "<p>No mail yet. Recovery and verification codes appear here.</p>\n"
    else:
        body = "".join(
            f'<article data-to="{escape(mail.to)}"><h2>{escape(mail.subject)}</h2>'
            f"<p>To {escape(mail.to)}, {escape(rfc3339(mail.sent_at))}</p>"
            f"<p>{escape(mail.body)}</p><p>Code: <code>{escape(mail.code)}</code></p></article>\n"
            for mail in mails
        )
    return _page("Local mailbox", body + f'<p><a href="{escape(home)}">Back</a></p>\n')
