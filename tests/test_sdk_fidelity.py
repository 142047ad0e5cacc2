"""Ory's own Python SDKs against the Kratos stand-in, directly and through the proxy's `/.ory`.

Both official SDKs (`ory_kratos_client` for self-hosted Kratos, `ory_client` for Ory Network;
versions pinned in the `test` extra) drive every self-service flow the stand-in offers. Each
answer is deserialised by the SDK and then checked field by field against its models
(`sdk_models.parse`): a field the schema lacks, a wrong type or enum, or a missing required
field fails the suite. Mail is not sent: codes are read from the stand-in's /ui/mail page.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests
from ory_flows import PASSWORD
from sdk_models import parse
from servers import Gunicorn, ThreadedServer, free_port

from ory_wsgi.testing import FakeKratos, FakeKratosServer

SDKS = ("ory_kratos_client", "ory_client")


@pytest.fixture(scope="module")
def sdk_proxy(
    fake_ory_server: FakeKratosServer,
    upstream: ThreadedServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gunicorn]:
    """One proxy for the module, in front of the test upstream, with the stand-in as its Ory."""
    directory = tmp_path_factory.mktemp("sdk-proxy")
    config = directory / "ory.toml"
    port = free_port()
    config.write_text(
        f'[proxy]\nupstream = "{upstream.url}"\npublic_url = "http://127.0.0.1:{port}"\n'
        f'[ory]\nsdk_url = "{fake_ory_server.url}"\n'
    )
    server = Gunicorn(f'ory_wsgi:make_app("{config}")', cwd=directory, port=port)
    yield server
    server.stop()


class Ory:
    """One SDK pointed at one Ory URL: its FrontendApi, its models, and a cookie jar."""

    def __init__(self, sdk: ModuleType, url: str) -> None:
        self.sdk = sdk
        self.url = url
        self.api = sdk.FrontendApi(sdk.ApiClient(sdk.Configuration(host=url)))
        self.jar: dict[str, str] = {}

    @property
    def cookie(self) -> str:
        return "; ".join(f"{name}={value}" for name, value in self.jar.items())

    def call(self, operation: str, model: str | None, *args: Any, **kwargs: Any) -> Any:
        """Call `operation`, keep its cookies, check its answer against `model`; its data."""
        answer = getattr(self.api, f"{operation}_with_http_info")(*args, **kwargs)
        self.keep_cookies(answer.headers)
        if model is None:
            assert answer.data is None and not answer.raw_data.strip()
            return None
        parse(self.sdk, model, answer.raw_data)
        return answer.data

    def refused(self, status: int, model: str, operation: str, *args: Any, **kwargs: Any) -> Any:
        """Call `operation` expecting an error status; its body parsed as `model`."""
        with pytest.raises(self.sdk.ApiException) as caught:
            getattr(self.api, operation)(*args, **kwargs)
        assert caught.value.status == status, caught.value.body
        return parse(self.sdk, model, caught.value.body)

    def keep_cookies(self, headers: Any) -> None:
        values = headers.getlist("Set-Cookie") if hasattr(headers, "getlist") else []
        if not values and headers and headers.get("Set-Cookie"):
            values = [headers["Set-Cookie"]]
        for value in values:
            for name, morsel in SimpleCookie(value).items():
                if morsel["max-age"] == "0":
                    self.jar.pop(name, None)
                else:
                    self.jar[name] = morsel.value

    def csrf(self, flow: Any) -> str:
        return next(
            node.attributes.actual_instance.value
            for node in flow.ui.nodes
            if getattr(node.attributes.actual_instance, "name", "") == "csrf_token"
        )

    def mailed_code(self, email: str) -> str:
        """The newest code for `email` on the stand-in's mail page (a user reading the mail)."""
        page = requests.get(f"{self.url}/ui/mail", timeout=5)
        assert page.status_code == 200
        match = re.search(
            rf'data-to="{re.escape(email)}">.*?<code>(\d{{6}})</code>', page.text, re.S
        )
        assert match, page.text
        return match.group(1)


@pytest.fixture(params=["direct", "proxy"])
def via(request: pytest.FixtureRequest, fake_ory: FakeKratos) -> str:
    """Where the SDK is pointed: the stand-in itself, or the proxy's `/.ory`."""
    if request.param == "direct":
        return fake_ory.url
    proxy: Gunicorn = request.getfixturevalue("sdk_proxy")
    return f"{proxy.url}/.ory"


@pytest.fixture(params=SDKS)
def ory(request: pytest.FixtureRequest, via: str) -> Ory:
    return Ory(importlib.import_module(request.param), via)


def texts(flow: Any) -> list[int]:
    return [message.id for message in flow.ui.messages or []]


def native_login(ory: Ory, email: str, password: str) -> Any:
    flow = ory.call("create_native_login_flow", "LoginFlow")
    body = ory.sdk.UpdateLoginFlowBody(
        ory.sdk.UpdateLoginFlowWithPasswordMethod(
            method="password", identifier=email, password=password
        )
    )
    return ory.call("update_login_flow", "SuccessfulNativeLogin", str(flow.id), body)


def test_native_registration_login_sessions_and_logout(ory: Ory, fake_ory: FakeKratos) -> None:
    sdk = ory.sdk
    flow = ory.call("create_native_registration_flow", "RegistrationFlow")
    assert flow.type == "api" and flow.ui.action.startswith(ory.url)
    body = sdk.UpdateRegistrationFlowBody(
        sdk.UpdateRegistrationFlowWithPasswordMethod(
            method="password", password=PASSWORD, traits={"email": "ada@example.com"}
        )
    )
    registered = ory.call(
        "update_registration_flow", "SuccessfulNativeRegistration", str(flow.id), body
    )
    assert registered.identity.traits["email"] == "ada@example.com"
    assert registered.identity.schema_url.startswith(ory.url + "/schemas/")
    first = registered.session_token

    flow = ory.call("create_native_login_flow", "LoginFlow")
    wrong = sdk.UpdateLoginFlowBody(
        sdk.UpdateLoginFlowWithPasswordMethod(
            method="password", identifier="ada@example.com", password="wrong password"
        )
    )
    refused = ory.refused(400, "LoginFlow", "update_login_flow", str(flow.id), wrong)
    assert texts(refused) == [4000006]
    second = native_login(ory, "ada@example.com", PASSWORD).session_token

    session = ory.call("to_session", "Session", x_session_token=second)
    assert session.active and session.identity.traits["email"] == "ada@example.com"
    others = ory.call("list_my_sessions", "List[Session]", x_session_token=second)
    assert [s.id for s in others] == [ory.call("to_session", "Session", x_session_token=first).id]
    revoked = ory.call("disable_my_other_sessions", "DeleteMySessionsCount", x_session_token=second)
    assert revoked.count == 1
    ory.refused(401, "ErrorGeneric", "to_session", x_session_token=first)

    ory.call(
        "perform_native_logout",
        None,
        sdk.PerformNativeLogoutBody(session_token=second),
    )
    error = ory.refused(401, "ErrorGeneric", "to_session", x_session_token=second)
    assert error.error.code == 401 and error.error.reason
    ory.refused(
        403,
        "ErrorGeneric",
        "perform_native_logout",
        sdk.PerformNativeLogoutBody(session_token=second),
    )


def test_browser_registration_logout_and_login(ory: Ory, fake_ory: FakeKratos) -> None:
    sdk = ory.sdk
    flow = ory.call("create_browser_registration_flow", "RegistrationFlow")
    assert flow.type == "browser" and any(name.startswith("csrf_token_") for name in ory.jar)
    body = sdk.UpdateRegistrationFlowBody(
        sdk.UpdateRegistrationFlowWithPasswordMethod(
            method="password",
            password=PASSWORD,
            traits={"email": "grace@example.com"},
            csrf_token=ory.csrf(flow),
        )
    )
    ory.call(
        "update_registration_flow",
        "SuccessfulNativeRegistration",
        str(flow.id),
        body,
        cookie=ory.cookie,
    )
    assert "ory_kratos_session" in ory.jar
    assert ory.call("to_session", "Session", cookie=ory.cookie).identity.traits == {
        "email": "grace@example.com"
    }

    logout = ory.call("create_browser_logout_flow", "LogoutFlow", cookie=ory.cookie)
    assert logout.logout_url.startswith(f"{ory.url}/self-service/logout?token=")
    ory.call("update_logout_flow", None, token=logout.logout_token, cookie=ory.cookie)
    assert "ory_kratos_session" not in ory.jar
    ory.refused(401, "ErrorGeneric", "to_session", cookie=ory.cookie)

    flow = ory.call("create_browser_login_flow", "LoginFlow", cookie=ory.cookie)
    body = sdk.UpdateLoginFlowBody(
        sdk.UpdateLoginFlowWithPasswordMethod(
            method="password",
            identifier="grace@example.com",
            password=PASSWORD,
            csrf_token=ory.csrf(flow),
        )
    )
    ory.call("update_login_flow", "SuccessfulNativeLogin", str(flow.id), body, cookie=ory.cookie)
    assert ory.call("to_session", "Session", cookie=ory.cookie).active


def test_second_factor_step_up(ory: Ory, fake_ory: FakeKratos) -> None:
    sdk = ory.sdk
    identity = fake_ory.add_identity("ada@example.com", PASSWORD)
    fake_ory.require_aal2(identity["id"], "424242")
    token = native_login(ory, "ada@example.com", PASSWORD).session_token
    error = ory.refused(403, "ErrorGeneric", "to_session", x_session_token=token)
    assert error.error.id == "session_aal2_required"

    flow = ory.call("create_native_login_flow", "LoginFlow", aal="aal2", x_session_token=token)
    assert flow.requested_aal == "aal2"
    totp = sdk.UpdateLoginFlowBody(
        sdk.UpdateLoginFlowWithTotpMethod(method="totp", totp_code="000000")
    )
    refused = ory.refused(
        400, "LoginFlow", "update_login_flow", str(flow.id), totp, x_session_token=token
    )
    assert texts(refused) == [4000008]
    totp = sdk.UpdateLoginFlowBody(
        sdk.UpdateLoginFlowWithTotpMethod(method="totp", totp_code="424242")
    )
    ory.call(
        "update_login_flow", "SuccessfulNativeLogin", str(flow.id), totp, x_session_token=token
    )
    session = ory.call("to_session", "Session", x_session_token=token)
    assert session.authenticator_assurance_level == "aal2"
    assert [m.method for m in session.authentication_methods] == ["password", "totp"]


def test_settings_change_a_trait_and_the_password(ory: Ory, fake_ory: FakeKratos) -> None:
    sdk = ory.sdk
    fake_ory.add_identity("ada@example.com", PASSWORD, traits={"name": "Ada"})
    token = native_login(ory, "ada@example.com", PASSWORD).session_token
    flow = ory.call("create_native_settings_flow", "SettingsFlow", x_session_token=token)
    assert flow.identity.traits["email"] == "ada@example.com" and flow.state == "show_form"

    profile = sdk.UpdateSettingsFlowBody(
        sdk.UpdateSettingsFlowWithProfileMethod(
            method="profile", traits={"email": "ada@lovelace.org", "name": "Ada"}
        )
    )
    saved = ory.call(
        "update_settings_flow", "SettingsFlow", str(flow.id), profile, x_session_token=token
    )
    assert saved.state == "success" and texts(saved) == [1050001]
    assert saved.identity.traits == {"email": "ada@lovelace.org", "name": "Ada"}

    short = sdk.UpdateSettingsFlowBody(
        sdk.UpdateSettingsFlowWithPasswordMethod(method="password", password="short")
    )
    refused = ory.refused(
        400, "SettingsFlow", "update_settings_flow", str(flow.id), short, x_session_token=token
    )
    assert texts(refused) == [4000032]
    new = sdk.UpdateSettingsFlowBody(
        sdk.UpdateSettingsFlowWithPasswordMethod(method="password", password="a new passphrase")
    )
    ory.call("update_settings_flow", "SettingsFlow", str(flow.id), new, x_session_token=token)
    assert native_login(ory, "ada@lovelace.org", "a new passphrase").session.active
    flow = ory.call("create_native_login_flow", "LoginFlow")
    old = sdk.UpdateLoginFlowBody(
        sdk.UpdateLoginFlowWithPasswordMethod(
            method="password", identifier="ada@lovelace.org", password=PASSWORD
        )
    )
    ory.refused(400, "LoginFlow", "update_login_flow", str(flow.id), old)
    ory.refused(401, "ErrorGeneric", "create_native_settings_flow")


def test_settings_need_a_recent_sign_in_for_the_password(ory: Ory, fake_ory: FakeKratos) -> None:
    sdk = ory.sdk
    fake_ory.add_identity("ada@example.com", PASSWORD, traits={"name": "Ada"})
    token = native_login(ory, "ada@example.com", PASSWORD).session_token
    fake_ory.age_session(token, 16 * 60)
    flow = ory.call("create_native_settings_flow", "SettingsFlow", x_session_token=token)
    new = sdk.UpdateSettingsFlowBody(
        sdk.UpdateSettingsFlowWithPasswordMethod(method="password", password="a new passphrase")
    )
    refused = ory.refused(
        403, "ErrorGeneric", "update_settings_flow", str(flow.id), new, x_session_token=token
    )
    assert refused.error.id == "session_refresh_required"
    assert "refresh=true" in refused.redirect_browser_to
    name = sdk.UpdateSettingsFlowBody(
        sdk.UpdateSettingsFlowWithProfileMethod(
            method="profile", traits={"email": "ada@example.com", "name": "Countess"}
        )
    )
    saved = ory.call(
        "update_settings_flow", "SettingsFlow", str(flow.id), name, x_session_token=token
    )
    assert saved.identity.traits["name"] == "Countess"


def test_recovery_and_verification_with_mailed_codes(ory: Ory, fake_ory: FakeKratos) -> None:
    sdk = ory.sdk
    fake_ory.add_identity("ada@example.com", PASSWORD)
    flow = ory.call("create_native_recovery_flow", "RecoveryFlow")
    email = sdk.UpdateRecoveryFlowBody(
        sdk.UpdateRecoveryFlowWithCodeMethod(method="code", email="ada@example.com")
    )
    sent = ory.call("update_recovery_flow", "RecoveryFlow", str(flow.id), email)
    assert sent.state == "sent_email" and texts(sent) == [1060003]
    wrong = sdk.UpdateRecoveryFlowBody(
        sdk.UpdateRecoveryFlowWithCodeMethod(method="code", code="0")
    )
    assert texts(ory.refused(400, "RecoveryFlow", "update_recovery_flow", str(flow.id), wrong)) == [
        4060006
    ]
    code = sdk.UpdateRecoveryFlowBody(
        sdk.UpdateRecoveryFlowWithCodeMethod(method="code", code=ory.mailed_code("ada@example.com"))
    )
    recovered = ory.call("update_recovery_flow", "RecoveryFlow", str(flow.id), code)
    assert recovered.state == "passed_challenge"
    actions = {c.actual_instance.action: c.actual_instance for c in recovered.continue_with}
    token = actions["set_ory_session_token"].ory_session_token
    settings_id = actions["show_settings_ui"].flow.id
    session = ory.call("to_session", "Session", x_session_token=token)
    assert [m.method for m in session.authentication_methods] == ["code_recovery"]
    ory.call("get_settings_flow", "SettingsFlow", str(settings_id), x_session_token=token)
    ory.refused(400, "RecoveryFlow", "update_recovery_flow", str(flow.id), code)  # used up

    flow = ory.call("create_native_verification_flow", "VerificationFlow")
    email = sdk.UpdateVerificationFlowBody(
        sdk.UpdateVerificationFlowWithCodeMethod(method="code", email="ada@example.com")
    )
    assert ory.call("update_verification_flow", "VerificationFlow", str(flow.id), email).state == (
        "sent_email"
    )
    code = sdk.UpdateVerificationFlowBody(
        sdk.UpdateVerificationFlowWithCodeMethod(
            method="code", code=ory.mailed_code("ada@example.com")
        )
    )
    verified = ory.call("update_verification_flow", "VerificationFlow", str(flow.id), code)
    assert verified.state == "passed_challenge" and texts(verified) == [1080002]
    session = ory.call("to_session", "Session", x_session_token=token)
    assert session.identity.verifiable_addresses[0].verified


def test_browser_recovery_asks_for_a_location_change(ory: Ory, fake_ory: FakeKratos) -> None:
    sdk = ory.sdk
    fake_ory.add_identity("ada@example.com", PASSWORD)
    flow = ory.call("create_browser_recovery_flow", "RecoveryFlow")
    email = sdk.UpdateRecoveryFlowBody(
        sdk.UpdateRecoveryFlowWithCodeMethod(
            method="code", email="ada@example.com", csrf_token=ory.csrf(flow)
        )
    )
    ory.call("update_recovery_flow", "RecoveryFlow", str(flow.id), email, cookie=ory.cookie)
    code = sdk.UpdateRecoveryFlowBody(
        sdk.UpdateRecoveryFlowWithCodeMethod(
            method="code", code=ory.mailed_code("ada@example.com"), csrf_token=ory.csrf(flow)
        )
    )
    change = ory.refused(
        422,
        "ErrorGeneric",
        "update_recovery_flow",
        str(flow.id),
        code,
        cookie=ory.cookie,
    )
    assert change.redirect_browser_to.startswith(f"{ory.url}/ui/settings?flow=")


@pytest.mark.parametrize("sdk_name", SDKS)
def test_documents_match_the_sdk_models_field_by_field(
    sdk_name: str, fake_ory: FakeKratos, tmp_path: Path
) -> None:
    """Every kind of document the stand-in answers, fetched raw, against the SDK's model."""
    sdk = importlib.import_module(sdk_name)
    base = fake_ory.url
    identity = fake_ory.add_identity(
        "ada@example.com", PASSWORD, metadata_public={"plan": "pro"}, verified=True
    )
    session, token = fake_ory.create_session(identity["id"])
    fake_ory.create_session(identity["id"])
    parse(sdk, "Identity", identity)
    parse(sdk, "Session", session)
    signed_in = {"X-Session-Token": token}
    json_accept = {"Accept": "application/json"}
    checks = {
        "Session": requests.get(f"{base}/sessions/whoami", headers=signed_in, timeout=5),
        "List[Session]": requests.get(f"{base}/sessions", headers=signed_in, timeout=5),
        "LogoutFlow": requests.get(
            f"{base}/self-service/logout/browser",
            cookies=fake_ory.cookies(token),
            timeout=5,
        ),
        "ErrorGeneric": requests.get(f"{base}/sessions/whoami", timeout=5),
    }
    for kind, model in (
        ("login", "LoginFlow"),
        ("registration", "RegistrationFlow"),
        ("recovery", "RecoveryFlow"),
        ("verification", "VerificationFlow"),
    ):
        for flow_type in ("api", "browser"):
            checks[f"{model} {flow_type}"] = requests.get(
                f"{base}/self-service/{kind}/{flow_type}", headers=json_accept, timeout=5
            )
    for flow_type in ("api", "browser"):
        checks[f"SettingsFlow {flow_type}"] = requests.get(
            f"{base}/self-service/settings/{flow_type}",
            headers={**json_accept, **signed_in},
            timeout=5,
        )
    stored_error = requests.get(
        f"{base}/self-service/login/browser?aal=aal2", allow_redirects=False, timeout=5
    )
    error_id = stored_error.headers["Location"].rpartition("id=")[2]
    checks["FlowError"] = requests.get(f"{base}/self-service/errors?id={error_id}", timeout=5)
    for name, answer in checks.items():
        parse(sdk, name.split()[0], answer.content)
