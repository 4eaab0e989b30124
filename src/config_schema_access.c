/*
 * config_schema_access.c: the schema rows that say who a caller is and
 * what it may do: the access policy (inline or in its file) and the
 * identity section (OpenID Connect issuers, the token service, browser
 * sign-in).  cfg_root_keys (config_schema.c) names these tables; the rules
 * of every schema table are stated there.
 */
#include <stddef.h>

#include "config.h"
#include "config_int.h"
#include "policy.h"

static const char *const cfg_effect_names[] = {
	"allow", "deny", NULL
};

/*
 * The access policy (policy.c compiles it).  Rules, blocked digests and
 * immutable tags are written inline or in the file that "file" names; the
 * POL_BODY rows appear in both tables.  What a row cannot say (subject
 * grammar, patterns, unique ids, known upstreams) policy_compile() checks,
 * with the same JSON pointers.
 */
#define SUBJ_OFF(f)	offsetof(struct pol_subject_src, f)
static const struct cfg_key cfg_policy_subject_keys[] = {
	{ .name = "match", .type = CFG_STRING, .flags = CFG_RELOAD,
	  .off = SUBJ_OFF(match), .def_doc = "none",
	  .help = "What a string entry sets: user:NAME, group:NAME, "
	  "anonymous, authenticated, cidr:NET/LEN (IPv4 or IPv6), or "
	  "mtls:DN (RFC 2253; '*' matches within one attribute value)." },
	{ .name = "claim", .type = CFG_STRING, .flags = CFG_RELOAD,
	  .off = SUBJ_OFF(claim), .def_doc = "none",
	  .help = "A claim condition: the verified claim's name." },
	{ .name = "equals", .type = CFG_STRING, .flags = CFG_RELOAD,
	  .off = SUBJ_OFF(equals), .def_doc = "none",
	  .help = "The claim (any of its values) equals this." },
	{ .name = "glob", .type = CFG_STRING, .flags = CFG_RELOAD,
	  .off = SUBJ_OFF(glob), .def_doc = "none",
	  .help = "The claim (any of its values) matches this pattern "
	  "(repository pattern grammar, no templates)." },
	{ .name = NULL }
};

#define RULE_OFF(f)	offsetof(struct pol_rule_src, f)
static const struct cfg_key cfg_policy_rule_keys[] = {
	{ .name = "id", .type = CFG_STRING,
	  .flags = CFG_RELOAD | CFG_REQUIRED, .off = RULE_OFF(id),
	  .help = "The rule's name in logs, audit records and explain "
	  "output: 1 to 64 of letters, digits, '.', '_', '-', ':'; unique." },
	{ .name = "effect", .type = CFG_ENUM,
	  .flags = CFG_RELOAD | CFG_REQUIRED, .off = RULE_OFF(effect),
	  .choices = cfg_effect_names,
	  .help = "allow, or deny (any matching deny beats every allow)." },
	{ .name = "repositories", .type = CFG_STRLIST, .flags = CFG_RELOAD,
	  .off = RULE_OFF(repositories),
	  .count_off = RULE_OFF(nrepositories), .min = 0, .max = 256,
	  .def_doc = "required unless actions are only catalog, admin",
	  .help = "Repository patterns (the upstream's names): '*' within a "
	  "segment, '?' one character, '**' whole segments, templates "
	  "${subject} and ${claim.NAME}." },
	{ .name = "upstreams", .type = CFG_STRLIST, .flags = CFG_RELOAD,
	  .off = RULE_OFF(upstreams), .count_off = RULE_OFF(nupstreams),
	  .min = 0, .max = 256, .def_doc = "every upstream",
	  .help = "Upstream names the rule is limited to." },
	{ .name = "subjects", .type = CFG_ARRAY,
	  .flags = CFG_RELOAD | CFG_SHORTHAND, .off = RULE_OFF(subjects),
	  .count_off = RULE_OFF(nsubjects), .min = 0, .max = 256,
	  .sub = cfg_policy_subject_keys,
	  .sub_size = sizeof(struct pol_subject_src), .def_doc = "required",
	  .help = "Who the rule is about; it matches when any entry does. "
	  "An entry is a string (see match) or a claim condition." },
	{ .name = "actions", .type = CFG_STRLIST, .flags = CFG_RELOAD,
	  .off = RULE_OFF(actions), .count_off = RULE_OFF(nactions),
	  .min = 0, .max = 6, .def_doc = "required",
	  .help = "pull, push, delete, catalog, admin, or * for all." },
	{ .name = NULL }
};

#define BLOCK_OFF(f)	offsetof(struct pol_blocked_src, f)
static const struct cfg_key cfg_policy_blocked_keys[] = {
	{ .name = "digest", .type = CFG_STRING,
	  .flags = CFG_RELOAD | CFG_REQUIRED, .off = BLOCK_OFF(digest),
	  .help = "A manifest or blob digest refused to everyone; a string "
	  "entry sets it." },
	{ .name = "reason", .type = CFG_STRING, .flags = CFG_RELOAD,
	  .off = BLOCK_OFF(reason), .def_doc = "none",
	  .help = "Why, for `policy explain` and the operator." },
	{ .name = NULL }
};

#define IMM_OFF(f)	offsetof(struct pol_immutable_src, f)
static const struct cfg_key cfg_policy_immutable_keys[] = {
	{ .name = "id", .type = CFG_STRING,
	  .flags = CFG_RELOAD | CFG_REQUIRED, .off = IMM_OFF(id),
	  .help = "The rule's name, unique among rules and immutable_tags." },
	{ .name = "repositories", .type = CFG_STRLIST, .flags = CFG_RELOAD,
	  .off = IMM_OFF(repositories), .count_off = IMM_OFF(nrepositories),
	  .min = 0, .max = 256, .def_doc = "required",
	  .help = "Repository patterns (no templates)." },
	{ .name = "upstreams", .type = CFG_STRLIST, .flags = CFG_RELOAD,
	  .off = IMM_OFF(upstreams), .count_off = IMM_OFF(nupstreams),
	  .min = 0, .max = 256, .def_doc = "every upstream",
	  .help = "Upstream names the rule is limited to." },
	{ .name = "tags", .type = CFG_STRLIST, .flags = CFG_RELOAD,
	  .off = IMM_OFF(tags), .count_off = IMM_OFF(ntags),
	  .min = 0, .max = 256, .def_doc = "required",
	  .help = "Tag globs ('*', '?'); a tag matching one cannot be moved "
	  "once it exists." },
	{ .name = NULL }
};

#define POL_OFF(f)	offsetof(struct pol_src, f)
#define POL_BODY_ROWS							\
	{ .name = "rules", .type = CFG_ARRAY, .flags = CFG_RELOAD,	\
	  .off = POL_OFF(rules), .count_off = POL_OFF(nrules),		\
	  .min = 0, .max = 1000000, .sub = cfg_policy_rule_keys,	\
	  .sub_size = sizeof(struct pol_rule_src), .def_doc = "none",	\
	  .help = "Access rules.  Default deny; a request is allowed "	\
	  "when an allow rule matches and no deny rule does, whatever "	\
	  "their order." },						\
	{ .name = "blocked_digests", .type = CFG_ARRAY,			\
	  .flags = CFG_RELOAD | CFG_SHORTHAND, .off = POL_OFF(blocked),	\
	  .count_off = POL_OFF(nblocked), .min = 0, .max = 1000000,	\
	  .sub = cfg_policy_blocked_keys,				\
	  .sub_size = sizeof(struct pol_blocked_src),			\
	  .def_doc = "none",						\
	  .help = "Digests refused (403 DENIED) through every repository " \
	  "and tag, cached or not; an entry is a digest string or an "	\
	  "object." },							\
	{ .name = "immutable_tags", .type = CFG_ARRAY, .flags = CFG_RELOAD, \
	  .off = POL_OFF(immutable), .count_off = POL_OFF(nimmutable),	\
	  .min = 0, .max = 10000, .sub = cfg_policy_immutable_keys,	\
	  .sub_size = sizeof(struct pol_immutable_src),			\
	  .def_doc = "none",						\
	  .help = "Tags that a manifest PUT may create but never move." }

/* What a policy file holds. */
const struct cfg_key cfg_policy_file_keys[] = {
	POL_BODY_ROWS,
	{ .name = NULL }
};

const struct cfg_key cfg_policy_keys[] = {
	POL_BODY_ROWS,
	{ .name = "max_rules", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = POL_OFF(max_rules), .min = 1, .max = 1000000, .def = 10000,
	  .help = "Most rules a policy may hold." },
	{ .name = "max_blocked_digests", .type = CFG_SIZE,
	  .flags = CFG_RELOAD, .off = POL_OFF(max_blocked), .min = 1,
	  .max = 1000000, .def = 100000,
	  .help = "Most entries in blocked_digests." },
	{ .name = "max_pattern_bytes", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = POL_OFF(max_pattern_bytes), .min = 16, .max = 4096,
	  .def = 512,
	  .help = "Longest repository pattern, tag glob or claim glob." },
	{ .name = "max_file_bytes", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = POL_OFF(max_file_bytes), .min = 1024, .max = 67108864,
	  .def = 4194304,
	  .help = "Largest policy file; refused before it is read." },
	{ .name = "file", .type = CFG_PATH, .flags = CFG_RELOAD,
	  .off = POL_OFF(file), .loaded = cfg_load_policy_file,
	  .def_doc = "inline",
	  .help = "JSON file holding rules, blocked_digests and "
	  "immutable_tags instead of this object (relative to the "
	  "configuration file); reread on reload." },
	{ .name = NULL }
};

/*
 * OpenID Connect issuers (oidc.c fetches their keys; the identity stage
 * verifies their tokens).  A reload keeps an issuer's keys when its name,
 * issuer, ca_file and jwks_hosts stay the same; otherwise it starts over.
 */
#define OCL_OFF(f)	offsetof(struct config_oidc_claim, f)
static const struct cfg_key cfg_oidc_claim_keys[] = {
	{ .name = "claim", .type = CFG_STRING,
	  .flags = CFG_RELOAD | CFG_REQUIRED, .off = OCL_OFF(claim),
	  .check = cfg_check_claim,
	  .help = "Name of a claim the token must carry." },
	{ .name = "equals", .type = CFG_STRING,
	  .flags = CFG_RELOAD | CFG_REQUIRED, .off = OCL_OFF(equals),
	  .check = cfg_check_audience,
	  .help = "The value it must have (a string claim, or one element "
	  "of an array claim)." },
	{ .name = NULL }
};

#define OIDC_OFF(f)	offsetof(struct config_oidc_issuer, f)
static const struct cfg_key cfg_oidc_issuer_keys[] = {
	{ .name = "name", .type = CFG_STRING,
	  .flags = CFG_RELOAD | CFG_REQUIRED, .off = OIDC_OFF(name),
	  .check = cfg_check_name,
	  .help = "Unique name of the issuer in logs, audit records and "
	  "GET /admin/identity: lowercase letters, digits and '-', at most "
	  "32." },
	{ .name = "issuer", .type = CFG_STRING,
	  .flags = CFG_RELOAD | CFG_REQUIRED, .off = OIDC_OFF(issuer),
	  .check = cfg_check_issuer,
	  .help = "Issuer identifier, exactly as the IdP's discovery "
	  "document and tokens write it: an https URL, or http with a "
	  "numeric loopback host (tests). Its /.well-known/openid-"
	  "configuration is fetched. Unique." },
	{ .name = "audiences", .type = CFG_STRLIST,
	  .flags = CFG_RELOAD | CFG_REQUIRED, .off = OIDC_OFF(audiences),
	  .count_off = OIDC_OFF(naudiences), .min = 1, .max = 64,
	  .check = cfg_check_audience,
	  .help = "Accepted aud values: a token must name one of them." },
	{ .name = "subject_claim", .type = CFG_STRING, .flags = CFG_RELOAD,
	  .off = OIDC_OFF(subject_claim), .def_str = "sub",
	  .check = cfg_check_claim,
	  .help = "Claim whose string value is the caller's subject (after "
	  "prefix)." },
	{ .name = "groups_claim", .type = CFG_STRING, .flags = CFG_RELOAD,
	  .off = OIDC_OFF(groups_claim), .def_doc = "none",
	  .check = cfg_check_claim,
	  .help = "Claim (a string or an array of strings) whose values are "
	  "the caller's groups (after prefix)." },
	{ .name = "prefix", .type = CFG_STRING, .flags = CFG_RELOAD,
	  .off = OIDC_OFF(prefix), .def_doc = "none",
	  .check = cfg_check_audience,
	  .help = "Put before the subject and each group, e.g. \"gitlab:\", "
	  "so that two issuers cannot name the same user or group; with "
	  "several issuers, required, and none may begin another's." },
	{ .name = "algorithms", .type = CFG_STRLIST, .flags = CFG_RELOAD,
	  .off = OIDC_OFF(algorithms), .count_off = OIDC_OFF(nalgorithms),
	  .min = 1, .max = 6, .check = cfg_check_algorithm,
	  .def_doc = "[\"RS256\"]",
	  .help = "Signature algorithms accepted from this issuer: RS256, "
	  "RS384, RS512, PS256, ES256, ES384. Never none or HMAC." },
	{ .name = "required_claims", .type = CFG_ARRAY, .flags = CFG_RELOAD,
	  .off = OIDC_OFF(required_claims),
	  .count_off = OIDC_OFF(nrequired_claims), .min = 0, .max = 32,
	  .sub = cfg_oidc_claim_keys,
	  .sub_size = sizeof(struct config_oidc_claim), .def_doc = "none",
	  .help = "Claims a token of this issuer must carry with the given "
	  "value, e.g. {\"claim\": \"namespace_path\", \"equals\": "
	  "\"acme\"}." },
	{ .name = "ca_file", .type = CFG_PATH, .flags = CFG_RELOAD,
	  .off = OIDC_OFF(ca_file), .def_doc = "system CAs",
	  .help = "PEM CA bundle that verifies the issuer's (and its "
	  "jwks_uri's) certificate." },
	{ .name = "jwks_hosts", .type = CFG_STRLIST, .flags = CFG_RELOAD,
	  .off = OIDC_OFF(jwks_hosts), .count_off = OIDC_OFF(njwks_hosts),
	  .min = 0, .max = 64, .check = cfg_check_host, .def_doc = "none",
	  .help = "Hosts (host, or host:port) besides the issuer's own "
	  "origin that the discovery document's jwks_uri may name and that "
	  "may be dialled at a loopback, private or other non-public "
	  "address; any other jwks_uri host must resolve to a public "
	  "address." },
	{ .name = "refresh", .type = CFG_SECONDS, .flags = CFG_RELOAD,
	  .off = OIDC_OFF(refresh_ms), .min = 1000, .max = 86400000,
	  .def = 3600000,
	  .help = "Discovery and JWKS are fetched again this often (with "
	  "up to 10% jitter)." },
	{ .name = "min_refresh_interval", .type = CFG_SECONDS,
	  .flags = CFG_RELOAD, .off = OIDC_OFF(min_refresh_ms), .min = 1000,
	  .max = 86400000, .def = 30000,
	  .help = "A token with an unknown kid triggers a fetch at most "
	  "this often; also the first retry delay after a failed fetch "
	  "(doubling up to refresh)." },
	{ .name = "leeway", .type = CFG_SECONDS, .flags = CFG_RELOAD,
	  .off = OIDC_OFF(leeway_ms), .min = 0, .max = 600000, .def = 60000,
	  .help = "Clock skew allowed when checking a token's exp, nbf and "
	  "iat." },
	{ .name = "max_discovery_bytes", .type = CFG_SIZE,
	  .flags = CFG_RELOAD, .off = OIDC_OFF(max_discovery_bytes),
	  .min = 1024, .max = 1048576, .def = 65536,
	  .help = "Largest discovery document read; larger is a failed "
	  "fetch." },
	{ .name = "max_jwks_bytes", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = OIDC_OFF(max_jwks_bytes), .min = 256, .max = 4194304,
	  .def = 262144,
	  .help = "Largest JWKS document read; larger is a failed fetch "
	  "(the keys held before stay)." },
	{ .name = "max_keys", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = OIDC_OFF(max_keys), .min = 1, .max = 1000, .def = 32,
	  .help = "Most keys in one JWKS; more is a failed fetch." },
	{ .name = "max_waiters", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = OIDC_OFF(max_waiters), .min = 1, .max = 100000,
	  .def = 1024,
	  .help = "Requests that may wait at once for a fetch an unknown "
	  "kid started; more are answered at once as unknown kid." },
	{ .name = NULL }
};

/*
 * The token service and the gateway's own Bearer tokens (token.c,
 * token_verify.c, identity.c).  Every key reloads: the key files are read
 * again, and the verified-token cache is emptied, so a key taken out stops
 * verifying at once.
 */
#define VK_OFF(f)	offsetof(struct config_token_vkey, f)
static const struct cfg_key cfg_token_vkey_keys[] = {
	{ .name = "file", .type = CFG_PATH, .flags = CFG_RELOAD | CFG_REQUIRED,
	  .off = VK_OFF(file), .loaded = cfg_load_verification_key,
	  .help = "The .key file of a rotated-out signing key, which "
	  "still verifies the tokens it signed (it signs nothing)." },
	{ .name = "valid_until", .type = CFG_STRING,
	  .flags = CFG_RELOAD | CFG_REQUIRED, .off = VK_OFF(valid_until),
	  .check = cfg_check_rfc3339,
	  .help = "UTC time (YYYY-MM-DDTHH:MM:SSZ) after which the key "
	  "verifies nothing and leaves /.well-known/jwks.json; set it at "
	  "least expires_in (refresh_expires_in for refresh tokens) after "
	  "the rotation." },
	{ .name = NULL }
};

#define TOK_OFF(f)	offsetof(struct config_token, f)
static const struct cfg_key cfg_token_keys[] = {
	{ .name = "signing_key", .type = CFG_PATH,
	  .flags = CFG_RELOAD | CFG_REQUIRED, .off = TOK_OFF(signing_key),
	  .loaded = cfg_load_signing_key,
	  .help = "PEM private key that signs tokens (`portcullis keygen`: "
	  "EC P-256, P-384 or RSA); its libtrust kid goes in each token." },
	{ .name = "verification_keys", .type = CFG_ARRAY, .flags = CFG_RELOAD,
	  .off = TOK_OFF(vkeys), .count_off = TOK_OFF(nvkeys), .min = 0,
	  .max = 8, .sub = cfg_token_vkey_keys,
	  .sub_size = sizeof(struct config_token_vkey), .def_doc = "none",
	  .help = "Rotated-out keys, each verifying until its valid_until." },
	{ .name = "issuer", .type = CFG_STRING, .flags = CFG_RELOAD,
	  .off = TOK_OFF(issuer), .def_str = "portcullis",
	  .check = cfg_check_service,
	  .help = "The iss of issued tokens (registry:2's "
	  "auth.token.issuer)." },
	{ .name = "service", .type = CFG_STRING, .flags = CFG_RELOAD,
	  .off = TOK_OFF(service), .def_doc = "the top-level service",
	  .check = cfg_check_service,
	  .help = "The aud of issued tokens and the service= of challenges "
	  "(registry:2's auth.token.service)." },
	{ .name = "expires_in", .type = CFG_INT, .flags = CFG_RELOAD,
	  .off = TOK_OFF(expires_in), .min = 60, .max = 86400, .def = 300,
	  .help = "Lifetime of an access token, in seconds." },
	{ .name = "refresh_expires_in", .type = CFG_INT, .flags = CFG_RELOAD,
	  .off = TOK_OFF(refresh_expires_in), .min = 60, .max = 31536000,
	  .def = 604800,
	  .help = "Lifetime of a refresh token (offline_token=true), in "
	  "seconds." },
	{ .name = "max_token_bytes", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = TOK_OFF(max_token_bytes), .min = 256, .max = 65536,
	  .def = 16384,
	  .help = "Longest Bearer or refresh token verified; longer is "
	  "refused unread." },
	{ .name = "leeway", .type = CFG_INT, .flags = CFG_RELOAD,
	  .off = TOK_OFF(leeway), .min = 0, .max = 600, .def = 30,
	  .help = "Clock skew allowed on exp, nbf and iat, in seconds." },
	{ .name = "max_claims", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = TOK_OFF(max_claims), .min = 8, .max = 4096, .def = 256,
	  .help = "String claim values a token may carry; more refuses it." },
	{ .name = "max_claim_bytes", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = TOK_OFF(max_claim_bytes), .min = 64, .max = 16384,
	  .def = 1024,
	  .help = "Longest claim name or value; longer refuses the token." },
	{ .name = "max_scopes", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = TOK_OFF(max_scopes), .min = 1, .max = 1024, .def = 32,
	  .help = "Distinct scopes one /token request may ask (and one "
	  "token's access claim may hold); more is 400." },
	{ .name = "max_body_bytes", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = TOK_OFF(max_body_bytes), .min = 1024, .max = 1048576,
	  .def = 65536,
	  .help = "Largest POST /token form body; larger is 413." },
	{ .name = "cache_entries", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = TOK_OFF(cache_entries), .min = 1, .max = 16777216,
	  .def = 10000,
	  .help = "Verified gateway tokens kept (until their exp) so "
	  "repeated requests skip the signature check." },
	{ .name = NULL }
};

/*
 * Browser sign-in (sso.c, sso_page.c; README "Sign-in for people
 * (browser)").  Every key reloads; sessions and states live in Redis and
 * outlast a reload.
 */
#define SSO_OFF(f)	offsetof(struct config_sso, f)
static const struct cfg_key cfg_sso_keys[] = {
	{ .name = "issuer", .type = CFG_STRING,
	  .flags = CFG_RELOAD | CFG_REQUIRED, .off = SSO_OFF(issuer),
	  .check = cfg_check_name,
	  .help = "Name of the identity.issuers entry people sign in at; its "
	  "discovery document gives the authorization and token endpoints, "
	  "its keys verify the id_token, its prefix, subject_claim and "
	  "groups_claim make the principal." },
	{ .name = "client_id", .type = CFG_STRING,
	  .flags = CFG_RELOAD | CFG_REQUIRED, .off = SSO_OFF(client_id),
	  .check = cfg_check_audience,
	  .help = "The gateway's client at the provider (a confidential "
	  "client, client_secret_basic); the id_token's aud must name it." },
	{ .name = "client_secret_file", .type = CFG_PATH,
	  .flags = CFG_RELOAD | CFG_REQUIRED,
	  .off = SSO_OFF(client_secret_file), .loaded = cfg_load_sso_secret,
	  .help = "File holding the client secret on one line; relative to "
	  "the configuration file. Never printed." },
	{ .name = "redirect_url", .type = CFG_STRING, .flags = CFG_RELOAD,
	  .off = SSO_OFF(redirect_url), .check = cfg_check_redirect_url,
	  .def_doc = "external_url + /oauth2/callback",
	  .help = "The redirect_uri registered at the provider: an http(s) "
	  "URL whose path is /oauth2/callback. Without it external_url is "
	  "required (the Host header is the client's to choose)." },
	{ .name = "scopes", .type = CFG_STRLIST, .flags = CFG_RELOAD,
	  .off = SSO_OFF(scopes), .count_off = SSO_OFF(nscopes), .min = 1,
	  .max = 32, .check = cfg_check_scope_token,
	  .def_doc = "[\"openid\", \"profile\", \"email\", \"groups\"]",
	  .help = "Scopes asked for; must include openid." },
	{ .name = "key_prefix", .type = CFG_STRING, .flags = CFG_RELOAD,
	  .off = SSO_OFF(key_prefix), .def_str = "portcullis:sso:",
	  .check = cfg_check_stream_key,
	  .help = "Prefix of the Redis keys of sign-in states "
	  "(<prefix>state:<state>) and sessions (<prefix>session:<SHA-256 "
	  "of the cookie>)." },
	{ .name = "cookie_name", .type = CFG_STRING, .flags = CFG_RELOAD,
	  .off = SSO_OFF(cookie_name), .def_str = "portcullis_session",
	  .check = cfg_check_cookie_name,
	  .help = "Name of the session cookie: letters, digits, '_' and "
	  "'-', at most 64." },
	{ .name = "session_lifetime", .type = CFG_SECONDS, .flags = CFG_RELOAD,
	  .off = SSO_OFF(session_ttl_ms), .min = 60000, .max = 604800000,
	  .def = 28800000,
	  .help = "How long a browser session lasts from sign-in (the "
	  "cookie's Max-Age and the Redis key's expiry)." },
	{ .name = "state_lifetime", .type = CFG_SECONDS, .flags = CFG_RELOAD,
	  .off = SSO_OFF(state_ttl_ms), .min = 10000, .max = 3600000,
	  .def = 600000,
	  .help = "How long a sign-in started at /login may take to come "
	  "back to /oauth2/callback; the state is used once." },
	{ .name = "secret_lifetime", .type = CFG_INT, .flags = CFG_RELOAD,
	  .off = SSO_OFF(secret_lifetime), .min = 0, .max = 315360000,
	  .def = 7776000,
	  .help = "Seconds a secret made on the landing page is valid "
	  "(0: until revoked)." },
	{ .name = "max_secrets", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = SSO_OFF(max_secrets), .min = 1, .max = 1000, .def = 20,
	  .help = "Secrets one person may hold from the landing page "
	  "(revoked and expired ones count until deleted); the list shows "
	  "at most this many." },
	{ .name = "activity_records", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = SSO_OFF(activity_records), .min = 0, .max = 200, .def = 20,
	  .help = "Recent audit records of the person shown on the landing "
	  "page (0: none)." },
	{ .name = "max_cookie_bytes", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = SSO_OFF(max_cookie_bytes), .min = 256, .max = 16384,
	  .def = 4096,
	  .help = "Longest Cookie header looked into; a longer one is "
	  "treated as no session." },
	{ .name = "max_state_bytes", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = SSO_OFF(max_state_bytes), .min = 43, .max = 1024, .def = 128,
	  .help = "Longest state parameter taken on the callback; longer is "
	  "400." },
	{ .name = "max_code_bytes", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = SSO_OFF(max_code_bytes), .min = 16, .max = 16384,
	  .def = 2048,
	  .help = "Longest authorization code taken on the callback; longer "
	  "is 400." },
	{ .name = "max_token_response_bytes", .type = CFG_SIZE,
	  .flags = CFG_RELOAD, .off = SSO_OFF(max_token_response_bytes),
	  .min = 1024, .max = 1048576, .def = 65536,
	  .help = "Largest token endpoint answer read; larger fails the "
	  "sign-in. Also the largest userinfo answer read before a secret is "
	  "made on the landing page; larger makes none (503)." },
	{ .name = "max_id_token_bytes", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = SSO_OFF(max_id_token_bytes), .min = 512, .max = 65536,
	  .def = 16384,
	  .help = "Longest id_token verified; longer fails the sign-in." },
	{ .name = "max_form_bytes", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = SSO_OFF(max_form_bytes), .min = 256, .max = 65536,
	  .def = 4096,
	  .help = "Largest form posted to the landing page (create or revoke "
	  "a secret, sign out); larger is 413." },
	{ .name = "max_provider_token_bytes", .type = CFG_SIZE,
	  .flags = CFG_RELOAD, .off = SSO_OFF(max_provider_token_bytes),
	  .min = 256, .max = 32768, .def = 16384,
	  .help = "Longest provider access token kept (sealed) in a browser "
	  "session for the userinfo re-check before a secret is made; a "
	  "longer one is not kept, and that session makes no secret (sign "
	  "in again)." },
	{ .name = "session_index_rebuild", .type = CFG_SIZE,
	  .flags = CFG_RELOAD, .off = SSO_OFF(session_index_rebuild),
	  .min = 2, .max = 100000, .def = 64,
	  .help = "Members of a person's session index (<prefix>sessions:"
	  "<subject>, for \"sign out everywhere\") at which a sign-in "
	  "rebuilds it from its live sessions; each rebuild reads every "
	  "member in one Redis script." },
	{ .name = "cli_client_id", .type = CFG_STRING, .flags = CFG_RELOAD,
	  .off = SSO_OFF(cli_client_id), .check = cfg_check_audience,
	  .def_doc = "no terminal sign-in",
	  .help = "The public client at the provider that `portcullis login` "
	  "uses (grants device_code and refresh_token); advertised at "
	  "/.well-known/portcullis. The issuer's audiences must name it: "
	  "its id_token is the password of the exchange at /token (README "
	  "\"Sign-in from a terminal\")." },
	{ .name = "recheck_interval", .type = CFG_SECONDS, .flags = CFG_RELOAD,
	  .off = SSO_OFF(recheck_interval_ms), .min = 0, .max = 3600000,
	  .def = 0,
	  .help = "How long the groups of a terminal sign-in's last check "
	  "with the provider stand in for a new one at the refresh grant "
	  "(0: every refresh asks the provider). Removing a person from a "
	  "group takes effect within this plus an access token's lifetime." },
	{ .name = "max_logins_per_minute", .type = CFG_SIZE,
	  .flags = CFG_RELOAD, .off = SSO_OFF(max_logins_per_minute),
	  .min = 0, .max = 10000000, .def = 6000,
	  .help = "Sign-ins begun at /login per minute over all instances "
	  "(counted in Redis); past it /login is 429. Each keeps a state in "
	  "Redis for state_lifetime, so this bounds them (0: no bound)." },
	{ .name = NULL }
};

#define IDENT_OFF(f)	offsetof(struct config_identity, f)
const struct cfg_key cfg_identity_keys[] = {
	{ .name = "token", .type = CFG_PTR_OBJECT, .flags = CFG_RELOAD,
	  .off = IDENT_OFF(token), .sub = cfg_token_keys,
	  .sub_size = sizeof(struct config_token),
	  .def_doc = "no token service",
	  .help = "The Docker token service at /token and the gateway's own "
	  "Bearer tokens (README \"Token service\")." },
	{ .name = "issuers", .type = CFG_ARRAY, .flags = CFG_RELOAD,
	  .off = IDENT_OFF(issuers), .count_off = IDENT_OFF(nissuers),
	  .min = 0, .max = 32, .sub = cfg_oidc_issuer_keys,
	  .sub_size = sizeof(struct config_oidc_issuer), .def_doc = "none",
	  .help = "OpenID Connect issuers whose tokens identify callers "
	  "(README \"Identity providers\")." },
	{ .name = "idp_cache_entries", .type = CFG_SIZE, .flags = CFG_RELOAD,
	  .off = IDENT_OFF(idp_cache_entries), .min = 0, .max = 16777216,
	  .def = 10000,
	  .help = "Verified IdP tokens kept (until exp plus the issuer's "
	  "leeway, while the key that verified them is still the "
	  "issuer's) so repeated requests skip the signature check; 0 "
	  "keeps none." },
	{ .name = "sso", .type = CFG_PTR_OBJECT, .flags = CFG_RELOAD,
	  .off = IDENT_OFF(sso), .sub = cfg_sso_keys,
	  .sub_size = sizeof(struct config_sso),
	  .def_doc = "no browser sign-in",
	  .help = "Sign-in for people in a browser: /login, "
	  "/oauth2/callback, the landing page at / (README \"Sign-in for "
	  "people (browser)\"). Needs the redis section." },
	{ .name = NULL }
};
