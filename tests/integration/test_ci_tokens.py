"""CI job tokens (issue 10, "CI"): the README's "CI: GitHub Actions" and
"CI: GitLab CI" configurations, read from the README itself, with the
issuer pointed at a real provider on loopback.

Each CI system is played by its own npm oidc-provider (lib/idp.py): it
publishes the JWKS the gateway trusts, and the tokens are signed with its
key carrying exactly the claims GitHub Actions and GitLab CI put in a
job's token (sub built from repository and ref, repository_owner, ...;
the provider's token endpoint will not mint a `sub` of the test's
choosing, so lib/idfix.idp_sign signs them with the provider's own key).
Each token is used as a Basic password with skopeo (--creds, as after
`docker login`) and at /token with the password grant docker login
sends: allowed by the README's claim rule, refused for another
repository, another branch (push), another owner (required_claims) and
across issuers.

Also the login lines `portcullis secret create` prints: their user name
has no ':' (RFC 7617) and logs in with skopeo as printed.

Real parts only: oidc-provider on node, docker-registry, skopeo,
redis-server.  github.com and gitlab.example.com are never contacted:
the issuer URLs are replaced by the providers' loopback ones."""

import json
import os
import re
import time
import uuid

import pytest

from lib.clients import Skopeo
from lib.gateway import REPO_ROOT, gateway_config, upstream
from lib.idfix import SERVICE, access_of, acl_redis, cli, idp_sign, \
    needs_idp, plain, records, redis_section, start_idp, token_cfg
from lib.idfix import keys  # noqa: F401 (fixture)
from lib.util import wait_for

pytestmark = needs_idp

AUD = "https://registry.example.com"
README = os.path.join(REPO_ROOT, "README.md")


def readme_section(title):
    text = open(README).read()
    start = text.index("\n### %s\n" % title)
    end = text.find("\n## ", start + 1)
    nxt = text.find("\n### ", start + 1)
    if nxt != -1 and (end == -1 or nxt < end):
        end = nxt
    return text[start:end]


def readme_ci(title):
    """The section's workflow (yaml) and configuration (json) blocks."""
    sec = readme_section(title)
    (yml,) = re.findall(r"```yaml\n(.*?)```", sec, re.S)
    (js,) = re.findall(r"```json\n(.*?)```", sec, re.S)
    return yml, json.loads(js)


def test_readme_workflows_ask_for_the_configured_audience():
    yml, cfg = readme_ci("CI: GitHub Actions")
    (iss,) = cfg["identity"]["issuers"]
    assert iss["issuer"] == "https://token.actions.githubusercontent.com"
    assert "id-token: write" in yml
    assert "$ACTIONS_ID_TOKEN_REQUEST_URL&audience=%s" % \
        iss["audiences"][0] in yml
    assert "--password-stdin" in yml
    yml, cfg = readme_ci("CI: GitLab CI")
    (iss,) = cfg["identity"]["issuers"]
    assert "id_tokens:" in yml
    assert "aud: %s" % iss["audiences"][0] in yml
    assert "--password-stdin" in yml


def github_claims(issuer, repository="octo-org/app", ref="refs/heads/main",
                  aud=AUD, owner=None):
    """A GitHub Actions job token's claims (docs.github.com, "About
    security hardening with OpenID Connect")."""
    now = int(time.time())
    owner = owner or repository.split("/")[0]
    return {
        "jti": str(uuid.uuid4()), "iss": issuer, "aud": aud,
        "sub": "repo:%s:ref:%s" % (repository, ref),
        "ref": ref, "ref_type": "branch", "ref_protected": "false",
        "sha": "d6c1a5a6f1d0b6a2c8e0f5a3b7d9e1c2a4b6c8d0",
        "repository": repository, "repository_id": "74",
        "repository_owner": owner, "repository_owner_id": "65",
        "repository_visibility": "private", "run_id": "5001",
        "run_number": "12", "run_attempt": "1", "actor": "octocat",
        "actor_id": "583231", "workflow": "CI", "event_name": "push",
        "head_ref": "", "base_ref": "",
        "workflow_ref": "%s/.github/workflows/ci.yml@%s" % (repository, ref),
        "job_workflow_ref": "%s/.github/workflows/ci.yml@%s" % (
            repository, ref),
        "runner_environment": "github-hosted",
        "iat": now, "nbf": now, "exp": now + 300}


def gitlab_claims(issuer, project="acme/app", ref="main", aud=AUD):
    """A GitLab CI job's id_token claims (docs.gitlab.com, "OpenID
    Connect (OIDC) Authentication Using ID Tokens")."""
    now = int(time.time())
    ns = project.rsplit("/", 1)[0]
    return {
        "jti": str(uuid.uuid4()), "iss": issuer, "aud": aud,
        "sub": "project_path:%s:ref_type:branch:ref:%s" % (project, ref),
        "namespace_id": "72", "namespace_path": ns,
        "project_id": "20", "project_path": project,
        "user_id": "5", "user_login": "jdoe",
        "user_email": "jdoe@example.test", "user_access_level": "developer",
        "pipeline_id": "574", "pipeline_source": "push", "job_id": "302",
        "ref": ref, "ref_type": "branch", "ref_path": "refs/heads/" + ref,
        "ref_protected": "true", "runner_id": "1",
        "runner_environment": "self-hosted",
        "iat": now, "nbf": now, "exp": now + 300}


class CI:
    pass


@pytest.fixture(scope="module")
def ci(start_registry_module, start_gateway_module, keys,  # noqa: F811
       single_image, tmp_path_factory):
    e = CI()
    e.stop = []
    try:
        d = tmp_path_factory.mktemp("ci-tokens")
        e.rs = acl_redis(d / "redis")
        e.stop.append(e.rs)
        e.gh = start_idp(d / "github")
        e.stop.append(e.gh)
        e.gl = start_idp(d / "gitlab")
        e.stop.append(e.gl)
        reg = start_registry_module("up1")
        sk = Skopeo(d / "seed")
        for repo in ("apps/app", "apps/other"):
            sk("copy", "-q", "--dest-tls-verify=false", single_image.ref,
               "docker://%s/%s:v1" % (reg.host, repo))
        issuers, rules = [], []
        for title, idp in (("CI: GitHub Actions", e.gh),
                           ("CI: GitLab CI", e.gl)):
            _yml, cfg = readme_ci(title)
            for i in cfg["identity"]["issuers"]:
                # The README's entry, pointed at the loopback provider.
                i = dict(i, issuer=idp.issuer, ca_file=idp.ca)
                issuers.append(i)
            rules += cfg["policy"]["rules"]
        # A secret's subject (the login lines' test below).
        rules.append({"id": "robot", "effect": "allow",
                      "repositories": ["apps/other"],
                      "subjects": ["user:robot:ci"], "actions": ["pull"]})
        e.rules = rules
        cfg = gateway_config(
            upstream(reg, default=True), policy={"rules": rules},
            redis=redis_section(e.rs, d),
            audit={"spool_file": str(d / "spool"), "timeout": 2},
            identity={"token": token_cfg(keys), "issuers": issuers})
        e.g = start_gateway_module(cfg)
        for name in ("github", "gitlab"):
            wait_for(lambda n=name: "oidc keys_loaded issuer=%s" % n in
                     e.g.log_text(), timeout=30, what="%s's keys" % name)
        wait_for(lambda: "revoke synced" in e.g.log_text(), timeout=20,
                 what="the revocation table's first sync")
        e.sk = Skopeo(d / "skopeo")
        yield e
    finally:
        for s in reversed(e.stop):
            try:
                s.stop()
            except Exception:   # noqa: BLE001 - clean up the rest
                pass


def pull(e, repo, user, tok, check=True):
    return e.sk("inspect", "--raw", "--tls-verify=false", "--creds",
                "%s:%s" % (user, tok),
                "docker://%s/%s:v1" % (e.g.host, repo), check=check)


def password_grant(e, user, tok, repo="apps/app"):
    """What `docker login` then `docker push` send: POST /token with the
    password grant; the answer's status and granted access."""
    r = plain().post(e.g.url + "/token", data={
        "grant_type": "password", "username": user, "password": tok,
        "service": SERVICE, "client_id": "docker",
        "scope": "repository:%s:pull,push" % repo}, timeout=15)
    if r.status_code != 200:
        return r.status_code, None
    return 200, access_of(r.json()["access_token"])


def refused(r):
    assert r.returncode != 0
    low = r.stderr.lower()
    assert "unauthorized" in low or "denied" in low, r.stderr


def test_github_actions_token(ci):
    main = idp_sign(ci.gh, github_claims(ci.gh.issuer))
    out = pull(ci, "apps/app", "github", main)
    assert json.loads(out.stdout)["schemaVersion"] == 2
    # The claim rule gives pull, the subject (repository and ref) push.
    assert password_grant(ci, "github", main) == (
        200, {("repository", "apps/app"): ["pull", "push"]})
    # The audit names the subject GitHub built from repository and ref.
    wait_for(lambda: [d for d in records(ci.rs) if d["subject"] ==
                      "github:repo:octo-org/app:ref:refs/heads/main" and
                      d["auth_method"] == "oidc" and d["path"] == "/token"
                      and d["status"] == "200"],
             timeout=20, what="the GitHub job's login audited")
    # Nothing outside the repository's patterns.
    refused(pull(ci, "apps/other", "github", main, check=False))

    # Another branch: pulls, never pushes.
    feat = idp_sign(ci.gh, github_claims(ci.gh.issuer,
                                         ref="refs/heads/feature"))
    pull(ci, "apps/app", "github", feat)
    assert password_grant(ci, "github", feat) == (
        200, {("repository", "apps/app"): ["pull"]})

    # Another repository of the organisation: logs in, gets nothing.
    other = idp_sign(ci.gh, github_claims(ci.gh.issuer,
                                          repository="octo-org/other"))
    refused(pull(ci, "apps/app", "github", other, check=False))
    assert password_grant(ci, "github", other) == (200, {})

    # A repository of another owner named like ours: refused at the
    # login by required_claims (repository_owner).
    stranger = idp_sign(ci.gh, github_claims(
        ci.gh.issuer, repository="octo-org/app", owner="evil-org"))
    refused(pull(ci, "apps/app", "github", stranger, check=False))
    assert password_grant(ci, "github", stranger)[0] == 401
    # A token for another audience (a job asking for another service's).
    wrong_aud = idp_sign(ci.gh, github_claims(
        ci.gh.issuer, aud="https://elsewhere.example"))
    assert password_grant(ci, "github", wrong_aud)[0] == 401
    for t in (main, feat, other, stranger, wrong_aud):
        assert t not in ci.g.log_text()


def test_gitlab_ci_token(ci):
    main = idp_sign(ci.gl, gitlab_claims(ci.gl.issuer))
    out = pull(ci, "apps/app", "gitlab", main)
    assert json.loads(out.stdout)["schemaVersion"] == 2
    assert password_grant(ci, "gitlab", main) == (
        200, {("repository", "apps/app"): ["pull", "push"]})
    wait_for(lambda: [d for d in records(ci.rs) if d["subject"] ==
                      "gitlab:project_path:acme/app:ref_type:branch:ref:main"
                      and d["status"] == "200"],
             timeout=20, what="the GitLab job's login audited")

    feat = idp_sign(ci.gl, gitlab_claims(ci.gl.issuer, ref="feature"))
    pull(ci, "apps/app", "gitlab", feat)
    assert password_grant(ci, "gitlab", feat) == (
        200, {("repository", "apps/app"): ["pull"]})

    other = idp_sign(ci.gl, gitlab_claims(ci.gl.issuer,
                                          project="acme/other"))
    refused(pull(ci, "apps/app", "gitlab", other, check=False))
    assert password_grant(ci, "gitlab", other) == (200, {})

    # Another group (namespace_path): refused by required_claims.
    stranger = idp_sign(ci.gl, gitlab_claims(ci.gl.issuer,
                                             project="evil/app"))
    assert password_grant(ci, "gitlab", stranger)[0] == 401


def test_claims_do_not_cross_issuers(ci):
    # GitLab's claims in a token of the GitHub issuer: its project_path
    # matches the GitLab rule's claim (claim conditions are not scoped
    # to an issuer, as the README says), but the push rule names the
    # prefixed subject, which only the gitlab issuer makes.
    c = github_claims(ci.gh.issuer)
    c.update(sub="project_path:acme/app:ref_type:branch:ref:main",
             project_path="acme/app")
    tok = idp_sign(ci.gh, c)
    status, access = password_grant(ci, "github", tok)
    assert status == 200
    assert "push" not in access.get(("repository", "apps/app"), [])
    # And a token of the GitLab issuer with GitHub's sub gets no push.
    c = gitlab_claims(ci.gl.issuer)
    c.update(sub="repo:octo-org/app:ref:refs/heads/main")
    tok = idp_sign(ci.gl, c)
    status, access = password_grant(ci, "gitlab", tok)
    assert status == 200
    assert "push" not in access.get(("repository", "apps/app"), [])


def test_secret_login_lines_work_as_printed(ci):
    """`portcullis secret create` prints login lines whose user name
    holds no ':' (RFC 7617: docker and skopeo split user:password at
    the first ':', so "robot:ci" would send user "robot" and a password
    starting "ci:"); pasted as printed, they log in."""
    out = cli("secret", "create", "-c", ci.g.config_path, "--subject",
              "robot:ci").stdout
    secret = out.splitlines()[0]
    m = re.search(r"^  skopeo login --username '([^']*)' (\S+)$", out, re.M)
    assert m, out
    user = m.group(1)
    assert user == "robot_ci" and ":" not in user
    for tool in ("docker", "podman"):
        assert "  %s login --username 'robot_ci' " % tool in out
    # As printed (--creds is what `skopeo login` stores).
    out = pull(ci, "apps/other", user, secret)
    assert json.loads(out.stdout)["schemaVersion"] == 2
    wait_for(lambda: [d for d in records(ci.rs) if d["subject"] ==
                      "robot:ci" and d["auth_method"] == "secret" and
                      d["path"] == "/token" and d["status"] == "200"],
             timeout=20, what="the login with the secret audited")
    # What the old line sent: user "robot", password "ci:<secret>".
    refused(pull(ci, "apps/other", "robot", "ci:" + secret, check=False))
