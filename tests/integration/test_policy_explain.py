"""`portcullis policy explain`: the README's examples are run exactly as
written (against conf/policy.example.json) and their output compared with
the README text; JSON output, exit statuses (0 allow, 1 deny, 2 usage or
configuration error), and check-config naming every policy error by its
JSON path in one run."""

import json
import os
import re
import shlex
import subprocess

import pytest

from lib.gateway import REPO_ROOT, gateway_bin

EXAMPLE = os.path.join(REPO_ROOT, "conf", "policy.example.json")
BLOCKED = "sha256:bad0" + "0" * 56 + "0bad"


def run(*args):
    return subprocess.run([gateway_bin()] + list(args), capture_output=True,
                          text=True, timeout=30, cwd=REPO_ROOT)


def readme_examples():
    """(command, expected output) pairs from the README's explain block."""
    text = open(os.path.join(REPO_ROOT, "README.md")).read()
    m = re.search(r"<!-- policy-explain:begin -->\n```console\n(.*?)```\n"
                  r"<!-- policy-explain:end -->", text, re.S)
    assert m, "README has no policy-explain block"
    examples, cmd, out = [], None, []
    for line in m.group(1).split("\n"):
        if line.startswith("$ "):
            if cmd is not None:
                examples.append((cmd, "\n".join(out).rstrip("\n") + "\n"))
            cmd, out = line[2:], []
        else:
            out.append(line)
    if cmd is not None:
        examples.append((cmd, "\n".join(out).rstrip("\n") + "\n"))
    return examples


EXAMPLES = readme_examples()


def test_readme_has_examples():
    assert len(EXAMPLES) >= 5
    decisions = {out.split("\n")[0] for _, out in EXAMPLES}
    assert decisions == {"decision: allow", "decision: deny"}


@pytest.mark.parametrize("cmd,want", EXAMPLES,
                         ids=[str(i) for i in range(len(EXAMPLES))])
def test_readme_example(cmd, want):
    args = shlex.split(cmd)
    assert args[0] == "portcullis"
    r = run(*args[1:])
    assert r.stderr == ""
    assert r.stdout == want
    assert r.returncode == (0 if want.startswith("decision: allow\n")
                            else 1)


def test_json_format():
    r = run("policy", "explain", "-c", EXAMPLE, "--subject", "bob",
            "--group", "platform", "--upstream", "local", "--repo",
            "base/legacy/app", "--action", "push", "--format", "json")
    assert r.returncode == 1, r.stderr
    o = json.loads(r.stdout)
    assert o["decision"] == "deny" and o["why"] == "deny"
    assert o["rule"] == "legacy-frozen"
    assert o["principal"]["method"] == "token"
    assert o["principal"]["groups"] == ["platform"]
    rules = {x["id"]: x for x in o["rules"]}
    assert rules["platform"]["matched"] and not rules["platform"]["decides"]
    assert rules["legacy-frozen"]["decides"]
    assert rules["home"]["reason"] == "no repository pattern matched"
    assert rules["ops"]["reason"] == "action not in rule"
    assert [x["id"] for x in o["rules"]][0] == "hub-pull"

    r = run("policy", "explain", "-c", EXAMPLE, "--ip", "10.1.2.3",
            "--repo", "library/alpine", "--action", "pull", "--format",
            "json", "--digest", BLOCKED)
    o = json.loads(r.stdout)
    assert r.returncode == 1
    assert o["why"] == "blocked" and o["rule"] == BLOCKED
    assert o["request"]["digest_reason"] == "CVE-2024-12345 in openssl"
    assert o["request"]["upstream"] == "hub"       # the default upstream
    # Without the digest the same request is allowed by the network rule.
    r = run("policy", "explain", "-c", EXAMPLE, "--ip", "::ffff:10.1.2.3",
            "--repo", "library/alpine", "--action", "pull", "--format",
            "json")
    assert r.returncode == 0, r.stdout
    assert json.loads(r.stdout)["rule"] == "hub-pull"


def test_principal_from_options():
    # --mtls alone: method mtls, the DN as subject.
    r = run("policy", "explain", "-c", EXAMPLE, "--mtls",
            "CN=x\\,O=Example Nodes,O=Evil", "--repo", "library/alpine",
            "--action", "pull")
    # Authenticated, so hub-pull admits it; the node rule's '*' cannot
    # swallow the escaped comma.
    assert "rule: hub-pull (allow)\n" in r.stdout
    assert "  allow nodes: not matched: no subject matched\n" in r.stdout
    # A hostile subject never fills ${subject}.
    r = run("policy", "explain", "-c", EXAMPLE, "--subject", "..",
            "--upstream", "local", "--repo", "users/x", "--action", "pull")
    assert r.returncode == 1
    assert "  allow home: not matched: template value unusable\n" in r.stdout
    # Admin names no repository and no upstream.
    r = run("policy", "explain", "-c", EXAMPLE, "--subject", "carol",
            "--group", "ops", "--action", "admin")
    assert r.returncode == 0, r.stdout
    assert "rule: ops (allow)\n" in r.stdout
    assert "upstream=- repository=-" in r.stdout
    r = run("policy", "explain", "-c", EXAMPLE, "--subject", "bob",
            "--method", "secret", "--action", "admin")
    assert r.returncode == 1
    assert "principal: method=secret subject=bob\n" in r.stdout


@pytest.mark.parametrize("args,msg", [
    ([], "-c FILE is required"),
    (["-c", EXAMPLE], "--action is required"),
    (["-c", EXAMPLE, "--action", "fly"], "unknown action"),
    (["-c", EXAMPLE, "--action", "pull"], "--repo is required"),
    (["-c", EXAMPLE, "--action", "pull", "--repo", "../x"],
     "not a repository name"),
    (["-c", EXAMPLE, "--action", "pull", "--repo", "a", "--ip", "nope"],
     "not an IP address"),
    (["-c", EXAMPLE, "--action", "pull", "--repo", "a", "--claim", "x"],
     "--claim wants NAME=VALUE"),
    (["-c", EXAMPLE, "--action", "pull", "--repo", "a", "--method", "x"],
     "unknown method"),
    (["-c", EXAMPLE, "--action", "pull", "--repo", "a", "--upstream",
      "nope"], "no upstream 'nope'"),
    (["-c", EXAMPLE, "--action", "pull", "--repo", "a", "--digest",
      "sha256:1"], "not a digest"),
    (["-c", EXAMPLE, "--action", "pull", "--repo", "a", "--format", "xml"],
     "--format is text or json"),
])
def test_usage_errors_exit_2(args, msg):
    r = run("policy", "explain", *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert msg in r.stderr
    assert r.stdout == ""


def test_help_and_unknown_subcommand():
    r = run("policy", "--help")
    assert r.returncode == 0 and "policy explain" in r.stdout
    r = run("policy", "judge")
    assert r.returncode == 2 and "unknown command 'judge'" in r.stderr
    r = run("--help")
    assert "policy explain -c FILE" in r.stdout


def test_broken_policy_every_error_named(tmp_path):
    cfg = {
        "upstreams": [{"name": "hub", "url": "https://registry-1.docker.io",
                       "docker_hub": True, "default": True}],
        "policy": {"rules": [
            {"id": "a", "effect": "allow", "repositories": ["a**b"],
             "subjects": ["anonymous"], "actions": ["pull"]},
            {"id": "a", "effect": "deny", "repositories": ["x/${nope}"],
             "upstreams": ["ghost"], "subjects": ["wizard"],
             "actions": ["fly"]},
        ], "blocked_digests": ["sha256:abc"]},
    }
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(cfg))
    want = ["/policy/rules/0/repositories/0: '**' must be a whole segment",
            "/policy/rules/1/id: duplicate id",
            "/policy/rules/1/repositories/0: unknown template variable",
            "/policy/rules/1/upstreams/0: no upstream has this name",
            "/policy/rules/1/subjects/0: unknown subject",
            "/policy/rules/1/actions/0: unknown action",
            "/policy/blocked_digests/0: not a digest"]
    for cmd in (["check-config", "-c", str(p)],
                ["policy", "explain", "-c", str(p), "--action", "admin"]):
        r = run(*cmd)
        assert r.returncode == (1 if cmd[0] == "check-config" else 2)
        for w in want:
            assert w in r.stderr, r.stderr


def test_policy_file_relative_to_config(tmp_path):
    (tmp_path / "rules.json").write_text(json.dumps({"rules": [
        {"id": "f", "effect": "allow", "repositories": ["library/**"],
         "subjects": ["cidr:192.0.2.0/24"], "actions": ["pull"]}]}))
    (tmp_path / "gw.json").write_text(json.dumps({
        "upstreams": [{"name": "hub", "url": "https://registry-1.docker.io",
                       "docker_hub": True, "default": True}],
        "policy": {"file": "rules.json"}}))
    r = run("policy", "explain", "-c", str(tmp_path / "gw.json"), "--ip",
            "192.0.2.9", "--repo", "library/alpine", "--action", "pull")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "rule: f (allow)\n" in r.stdout
    (tmp_path / "rules.json").write_text('{"rules": [{"id": "f"}]}')
    r = run("check-config", "-c", str(tmp_path / "gw.json"))
    assert r.returncode == 1
    assert "rules.json#/rules/0/effect: is required" in r.stderr


def test_no_policy_denies_everything(tmp_path):
    (tmp_path / "gw.json").write_text(json.dumps({
        "upstreams": [{"name": "hub", "url": "https://registry-1.docker.io",
                       "docker_hub": True, "default": True}]}))
    r = run("policy", "explain", "-c", str(tmp_path / "gw.json"),
            "--subject", "root", "--action", "admin")
    assert r.returncode == 1
    assert "rule: none (no rule matched: default deny)\n" in r.stdout
    assert "  (none: every request is denied)\n" in r.stdout


def test_sighup_reloads_policy_and_logs_every_error(start_gateway, tmp_path):
    """The daemon: the rule count at start, a broken policy file refused
    on SIGHUP with every error and its path while the old one stays, an
    empty policy announced as denying everything."""
    import signal
    from lib.util import wait_for
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": [
        {"id": "lo", "effect": "allow", "repositories": ["**"],
         "subjects": ["cidr:127.0.0.0/8"], "actions": ["*"]}]}))
    cfg = {"upstreams": [{"name": "up", "url": "http://127.0.0.1:1",
                          "default": True}],
           "policy": {"file": str(rules)}}
    gw = start_gateway(cfg)
    wait_for(lambda: "policy loaded rules=1" in gw.log_text(),
             what="the rule count at start")

    def reload():
        n = gw.reloads_ended()
        os.kill(gw.pid, signal.SIGHUP)
        wait_for(lambda: gw.reloads_ended() > n,
                 what="the reload to be logged")

    rules.write_text(json.dumps({"rules": [
        {"id": "x", "effect": "allow", "repositories": ["a**"],
         "subjects": ["nobody"], "actions": ["pull"]}]}))
    reload()
    log = gw.log_text()
    assert "reload failed" in log
    assert str(rules) + "#/rules/0/repositories/0: '**' must be a " \
        "whole segment" in log
    assert str(rules) + "#/rules/0/subjects/0: unknown subject" in log

    plain = dict(gw.config)
    del plain["policy"]
    with open(gw.config_path, "w") as f:
        json.dump(plain, f)
    reload()
    assert "server reload done" in gw.log_text()
    assert "policy: no rules, every request is denied" in gw.log_text()
    assert gw.alive()


@pytest.mark.parametrize("action", ["admin", "catalog"])
def test_repo_never_widens_catalog_or_admin(tmp_path, action):
    """The gateway decides catalog and admin with no repository, so a rule
    scoped to some repositories never grants them (README).  Explain must
    not answer "allow" for them because a --repo was given: it refuses
    the option, and the engine ignores a repository for them anyway."""
    (tmp_path / "gw.json").write_text(json.dumps({
        "upstreams": [{"name": "hub", "url": "https://registry-1.docker.io",
                       "docker_hub": True, "default": True}],
        "policy": {"rules": [
            {"id": "team", "effect": "allow",
             "repositories": ["team/**"], "subjects": ["anonymous"],
             "actions": ["*"]}]}}))
    r = run("policy", "explain", "-c", str(tmp_path / "gw.json"),
            "--action", action, "--repo", "team/app")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "%s names no repository" % action in r.stderr
    assert r.stdout == ""
    r = run("policy", "explain", "-c", str(tmp_path / "gw.json"),
            "--action", action)
    assert r.returncode == 1, (r.stdout, r.stderr)


def test_hostile_strings_in_output(tmp_path):
    """What explain prints about the principal and a blocked digest's
    reason cannot forge a line of the text output, and JSON output never
    silently drops a field: a non-UTF-8 argument is a usage error."""
    bad = "sha256:" + "1" * 64
    (tmp_path / "gw.json").write_text(json.dumps({
        "upstreams": [{"name": "hub", "url": "https://registry-1.docker.io",
                       "docker_hub": True, "default": True}],
        "policy": {"rules": [
            {"id": "u", "effect": "allow", "repositories": ["users/**"],
             "subjects": ["user:bob"], "actions": ["pull"]}],
            "blocked_digests": [
                {"digest": bad, "reason": "x\ndecision: allow"}]}}))
    cfg = str(tmp_path / "gw.json")
    r = run("policy", "explain", "-c", cfg, "--action", "pull", "--repo",
            "users/a", "--subject", "eve\ndecision: allow", "--group",
            "g\rrule: forged", "--claim", "c=v\nrules:", "--mtls",
            "CN=x\n", "--digest", bad)
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stdout.split("\n")
    assert [ln for ln in lines if ln.startswith("decision:")] == \
        ["decision: deny"], r.stdout
    assert not any("\r" in ln for ln in lines), r.stdout
    assert [ln for ln in lines if ln == "rules:"] == ["rules:"], r.stdout
    # JSON keeps them, escaped by JSON itself.
    r = run("policy", "explain", "-c", cfg, "--action", "pull", "--repo",
            "users/a", "--subject", "eve\ndecision: allow", "--format",
            "json")
    assert r.returncode == 1
    assert json.loads(r.stdout)["principal"]["subject"] == \
        "eve\ndecision: allow"
    # Not UTF-8: refused rather than printed without its subject.
    r = subprocess.run([gateway_bin(), "policy", "explain", "-c", cfg,
                        "--action", "pull", "--repo", "users/a",
                        "--subject", b"b\xffob", "--format", "json"],
                       capture_output=True, timeout=30, cwd=REPO_ROOT)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert b"not UTF-8" in r.stderr


def test_upstream_never_scopes_admin(tmp_path):
    """/admin/* is decided with no upstream, so a rule limited to
    upstreams never grants admin; explain must not say it does because
    --upstream was given."""
    (tmp_path / "gw.json").write_text(json.dumps({
        "upstreams": [{"name": "hub", "url": "https://registry-1.docker.io",
                       "docker_hub": True, "default": True}],
        "policy": {"rules": [
            {"id": "hub-admin", "effect": "allow", "upstreams": ["hub"],
             "subjects": ["anonymous"], "actions": ["admin"]}]}}))
    r = run("policy", "explain", "-c", str(tmp_path / "gw.json"),
            "--action", "admin", "--upstream", "hub")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "admin names no upstream" in r.stderr
    r = run("policy", "explain", "-c", str(tmp_path / "gw.json"),
            "--action", "admin")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "hub-admin: not matched: upstream not listed" in r.stdout
