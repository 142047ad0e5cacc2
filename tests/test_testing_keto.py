"""The Keto stand-in over HTTP: checks shaped like Keto's (openapi 200, plain 403), faults."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from ory_wsgi.testing.keto import FakeKeto


def call(url: str, body: Any = None) -> tuple[int, dict[str, Any], dict[str, str]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, json.loads(answer.read()), dict(answer.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), dict(error.headers)


def test_check_post_and_get_with_subject_ids_and_sets(fake_keto: FakeKeto) -> None:
    fake_keto.add("files", "doc-1", "view", subject_id="user:ada")
    fake_keto.add("files", "doc-2", "view", subject_set=("groups", "admins", "member"))
    fake_keto.add("groups", "admins", "member", subject_id="user:bob")
    url = fake_keto.url + "/relation-tuples/check/openapi"
    ada = {"namespace": "files", "object": "doc-1", "relation": "view", "subject_id": "user:ada"}
    assert call(url, ada)[:2] == (200, {"allowed": True})
    assert call(url, {**ada, "subject_id": "user:eve"})[:2] == (200, {"allowed": False})
    assert call(url, {**ada, "object": "doc-2", "subject_id": "user:bob"})[1] == {"allowed": True}
    admins = {"namespace": "groups", "object": "admins", "relation": "member"}
    assert call(url, {**ada, "object": "doc-2", "subject_id": None, "subject_set": admins})[1] == {
        "allowed": True
    }
    query = "?namespace=files&object=doc-1&relation=view&subject_id=user%3Aada"
    assert call(url + query)[:2] == (200, {"allowed": True})
    # The non-openapi route answers a denial with 403.
    plain = fake_keto.url + "/relation-tuples/check"
    assert call(plain, {**ada, "subject_id": "user:eve"})[:2] == (403, {"allowed": False})
    assert fake_keto.check_calls == 6


@pytest.mark.parametrize(
    "body",
    [
        {"namespace": "files", "object": "doc-1", "relation": "view"},
        {"namespace": "files", "object": "doc-1", "subject_id": "u"},
        {"namespace": "files", "object": "doc-1", "relation": "view", "subject_id": 5},
        [1, 2],
    ],
)
def test_malformed_checks_are_400_with_an_error_envelope(fake_keto: FakeKeto, body: Any) -> None:
    status, answer, _ = call(fake_keto.url + "/relation-tuples/check/openapi", body)
    assert status == 400
    assert answer["error"]["code"] == 400


def test_faults_answer_their_status_and_retry_after(fake_keto: FakeKeto) -> None:
    fake_keto.fail_checks(429, retry_after="7")
    body = {"namespace": "n", "object": "o", "relation": "r", "subject_id": "s"}
    status, _, headers = call(fake_keto.url + "/relation-tuples/check/openapi", body)
    assert status == 429 and headers["Retry-After"] == "7"
    fake_keto.reset()
    assert call(fake_keto.url + "/relation-tuples/check/openapi", body)[0] == 200
