"""Checks a JSON document against an Ory SDK's model, field by field.

The SDKs (`ory_kratos_client`, `ory_client`) are generated from Kratos' published OpenAPI
document; their pydantic models are that schema in Python. Deserialising checks the types,
enums and required fields, but it keeps any key the schema does not know in
`additional_properties` without complaint; `unknown_fields` walks the deserialised model and
reports those keys, so a field the stand-in invents (or misspells) fails too. Nothing of the
schema is copied here: the walk reads each model's `model_fields` and its oneOf wrappers'
`actual_instance`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import ModuleType, SimpleNamespace
from typing import Any

from pydantic import BaseModel

# The error envelope's keys; the 403 session_aal2_required and the 422
# browser_location_change_required repeat `redirect_browser_to` beside `error` (KRATOS.md).
ENVELOPE_KEYS = frozenset({"error", "redirect_browser_to"})


def unknown_fields(value: Any, path: str = "$") -> Iterator[str]:
    """Paths of the keys in a deserialised SDK value that its models do not declare."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            yield from unknown_fields(item, f"{path}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            yield from unknown_fields(item, f"{path}.{key}")
        return
    if not isinstance(value, BaseModel):
        return
    if "actual_instance" in type(value).model_fields:  # a oneOf wrapper: the chosen schema
        yield from unknown_fields(value.actual_instance, path)
        return
    model = type(value).__name__
    for key in getattr(value, "additional_properties", None) or {}:
        yield f"{path}.{key} (not in {model})"
    for name in type(value).model_fields:
        if name != "additional_properties":
            yield from unknown_fields(getattr(value, name), f"{path}.{name}")


def parse(sdk: ModuleType, model: str, body: bytes | str | Any) -> Any:
    """`body` (JSON text, or already decoded) as the SDK's `model` (a name, `List[Session]`
    for a list); fails on a type the model refuses or a field it does not declare."""
    document = json.loads(body) if isinstance(body, bytes | str) else body
    if model == "ErrorGeneric":
        return parse_error(sdk, document)
    if model.startswith("List[") and model.endswith("]"):
        assert isinstance(document, list), f"{model}: expected a JSON array, got {document!r}"
        return [parse(sdk, model[5:-1], item) for item in document]
    parsed = getattr(sdk, model).from_dict(document)
    assert parsed is not None, f"{model}: nothing parsed from {document!r}"
    unknown = list(unknown_fields(parsed))
    assert not unknown, f"{model}: fields the SDK's schema does not have: {unknown}"
    return parsed


def parse_error(sdk: ModuleType, document: Any) -> SimpleNamespace:
    """Kratos' error envelope (herodot): `{"error": GenericError, "redirect_browser_to"?}`.

    Checked through `GenericError`, which both SDKs carry. Their envelope models cannot
    describe it: `ory_client`'s `ErrorGeneric` is Hydra's OAuth2 error (`error`,
    `error_description`), a name its Kratos operations share, and both SDKs'
    `ErrorBrowserLocationChangeRequired` nest an `ErrorGeneric` inside `error` once too often.
    """
    assert isinstance(document, dict) and set(document) <= ENVELOPE_KEYS, document
    error = parse(sdk, "GenericError", document["error"])
    redirect = document.get("redirect_browser_to")
    assert redirect is None or isinstance(redirect, str), document
    return SimpleNamespace(error=error, redirect_browser_to=redirect)
