"""A real OpenID Connect provider for the tests: npm oidc-provider
(tests/integration/idp/provider.mjs, installed by contrib/install-deps.sh)
on node, started on a free loopback port with keys this module writes, over
TLS with a throw-away CA (PKI) unless tls=False.

    idp = IdP(tmpdir, keys=[("RS256", "rsa-1"), ("ES256", "ec-1")])
    idp.issuer, idp.ca            # what the gateway's config names
    tok = idp.client_credentials_token()
    idp.restart(keys=[("RS256", "rsa-2")])   # key rotation: a new kid
    idp.set_state(accounts={"bob": {"groups": ["ops"]}}, login="bob")
    code = idp.authorize(redirect_uri)       # the test user logs in
    d = idp.device_start(); idp.device_approve(d["user_code"])
    idp.stop()

Stopped by its own PID; a restart keeps the port, the issuer and the test
state (accounts, login, client claims)."""

import base64
import html
import json
import os
import re
import shutil
from urllib.parse import urljoin

import requests
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .pki import PKI
from .util import HarnessError, ManagedProcess, free_port, safe_env

IDP_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..",
                                       "idp"))


def _b64(n, size=None):
    size = size or (n.bit_length() + 7) // 8
    return base64.urlsafe_b64encode(n.to_bytes(size, "big")).rstrip(
        b"=").decode()


def make_jwk(alg, kid):
    """A private JWK (dict) for RS256/RS384/RS512/PS256 (RSA 2048) or
    ES256/ES384 (P-256/P-384) with this kid."""
    if alg.startswith(("RS", "PS")):
        k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pn = k.private_numbers()
        pub = pn.public_numbers
        return {"kty": "RSA", "kid": kid, "alg": alg, "use": "sig",
                "n": _b64(pub.n), "e": _b64(pub.e), "d": _b64(pn.d),
                "p": _b64(pn.p), "q": _b64(pn.q), "dp": _b64(pn.dmp1),
                "dq": _b64(pn.dmq1), "qi": _b64(pn.iqmp)}
    if alg in ("ES256", "ES384"):
        curve, crv, size = ((ec.SECP256R1(), "P-256", 32) if alg == "ES256"
                            else (ec.SECP384R1(), "P-384", 48))
        k = ec.generate_private_key(curve)
        pn = k.private_numbers()
        return {"kty": "EC", "kid": kid, "alg": alg, "use": "sig",
                "crv": crv, "x": _b64(pn.public_numbers.x, size),
                "y": _b64(pn.public_numbers.y, size),
                "d": _b64(pn.private_value, size)}
    raise ValueError("unsupported alg %s" % alg)


def idp_available():
    """Why the provider cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not os.path.isdir(os.path.join(IDP_DIR, "node_modules",
                                      "oidc-provider")):
        return ("oidc-provider is not installed: run contrib/install-deps.sh "
                "(npm ci in tests/integration/idp)")
    return None


class IdP:
    """oidc-provider on 127.0.0.1:port.  Attributes: issuer, port, ca (the
    CA file a client must trust; None without TLS), kids, jwks_path."""

    def __init__(self, workdir, keys=(("RS256", "rsa-1"), ("ES256", "ec-1")),
                 tls=True, at_alg="RS256", resource="https://portcullis.test",
                 redirect_uris=None, at_ttl=600):
        why = idp_available()
        if why:
            raise HarnessError(why)
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.tls = tls
        self.at_alg = at_alg
        self.at_ttl = at_ttl    # seconds a JWT access token is valid
        self.resource = resource
        self.redirect_uris = list(redirect_uris or [])
        self.ca = self.cert = self.key = None
        if tls:
            pki = PKI(os.path.join(self.dir, "idp-pki"), name="idp test CA")
            self.cert, self.key = pki.issue("idp", "/CN=127.0.0.1",
                                            san="IP:127.0.0.1")
            self.ca = pki.ca
        self.issuer = "%s://127.0.0.1:%d" % ("https" if tls else "http",
                                              self.port)
        self.state_path = os.path.join(self.dir, "idp-state.json")
        self.proc = None
        self.starts = 0
        self.start(keys)

    def _write_keys(self, keys):
        self.jwks = {"keys": [make_jwk(alg, kid) for alg, kid in keys]}
        self.kids = [kid for _, kid in keys]
        self.jwks_path = os.path.join(self.dir, "idp-jwks-%d.json" %
                                      self.starts)
        with open(self.jwks_path, "w") as f:
            json.dump(self.jwks, f)
        os.chmod(self.jwks_path, 0o600)

    def start(self, keys=None):
        """Start (again) on the same port, with new keys when given."""
        if self.proc is not None and self.proc.alive():
            raise HarnessError("provider already running")
        if keys is not None:
            self._write_keys(keys)
        argv = ["node", os.path.join(IDP_DIR, "provider.mjs"),
                "--port", str(self.port), "--issuer", self.issuer,
                "--jwks", self.jwks_path, "--resource", self.resource,
                "--at-alg", self.at_alg, "--at-ttl", str(self.at_ttl)]
        if self.tls:
            argv += ["--cert", self.cert, "--key", self.key]
        if os.path.exists(self.state_path):
            argv += ["--state", self.state_path]
        for u in self.redirect_uris:
            argv += ["--redirect-uri", u]
        log = os.path.join(self.dir, "idp-%d.log" % self.starts)
        self.starts += 1
        self.proc = ManagedProcess(argv, log, env=safe_env(), cwd=IDP_DIR,
                                   name="oidc-provider")
        self.proc.wait_ready(self._discovery_ok, timeout=30,
                             what="oidc-provider discovery")

    def _session(self):
        s = requests.Session()
        s.trust_env = False
        s.verify = self.ca if self.tls else True
        return s

    def _discovery_ok(self):
        r = self._session().get(
            self.issuer + "/.well-known/openid-configuration", timeout=2)
        return r.status_code == 200 and r.json()["issuer"] == self.issuer

    def discovery(self):
        return self._session().get(
            self.issuer + "/.well-known/openid-configuration",
            timeout=5).json()

    def public_kids(self):
        """The kids the provider publishes now."""
        d = self.discovery()
        r = self._session().get(d["jwks_uri"], timeout=5)
        return [k.get("kid") for k in r.json()["keys"]]

    def stop(self):
        if self.proc is not None:
            self.proc.stop()

    def restart(self, keys=None):
        """Key rotation: stop, then start with `keys` (new kids)."""
        self._save_state()
        self.stop()
        self.start(keys)

    def _save_state(self):
        if self.proc is not None and self.proc.alive():
            with open(self.state_path, "w") as f:
                json.dump(self.get_state(), f)

    def get_state(self):
        return self._session().get(self.issuer + "/test/state",
                                   timeout=5).json()

    def set_state(self, **kw):
        """Replace parts of the test state: accounts={sub: {...}},
        login="sub", clientClaims={client_id: {...}}."""
        r = self._session().post(self.issuer + "/test/state",
                                 data=json.dumps(kw), timeout=5)
        r.raise_for_status()
        return r.json()

    def client_credentials_token(self, client_id="ci",
                                 secret="ci-test-secret", scope="pull"):
        """A JWT access token for the client_credentials client."""
        r = self._session().post(
            self.discovery()["token_endpoint"],
            data={"grant_type": "client_credentials", "scope": scope,
                  "resource": self.resource},
            auth=(client_id, secret), timeout=10)
        if r.status_code != 200:
            raise HarnessError("client_credentials: %d %s" % (r.status_code,
                                                              r.text))
        return r.json()["access_token"]

    # Flows a person would drive; /interaction/:uid logs in state.login.

    def _follow(self, s, r, stop=None, limit=20):
        """Follow redirects by hand (cookies kept) until none, or until
        one starts with `stop`; returns (last response, last Location)."""
        loc = None
        for _ in range(limit):
            loc = r.headers.get("Location")
            if loc is None or (stop and loc.startswith(stop)):
                return r, loc
            r = s.get(urljoin(self.issuer + "/", loc), allow_redirects=False,
                      timeout=10)
        raise HarnessError("more than %d redirects" % limit)

    def authorize(self, redirect_uri, client_id="gateway",
                  scope="openid email groups", state="st", nonce="nn",
                  extra=None):
        """Run the authorization-code flow's browser part and return the
        redirect to redirect_uri (with code=, state=, iss=)."""
        s = self._session()
        q = {"client_id": client_id, "response_type": "code",
             "scope": scope, "redirect_uri": redirect_uri, "state": state,
             "nonce": nonce}
        q.update(extra or {})
        r = s.get(self.discovery()["authorization_endpoint"], params=q,
                  allow_redirects=False, timeout=10)
        r, loc = self._follow(s, r, stop=redirect_uri)
        if loc is None:
            raise HarnessError("authorize: no redirect back: %d %s" % (
                r.status_code, r.text[:500]))
        return loc

    def device_start(self, client_id="cli",
                     scope="openid offline_access groups"):
        r = self._session().post(
            self.discovery()["device_authorization_endpoint"],
            data={"client_id": client_id, "scope": scope}, timeout=10)
        r.raise_for_status()
        return r.json()

    def device_approve(self, user_code):
        """The user step of the device flow: enter the code, confirm,
        log in (the interaction) and consent."""
        s = self._session()
        uri = self.issuer + "/device"
        for _ in range(2):      # the code form, then the confirm form
            page = s.get(uri, timeout=10).text if _ == 0 else r.text
            fields = {html.unescape(m.group(1)): html.unescape(m.group(2))
                      for m in re.finditer(
                          r'<input type="hidden" name="([^"]+)" '
                          r'value="([^"]*)"', page)}
            if _ == 0:
                fields["user_code"] = user_code
            r = s.post(uri, data=fields, allow_redirects=False, timeout=10)
            if r.status_code in (302, 303):
                break
        r, _loc = self._follow(s, r)
        if r.status_code != 200 or "Sign-in Success" not in r.text:
            raise HarnessError("device approval: %d %s" % (
                r.status_code, r.text[:500]))

    def token(self, data, auth=None):
        """POST to the token endpoint; the JSON answer (errors too)."""
        r = self._session().post(self.discovery()["token_endpoint"],
                                 data=data, auth=auth, timeout=10)
        return r.json()
