"""A TEST DOUBLE for a hostile OpenID Connect provider.

The real provider (lib/idp.py, npm oidc-provider) is used everywhere else;
this double exists only for documents a real provider will not serve on
demand: a discovery document whose issuer is another one, a jwks_uri aimed
at a service behind the gateway (SSRF), an oversized JWKS.  It is the
hostile upstream double (lib/hostile_upstream.py) with two helpers, in
threads of the test process on a loopback address, plain http (an http
issuer is allowed for a numeric loopback host) or TLS.

    idp = HostileIdP()
    idp.discovery(issuer=idp.url, jwks_uri="http://127.0.0.1:9/secret")
    idp.jwks({"keys": [...]}, pad=300000)
    idp.count("GET", "/jwks")
"""

import json

from .hostile_upstream import HostileUpstream

WELL_KNOWN = "/.well-known/openid-configuration"


class HostileIdP(HostileUpstream):
    """Serves WELL_KNOWN and /jwks as the test says; its issuer is its
    URL."""

    @property
    def issuer(self):
        return self.url

    def discovery(self, issuer=None, jwks_uri=None, **extra):
        doc = {"issuer": issuer if issuer is not None else self.url,
               "jwks_uri": jwks_uri if jwks_uri is not None
               else self.url + "/jwks"}
        doc.update(extra)
        self.route("GET", WELL_KNOWN, 200,
                   {"Content-Type": "application/json"},
                   json.dumps(doc).encode())

    def jwks(self, doc, pad=0):
        """Serve doc at /jwks, with `pad` spaces of padding."""
        body = json.dumps(doc).encode() + b" " * pad
        self.route("GET", "/jwks", 200,
                   {"Content-Type": "application/json"}, body)
