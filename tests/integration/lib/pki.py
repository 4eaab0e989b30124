"""A throw-away certificate authority made with the openssl command line,
and the certificates it signs: server certificates with IP or DNS
subjectAltNames, client certificates with any subject (several RDNs, so
that a test can compare the RFC 2253 form the gateway keeps).  Keys are
P-256, valid for two days, written unencrypted under the PKI's directory.

    pki = PKI(tmpdir)
    crt, key = pki.issue("gw", "/CN=::1", san="IP:::1")
    crt, key = pki.issue("node1", "/O=Portcullis Test/CN=node1", client=True)
    pki.rfc2253(crt)   # "CN=node1,O=Portcullis Test"
"""

import os
import subprocess


def _openssl(*args, cwd):
    return subprocess.run(["openssl"] + list(args), cwd=cwd, check=True,
                          capture_output=True, text=True, timeout=60)


class PKI:
    """A CA (ca.pem, ca.key under `d`) and the certificates it issues."""

    def __init__(self, d, name="portcullis test CA"):
        self.dir = str(d)
        os.makedirs(self.dir, exist_ok=True)
        self.ca = os.path.join(self.dir, "ca.pem")
        self.ca_key = os.path.join(self.dir, "ca.key")
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                 "-subj", "/CN=" + name, "-keyout", self.ca_key,
                 "-out", self.ca, cwd=self.dir)

    def issue(self, name, subject, san=None, client=False):
        """Sign a certificate for `subject` ("/O=x/CN=y", in the order
        the RDNs are encoded; a bare name means /CN=name).  Returns
        (certificate path, key path)."""
        if not subject.startswith("/"):
            subject = "/CN=" + subject
        key = os.path.join(self.dir, name + ".key")
        csr = os.path.join(self.dir, name + ".csr")
        crt = os.path.join(self.dir, name + ".pem")
        ext = os.path.join(self.dir, name + ".ext")
        with open(ext, "w") as f:
            f.write("basicConstraints=CA:FALSE\n")
            f.write("keyUsage=digitalSignature\n")
            f.write("extendedKeyUsage=%s\n" %
                    ("clientAuth" if client else "serverAuth"))
            if san:
                f.write("subjectAltName=%s\n" % san)
        _openssl("req", "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:P-256", "-nodes", "-subj", subject,
                 "-keyout", key, "-out", csr, cwd=self.dir)
        _openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey",
                 self.ca_key, "-CAcreateserial", "-days", "2", "-extfile",
                 ext, "-out", crt, cwd=self.dir)
        return crt, key

    def rfc2253(self, crt):
        """The certificate's subject as RFC 2253 writes it (last RDN
        first), as openssl prints it."""
        out = _openssl("x509", "-in", crt, "-noout", "-subject", "-nameopt",
                       "RFC2253", cwd=self.dir).stdout.strip()
        return out.split("=", 1)[1].strip() if out.startswith("subject") \
            else out
