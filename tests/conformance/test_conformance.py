"""Conformance of oos-emulator against the official Python SDK (alibabacloud_oos20190601 3.7.0).

Tests that depend on an unpublished choice cite its id in docs/emulator.md "Assumptions" (A1...).
"""
import json
import re
import urllib.error
import urllib.parse
import urllib.request

import pytest
from alibabacloud_oos20190601 import models as m
from alibabacloud_tea_openapi import utils_models as um
from alibabacloud_tea_openapi.utils import Utils
from darabonba.runtime import RuntimeOptions

from conftest import AK, AK_OTHER, STS, UUID_RE, make_client

DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+00:00$")
SECRET = "s3cr3t \"+*~/ 中文 😀"
CONF = {"DingTalkClientId": "ding abc*~/+", "DingTalkClientSecret": SECRET,
        "DingTalkTemplateId": "381c5aee-f8af-48a4-94be-cce587e42ea4.schema"}


def create(client, name, typ="DingTalk", conf=None, **kw):
    req = m.CreateChatConfigurationRequest(region_id="cn-hangzhou", name=name, type=typ,
                                           ram_role="OOSServiceRole",
                                           configuration=json.dumps(conf if conf is not None else CONF), **kw)
    return client.create_chat_configuration(req).body


def get(client, name):
    return client.get_chat_configuration(m.GetChatConfigurationRequest(region_id="cn-hangzhou", name=name)).body


def raw_call(client, action, query):
    """An SDK call without the generated model, to see fields the model drops (NextToken)."""
    params = um.Params(action=action, version="2019-06-01", protocol="HTTP", pathname="/", method="POST",
                       auth_type="AK", style="RPC", req_body_type="formData", body_type="json")
    res = client.call_api(params, um.OpenApiRequest(query=Utils.query(query)), RuntimeOptions())
    return res["body"]


def expect_error(fn, code, status):
    with pytest.raises(Exception) as info:
        fn()
    e = info.value
    assert e.code == code, (e.code, e.message)
    data = e.data
    # Every error body is parsed by the SDK: code, message and request id are visible.
    assert data["statusCode"] == status
    assert data["Code"] == code
    assert data["Message"] and data["Message"] in e.message
    assert UUID_RE.match(data["RequestId"]), data
    assert data["RequestId"] in e.message
    assert data["Recommend"].endswith("requestId=" + data["RequestId"])
    assert data["HostId"]
    return e


def test_full_lifecycle_of_all_five_actions(client):
    c = create(client, "chatops-1")
    assert UUID_RE.match(c.request_id)
    assert c.chat_configuration.name == "chatops-1"
    assert DATE_RE.match(c.chat_configuration.created_date)
    assert c.chat_configuration.created_date == c.chat_configuration.updated_date

    g = get(client, "chatops-1").chat_configuration
    assert (g.name, g.type, g.ram_role) == ("chatops-1", "DingTalk", "OOSServiceRole")
    conf = json.loads(g.configuration)
    assert conf == {**CONF, "DingTalkClientSecret": "******"}  # A11
    assert ", " in g.configuration and ": " in g.configuration  # A12
    assert SECRET not in g.configuration
    out = json.loads(g.outputs)
    assert re.match(r"^https://1111111111111111\.appflow\.aliyunnest\.com/webhook/[0-9a-f]{32}$", out["URL"])
    assert "AesKey" not in out

    upd = client.update_chat_configuration(m.UpdateChatConfigurationRequest(
        region_id="cn-hangzhou", name="chatops-1", ram_role="AliyunOOSDefaultRole")).body
    assert DATE_RE.match(upd.chat_configuration.updated_date)
    g2 = get(client, "chatops-1").chat_configuration
    # A10: omitted parameters are kept.
    assert g2.ram_role == "AliyunOOSDefaultRole"
    assert json.loads(g2.configuration) == conf and g2.type == "DingTalk"
    assert json.loads(g2.outputs)["URL"] == out["URL"]

    lst = client.list_chat_configurations(m.ListChatConfigurationsRequest(region_id="cn-hangzhou")).body
    assert [i.name for i in lst.chat_configurations] == ["chatops-1"]

    d = client.delete_chat_configuration(m.DeleteChatConfigurationRequest(region_id="cn-hangzhou", name="chatops-1")).body
    assert d.content == "Chat configuration deleted successfully."
    expect_error(lambda: get(client, "chatops-1"), "EntityNotExists.ChatConfiguration", 404)


def test_list_items_have_no_configuration_or_resource_group(client):
    create(client, "rg-one", resource_group_id="rg-acfmxsn4m4abcde")
    assert get(client, "rg-one").chat_configuration.resource_group_id == "rg-acfmxsn4m4abcde"
    body = raw_call(client, "ListChatConfigurations", {"RegionId": "cn-hangzhou"})
    item = body["ChatConfigurations"][0]
    assert set(item) == {"Name", "Type", "RamRole", "Outputs", "CreatedDate", "UpdatedDate"}
    assert "NextToken" not in body


def test_wechat_outputs_have_43_char_aes_key_and_unique_urls(client):
    create(client, "wecom-a", typ="WeChat", conf={"CorpSecret": "x", "AgentId": 1000002})
    create(client, "wecom-b", typ="WeChat", conf={})
    a = json.loads(get(client, "wecom-a").chat_configuration.outputs)
    b = json.loads(get(client, "wecom-b").chat_configuration.outputs)
    assert re.match(r"^[A-Za-z0-9]{43}$", a["AesKey"])  # A13
    assert a["URL"] != b["URL"] and a["AesKey"] != b["AesKey"]
    assert json.loads(get(client, "wecom-a").chat_configuration.configuration) == {"CorpSecret": "******", "AgentId": 1000002}


@pytest.mark.parametrize("value", [
    "with spaces", "plus+plus", "star*", "tilde~", "slash/", 'quote"\'', "中文", "emoji 😀", "a=b&c=d", "100%", "tab\tnl\n",
])
def test_special_characters_in_configuration_values(client, value):
    conf = {"DingTalkClientId": value, "DingTalkClientSecret": value, "Extra": {"k " + value: value}}
    create(client, "special", conf=conf)
    got = json.loads(get(client, "special").chat_configuration.configuration)
    assert got == {"DingTalkClientId": value, "DingTalkClientSecret": "******", "Extra": {"k " + value: value}}


@pytest.mark.parametrize("name", ["chat ops", "a+b", "a*b", "a~b", "a/b", 'a"b', "a'b", "中文", "😀", "x" * 129])
def test_names_outside_the_charset_are_rejected(client, name):
    # A8: Name is 1-128 of [A-Za-z0-9._-]; the request still has to verify, so the signature path
    # for these characters is exercised too.
    e = expect_error(lambda: create(client, name), "InvalidParameter", 400)
    assert "Name" in e.data["Message"]


@pytest.mark.parametrize("name", ["a", "A.b_c-D", "x" * 128, "TestChatConfig-9be97b40"])
def test_names_inside_the_charset_work(client, name):
    create(client, name)
    assert get(client, name).chat_configuration.name == name


def test_names_are_case_sensitive(client):
    create(client, "Case")
    create(client, "case")
    expect_error(lambda: create(client, "Case"), "EntityAlreadyExists.ChatConfiguration", 409)


def test_validation_errors(client):
    expect_error(lambda: client.get_chat_configuration(m.GetChatConfigurationRequest(region_id="cn-hangzhou")),
                 "MissingName", 400)
    expect_error(lambda: create(client, "t", typ="Slack"), "InvalidParameter", 400)
    expect_error(lambda: client.create_chat_configuration(m.CreateChatConfigurationRequest(
        name="t", type="DingTalk", configuration="[1, 2]")), "InvalidParameter", 400)
    expect_error(lambda: client.create_chat_configuration(m.CreateChatConfigurationRequest(
        name="t", type="DingTalk", configuration="{not json")), "InvalidParameter", 400)
    expect_error(lambda: client.create_chat_configuration(m.CreateChatConfigurationRequest(
        name="t", configuration="{}")), "MissingType", 400)
    expect_error(lambda: client.update_chat_configuration(m.UpdateChatConfigurationRequest(
        region_id="cn-hangzhou", name="absent", ram_role="R")), "EntityNotExists.ChatConfiguration", 404)
    expect_error(lambda: client.delete_chat_configuration(m.DeleteChatConfigurationRequest(
        region_id="cn-hangzhou", name="absent")), "EntityNotExists.ChatConfiguration", 404)


def test_filters(client):
    create(client, "d1")
    create(client, "d2")
    create(client, "w1", typ="WeChat", conf={})

    def names(filters):
        req = m.ListChatConfigurationsRequest(region_id="cn-hangzhou", filters=[
            m.ListChatConfigurationsRequestFilters(name=n, value=v) for n, v in filters])
        return [i.name for i in client.list_chat_configurations(req).body.chat_configurations]

    assert names([("Type", "DingTalk")]) == ["d1", "d2"]
    assert names([("Type", "WeChat")]) == ["w1"]
    assert names([("Name", "d2")]) == ["d2"]
    assert names([("Type", "DingTalk"), ("Name", "w1")]) == []  # A14: AND
    assert names([("Type", "dingtalk")]) == []  # exact, case-sensitive
    assert names([("Name", "chat ops +*~/\"中")]) == []  # special characters in filter values sign fine
    expect_error(lambda: names([("status", "inactive")]), "InvalidParameter", 400)


def test_paging_with_max_results_and_next_token(client):
    want = [f"page-{i:02d}" for i in range(7)]
    for n in reversed(want):
        create(client, n)
    seen, token, pages = [], None, 0
    while True:
        q = {"RegionId": "cn-hangzhou", "MaxResults": 3}
        if token:
            q["NextToken"] = token
        body = raw_call(client, "ListChatConfigurations", q)
        pages += 1
        seen += [i["Name"] for i in body["ChatConfigurations"]]
        token = body.get("NextToken")
        if not token:
            break
        assert token.startswith("+/+/")  # A14: the SDK must encode '+' and '/' correctly
        if pages == 1:
            create(client, "page-00a")  # a write between pages: lands after the cursor
            client.delete_chat_configuration(m.DeleteChatConfigurationRequest(region_id="cn-hangzhou", name="page-05"))
    assert seen == ["page-00", "page-01", "page-02", "page-03", "page-04", "page-06"]
    assert pages == 2
    expect_error(lambda: raw_call(client, "ListChatConfigurations", {"MaxResults": 101}), "InvalidParameter", 400)
    expect_error(lambda: raw_call(client, "ListChatConfigurations", {"MaxResults": 0}), "InvalidParameter", 400)
    expect_error(lambda: raw_call(client, "ListChatConfigurations", {"NextToken": "bogus"}), "InvalidParameter", 400)
    default = raw_call(client, "ListChatConfigurations", {})
    assert len(default["ChatConfigurations"]) == 7 and "NextToken" not in default  # default 20 (A14)


def test_wrong_secret_unknown_key(emulator):
    bad = make_client(emulator, AK[0], "not-the-secret")
    expect_error(lambda: get(bad, "x"), "SignatureDoesNotMatch", 400)
    unknown = make_client(emulator, "noSuchKey", "x")
    expect_error(lambda: get(unknown, "x"), "InvalidAccessKeyId.NotFound", 404)


def test_sts_credentials(emulator):
    sts = make_client(emulator, STS[0], STS[1], token=STS[2])
    create(sts, "via-sts")
    # Same owner (A17) as AK: the permanent key sees it, another account does not.
    assert get(make_client(emulator, AK[0], AK[1]), "via-sts").chat_configuration.name == "via-sts"
    expect_error(lambda: get(make_client(emulator, AK_OTHER[0], AK_OTHER[1]), "via-sts"),
                 "EntityNotExists.ChatConfiguration", 404)
    expect_error(lambda: get(make_client(emulator, STS[0], STS[1]), "via-sts"), "MissingSecurityToken", 400)
    expect_error(lambda: get(make_client(emulator, STS[0], STS[1], token="CAIS+other"), "via-sts"),
                 "InvalidSecurityToken.MismatchWithAccessKey", 400)
    expect_error(lambda: get(make_client(emulator, AK[0], AK[1], token="CAIS+x"), "via-sts"),
                 "InvalidSecurityToken.MismatchWithAccessKey", 400)


def test_oidc_exchange_with_official_credentials_provider(emulator, tmp_path, monkeypatch):
    from alibabacloud_credentials.client import Client as CredClient
    from alibabacloud_credentials.provider import oidc
    from alibabacloud_tea_openapi.models import Config
    from alibabacloud_oos20190601.client import Client

    # The provider hard-codes https; send its request (built by the library) over plain http.
    original = oidc.TeaCore.do_action

    def over_http(request, *args, **kwargs):
        request.protocol = "http"
        return original(request, *args, **kwargs)

    monkeypatch.setattr(oidc.TeaCore, "do_action", over_http)
    token_file = tmp_path / "token"
    token_file.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6eDp5In0.sig\n")  # untrimmed
    provider = oidc.OIDCRoleArnCredentialsProvider(
        role_arn="acs:ram::3333333333333333:role/pod-role",
        oidc_provider_arn="acs:ram::3333333333333333:oidc-provider/ack-rrsa-c1",
        oidc_token_file_path=str(token_file), sts_endpoint=emulator.host)
    creds = provider.get_credentials()
    assert creds.get_access_key_id().startswith("STS.")
    client = Client(Config(credential=CredClient(provider=provider), endpoint=emulator.host, protocol="http",
                           region_id="cn-hangzhou"))
    create(client, "via-oidc")
    out = json.loads(get(client, "via-oidc").chat_configuration.outputs)
    assert out["URL"].startswith("https://3333333333333333.")  # owner from the RoleArn account (A18)
    assert emulator.admin_call("GET", "/calls")["AssumeRoleWithOIDC"] >= 1
    log = json.dumps(emulator.admin_call("GET", "/requests"))
    assert "eyJhbGciOiJSUzI1NiJ9" not in log and creds.get_access_key_secret() not in log


def test_sts_stub_validation(emulator):
    base = {"Action": "AssumeRoleWithOIDC", "RoleArn": "acs:ram::1:role/r", "OIDCProviderArn": "acs:ram::1:oidc-provider/p",
            "OIDCToken": "tok-valid", "RoleSessionName": "sess"}

    def call(**over):
        q = {**base, **over}
        q = {k: v for k, v in q.items() if v is not None}
        try:
            with urllib.request.urlopen(emulator.api + "/?" + urllib.parse.urlencode(q), timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    status, body = call(DurationSeconds="900")
    assert status == 200 and re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$", body["Credentials"]["Expiration"])
    assert call(RoleArn=None)[1]["Code"] == "MissingRoleArn"
    assert call(RoleArn="arn:bad")[1]["Code"] == "InvalidParameter.RoleArn"
    assert call(OIDCToken="abc")[1]["Code"] == "InvalidParameter.OIDCToken"
    assert call(RoleSessionName="s")[1]["Code"] == "InvalidParameter.RoleSessionName"
    assert call(DurationSeconds="899")[1]["Code"] == "InvalidParameter.DurationSeconds"
    assert call(OIDCProviderArn="acs:ram::2:oidc-provider/p")[1]["Code"] == "InvalidParameter.OIDCProviderArn"


def test_region_defaults_and_isolation(client):
    client.create_chat_configuration(m.CreateChatConfigurationRequest(name="no-region", type="DingTalk", configuration="{}"))
    assert get(client, "no-region").chat_configuration.name == "no-region"  # A9 default cn-hangzhou
    expect_error(lambda: client.get_chat_configuration(m.GetChatConfigurationRequest(region_id="cn-beijing", name="no-region")),
                 "EntityNotExists.ChatConfiguration", 404)


def test_injected_faults_surface_through_the_sdk(emulator, client):
    create(client, "f")
    emulator.admin_call("POST", "/faults", {"rules": [
        {"kind": "error", "code": "ServiceUnavailable", "action": "GetChatConfiguration", "remaining": 1},
        {"kind": "error", "code": "InternalError", "action": "GetChatConfiguration", "remaining": 1},
        {"kind": "error", "code": "Throttling.User", "action": "GetChatConfiguration", "remaining": 1}]})
    expect_error(lambda: get(client, "f"), "ServiceUnavailable", 503)
    expect_error(lambda: get(client, "f"), "InternalError", 500)
    expect_error(lambda: get(client, "f"), "Throttling.User", 400)
    assert get(client, "f").chat_configuration.name == "f"
    assert [r["remaining"] for r in emulator.admin_call("GET", "/faults")["rules"]] == [0, 0, 0]


def test_injected_terminal_codes_surface_through_the_sdk(emulator, client):
    # A21: any code can be injected, with its known status and message or an explicit one.
    create(client, "t")
    only_get = {"action": "GetChatConfiguration", "remaining": 1}
    emulator.admin_call("POST", "/faults", {"rules": [
        {"kind": "error", "code": "Forbidden.RAM", **only_get},
        {"kind": "error", "code": "InvalidAccessKeyId.NotFound", **only_get},
        {"kind": "error", "code": "SignatureDoesNotMatch", **only_get},
        {"kind": "error", "code": "EntityNotExists.ChatConfiguration", **only_get},
        {"kind": "error", "code": "Custom.Failure", "http_status": 502, "message": "Upstream down.", **only_get}]})
    e = expect_error(lambda: get(client, "t"), "Forbidden.RAM", 403)
    assert e.data["Message"].startswith("User not authorized to operate on the specified resource")
    expect_error(lambda: get(client, "t"), "InvalidAccessKeyId.NotFound", 404)
    expect_error(lambda: get(client, "t"), "SignatureDoesNotMatch", 400)
    expect_error(lambda: get(client, "t"), "EntityNotExists.ChatConfiguration", 404)
    e = expect_error(lambda: get(client, "t"), "Custom.Failure", 502)
    assert e.data["Message"] == "Upstream down."
    assert get(client, "t").chat_configuration.name == "t"
    # An unknown code without http_status is refused.
    with pytest.raises(urllib.error.HTTPError) as info:
        emulator.admin_call("POST", "/faults", {"rules": [{"kind": "error", "code": "Custom.Failure"}]})
    assert info.value.code == 400


def test_sdk_retry_after_throttling_is_accepted(emulator):
    from darabonba.policy.retry import RetryOptions
    opts = RetryOptions({"retryable": True, "retryCondition": [
        {"maxAttempts": 3, "errorCode": ["Throttling.User"], "backoff": {"policy": "Fixed", "period": 10}}]})
    client = make_client(emulator, AK[0], AK[1], retry_options=opts)
    create(client, "r")
    emulator.admin_call("POST", "/reset")
    emulator.admin_call("POST", "/faults", {"rules": [{"kind": "error", "code": "Throttling.User", "remaining": 1,
                                                      "retry_after_ms": 20}]})
    # The retry carries signed x-acs-retry-attempts / x-acs-retry-delay headers; it must verify.
    assert get(client, "r").chat_configuration.name == "r"
    assert emulator.admin_call("GET", "/calls")["GetChatConfiguration"] == 2


def test_admin_counters_and_redacted_request_log(emulator, client):
    create(client, "logme")
    get(client, "logme")
    calls = emulator.admin_call("GET", "/calls")
    assert calls["CreateChatConfiguration"] == 1 and calls["GetChatConfiguration"] == 1
    log = emulator.admin_call("GET", "/requests")
    assert [e["action"] for e in log] == ["CreateChatConfiguration", "GetChatConfiguration"]
    text = json.dumps(log, ensure_ascii=False)
    assert SECRET not in text and AK[1] not in text
    assert json.loads(log[0]["params"]["Configuration"])["DingTalkClientId"] == CONF["DingTalkClientId"]
    emulator.admin_call("POST", "/reset")
    assert emulator.admin_call("GET", "/calls") == {}
    assert get(client, "logme").chat_configuration.name == "logme"  # reset without state keeps data


def test_admin_state_and_answers_by_code(emulator, client):
    create(client, "st")
    emulator.admin_call("POST", "/reset")
    emulator.admin_call("POST", "/faults", {"rules": [
        {"kind": "error", "code": "Throttling.User", "action": "GetChatConfiguration", "remaining": 1}]})
    expect_error(lambda: get(client, "st"), "Throttling.User", 400)
    g = get(client, "st").chat_configuration
    assert emulator.admin_call("GET", "/calls?by=code") == {
        "GetChatConfiguration": {"Throttling.User": 1, "OK": 1}}
    assert emulator.admin_call("GET", "/calls") == {"GetChatConfiguration": 2}
    state = emulator.admin_call("GET", "/state")["configurations"]
    assert len(state) == 1
    s = state[0]
    assert (s["owner"], s["region"], s["name"], s["type"], s["ramRole"]) == (
        AK[2], "cn-hangzhou", "st", "DingTalk", "OOSServiceRole")
    assert (s["createdDate"], s["updatedDate"]) == (g.created_date, g.updated_date)
    assert s["configuration"] == {**CONF, "DingTalkClientSecret": "******"}  # A22
    assert s["outputs"] == json.loads(g.outputs)
    assert SECRET not in json.dumps(state, ensure_ascii=False)
