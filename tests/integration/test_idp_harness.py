"""The test IdP itself (lib/idp.py, npm oidc-provider): the flows the
identity tests build on work as they will need them — the
authorization-code flow and the device flow with no person in the loop
(the provider's /interaction/:uid logs in the test state's user),
refresh tokens, client_credentials JWT access tokens with the test's
claims, a user removed from a group or disabled, and key rotation by
restart.  No gateway here: if these fail, the identity tests' failures
would say nothing about the gateway."""

import base64
import json
import re

import pytest
import requests

from lib.idp import IdP, idp_available

pytestmark = pytest.mark.skipif(idp_available() is not None,
                                reason=str(idp_available()))

CALLBACK = "http://127.0.0.1:9/callback"
DEVICE = "urn:ietf:params:oauth:grant-type:device_code"


def claims(jwt):
    h, p, _ = jwt.split(".")
    dec = (lambda x: json.loads(base64.urlsafe_b64decode(x + "=" *
                                                         (-len(x) % 4))))
    return dec(h), dec(p)


@pytest.fixture(scope="module")
def idp(tmp_path_factory):
    p = IdP(tmp_path_factory.mktemp("idp"), redirect_uris=[CALLBACK])
    try:
        yield p
    finally:
        p.stop()


def test_authorization_code(idp):
    idp.set_state(accounts={"bob": {"email": "bob@example.test",
                                    "groups": ["ops", "dev"]}},
                  login="bob")
    loc = idp.authorize(CALLBACK)
    assert loc.startswith(CALLBACK + "?code=")
    code = re.search(r"code=([^&]+)", loc).group(1)
    t = idp.token({"grant_type": "authorization_code", "code": code,
                   "redirect_uri": CALLBACK},
                  auth=("gateway", "gateway-test-secret"))
    h, c = claims(t["id_token"])
    assert h["kid"] in idp.kids and c["iss"] == idp.issuer
    assert c["sub"] == "bob" and c["aud"] == "gateway"
    assert c["groups"] == ["ops", "dev"]
    # The gateway's access token is for the provider's userinfo (the
    # re-check before a secret is made), not a JWT for the resource.
    assert t["access_token"].count(".") == 0
    s = requests.Session()
    s.trust_env = False
    s.verify = idp.ca
    u = s.get(idp.discovery()["userinfo_endpoint"], headers={
        "Authorization": "Bearer " + t["access_token"]}, timeout=10)
    assert u.status_code == 200 and u.json()["sub"] == "bob", u.text


def test_device_flow_and_refresh(idp):
    idp.set_state(accounts={"carol": {"groups": ["dev"]}}, login="carol")
    d = idp.device_start()
    assert re.fullmatch(r"[A-Z]{4}-[A-Z]{4}", d["user_code"])
    grant = {"grant_type": DEVICE, "device_code": d["device_code"],
             "client_id": "cli"}
    assert idp.token(grant)["error"] == "authorization_pending"
    idp.device_approve(d["user_code"])
    t = idp.token(grant)
    assert claims(t["id_token"])[1]["groups"] == ["dev"]
    # A user removed from a group: the next refresh says so.
    idp.set_state(accounts={"carol": {"groups": []}})
    t2 = idp.token({"grant_type": "refresh_token", "client_id": "cli",
                    "refresh_token": t["refresh_token"]})
    assert claims(t2["id_token"])[1]["groups"] == []
    # Disabled: refused.
    idp.set_state(accounts={"carol": {"disabled": True}})
    t3 = idp.token({"grant_type": "refresh_token", "client_id": "cli",
                    "refresh_token": t2["refresh_token"]})
    assert t3.get("error") == "invalid_grant"


def test_client_credentials_claims_and_rotation(idp):
    idp.set_state(clientClaims={"ci": {"project_path": "acme/app",
                                       "ref": "refs/heads/main"}})
    h, c = claims(idp.client_credentials_token())
    assert h["alg"] == "RS256" and h["kid"] == "rsa-1"
    assert c["sub"] == "ci" and c["aud"] == idp.resource
    assert c["project_path"] == "acme/app"
    idp.restart(keys=[("RS256", "rsa-2")])
    assert idp.public_kids() == ["rsa-2"]
    h, c = claims(idp.client_credentials_token())
    assert h["kid"] == "rsa-2"
    # The test state survives the restart.
    assert c["project_path"] == "acme/app"
