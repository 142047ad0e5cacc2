"""request_methods: every method a request claims, from the request line and override headers."""

from __future__ import annotations

from typing import Any

import pytest

from ory_wsgi.overrides import request_methods


@pytest.mark.parametrize(
    ("headers", "methods"),
    [
        ({}, ("GET",)),
        ({"HTTP_X_HTTP_METHOD_OVERRIDE": "DELETE"}, ("GET", "DELETE")),
        ({"HTTP_X_HTTP_METHOD": "PUT"}, ("GET", "PUT")),
        ({"HTTP_X_METHOD_OVERRIDE": "PATCH"}, ("GET", "PATCH")),
        ({"HTTP_X_HTTP_METHOD_OVERRIDE": "POST, DELETE"}, ("GET", "POST", "DELETE")),
        ({"HTTP_X_HTTP_METHOD_OVERRIDE": " ,DELETE,, "}, ("GET", "DELETE")),
        (
            {"HTTP_X_HTTP_METHOD_OVERRIDE": "PUT", "HTTP_X_METHOD_OVERRIDE": "DELETE"},
            ("GET", "PUT", "DELETE"),
        ),
    ],
)
def test_every_claimed_method_counts(headers: dict[str, Any], methods: tuple[str, ...]) -> None:
    assert request_methods({"REQUEST_METHOD": "GET", **headers}) == methods
