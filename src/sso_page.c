/*
 * sso_page.c: the HTML of the browser sign-in (sso.c decides, this file
 * writes): the landing page — who you are, your groups, what the policy
 * lets you pull and push, your secrets (a new one shown once, with the
 * login lines to paste), your recent activity — and the short message
 * pages (signed out, a refused sign-in).  Server-rendered, no script, one
 * stylesheet the gateway serves itself (/ui/style.css), so the pages
 * work under the strict Content-Security-Policy sso.c sends.
 *
 * Every value that is not a literal of this file goes through wbuf_esc()
 * (web.c), claims and group names above all: an identity provider's
 * values are peer input.  Every form carries the session's CSRF token.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "policy.h"
#include "principal.h"
#include "secret.h"
#include "sso.h"

const char sso_stylesheet[] =
    "body{font-family:system-ui,sans-serif;margin:0;color:#1d2330;"
    "background:#f4f5f7}\n"
    "header{background:#1d2330;color:#fff;padding:.8em 1.5em;display:flex;"
    "justify-content:space-between;align-items:center}\n"
    "header h1{font-size:1.2em;margin:0}\n"
    "main{max-width:60em;margin:1.5em auto;padding:0 1em}\n"
    "section{background:#fff;border:1px solid #d8dbe2;border-radius:6px;"
    "padding:1em 1.5em;margin-bottom:1.2em}\n"
    "h2{font-size:1.05em;margin-top:0}\n"
    "table{border-collapse:collapse;width:100%}\n"
    "th,td{text-align:left;padding:.3em .5em;border-bottom:1px solid "
    "#eceef2;font-size:.92em;vertical-align:top}\n"
    "code,pre{font-family:ui-monospace,monospace;background:#eef0f4;"
    "padding:.1em .3em;border-radius:3px}\n"
    "pre{padding:.6em;overflow-x:auto;white-space:pre-wrap;"
    "word-break:break-all}\n"
    ".secret{border-color:#2f7d32;background:#f1f8f1}\n"
    ".tag{display:inline-block;background:#e3e8f4;border-radius:3px;"
    "padding:0 .4em;margin:0 .2em .2em 0}\n"
    ".muted{color:#667085}\n"
    ".notice{border-color:#b54708;background:#fffaeb}\n"
    "button,input[type=submit]{cursor:pointer}\n"
    "form.inline{display:inline}\n"
    "a.button{display:inline-block;background:#1d2330;color:#fff;"
    "padding:.5em 1em;border-radius:4px;text-decoration:none}\n";

static void
page_head(struct wbuf *b, const char *title)
{
	wbuf_str(b, "<!DOCTYPE html>\n<html lang=\"en\"><head>"
	    "<meta charset=\"utf-8\"><meta name=\"viewport\" "
	    "content=\"width=device-width, initial-scale=1\"><title>");
	wbuf_esc(b, title);
	wbuf_str(b, " — portcullis</title><link rel=\"stylesheet\" "
	    "href=\"/ui/style.css\"></head><body>\n");
}

static void
page_time(struct wbuf *b, int64_t t)
{
	struct tm	 tm;
	time_t		 tt = (time_t)t;
	char		 buf[32];

	if (t == 0) {
		wbuf_str(b, "—");
		return;
	}
	gmtime_r(&tt, &tm);
	strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M UTC", &tm);
	wbuf_esc(b, buf);
}

static void
page_csrf(struct wbuf *b, const char *csrf)
{
	wbuf_str(b, "<input type=\"hidden\" name=\"csrf\" value=\"");
	wbuf_esc(b, csrf);
	wbuf_str(b, "\">");
}

/* A message page: a title, a sentence, and a link to sign in again. */
void
sso_page_message(struct wbuf *b, const char *title, const char *text,
    int sign_in_link)
{
	page_head(b, title);
	wbuf_str(b, "<header><h1>portcullis</h1></header><main><section>"
	    "<h2>");
	wbuf_esc(b, title);
	wbuf_str(b, "</h2><p>");
	wbuf_esc(b, text);
	wbuf_str(b, "</p>");
	if (sign_in_link)
		wbuf_str(b, "<p><a class=\"button\" href=\"/login\">Sign in"
		    "</a></p>");
	wbuf_str(b, "</section></main></body></html>\n");
}

struct page_pats {
	struct wbuf	*b;
	size_t		 n;
};

static void
page_pattern(void *arg, const char *rule, const char *pat,
    const char *const *ups, size_t nups)
{
	struct page_pats	*pp = arg;
	size_t			 i;

	wbuf_str(pp->b, "<tr><td><code>");
	wbuf_esc(pp->b, pat);
	wbuf_str(pp->b, "</code></td><td>");
	if (nups == 0)
		wbuf_str(pp->b, "<span class=\"muted\">any</span>");
	for (i = 0; i < nups; i++) {
		wbuf_str(pp->b, i > 0 ? ", " : "");
		wbuf_esc(pp->b, ups[i]);
	}
	wbuf_str(pp->b, "</td><td class=\"muted\">");
	wbuf_esc(pp->b, rule);
	wbuf_str(pp->b, "</td></tr>\n");
	pp->n++;
}

static void
page_access(struct wbuf *b, const struct sso_view *v)
{
	static const struct {
		enum pol_action	 a;
		const char	*what;
	} acts[] = { { POL_PULL, "pull" }, { POL_PUSH, "push" } };
	struct page_pats	 pp;
	size_t			 i;

	wbuf_str(b, "<section id=\"access\"><h2>What you may pull and push"
	    "</h2><p class=\"muted\">Repository patterns of the policy "
	    "rules that allow you (<code>*</code> one path segment, "
	    "<code>**</code> any). A deny rule may still refuse a "
	    "repository.</p>\n");
	for (i = 0; i < sizeof(acts) / sizeof(acts[0]); i++) {
		wbuf_printf(b, "<h3>%s</h3><table id=\"%s\"><tr><th>repository"
		    "</th><th>upstreams</th><th>rule</th></tr>\n",
		    acts[i].what, acts[i].what);
		pp.b = b;
		pp.n = 0;
		(void)policy_allow_patterns(v->policy, v->principal,
		    acts[i].a, page_pattern, &pp);
		if (pp.n == 0)
			wbuf_str(b, "<tr><td colspan=\"3\" class=\"muted\">"
			    "nothing</td></tr>\n");
		wbuf_str(b, "</table>\n");
	}
	wbuf_str(b, "</section>\n");
}

static void
page_new_secret(struct wbuf *b, const struct sso_view *v)
{
	static const char *const tools[] = { "docker", "podman", "skopeo" };
	char			 user[SECRET_FIELD_MAX + 1];
	size_t			 i;

	wbuf_str(b, "<section class=\"secret\" id=\"new-secret\"><h2>Your new "
	    "secret</h2><p>Shown <strong>once</strong>: copy it now. It "
	    "is stored only as a hash.</p><pre id=\"secret-value\">");
	wbuf_esc(b, v->new_secret);
	/* The same user name as `portcullis secret create` prints. */
	secret_login_user(v->subject != NULL ? v->subject : "", user,
	    sizeof(user));
	wbuf_str(b, "</pre><p>Log in with it (paste it at the password "
	    "prompt; the user name is not checked):</p><pre "
	    "id=\"login-lines\">");
	for (i = 0; i < 3; i++) {
		wbuf_esc(b, tools[i]);
		wbuf_str(b, " login --username '");
		wbuf_esc(b, user);	/* no quote: secret_login_user */
		wbuf_str(b, "' ");
		wbuf_esc(b, v->registry_host);
		wbuf_str(b, "\n");
	}
	wbuf_str(b, "</pre></section>\n");
}

static void
page_secrets(struct wbuf *b, const struct sso_view *v, int64_t now)
{
	const struct sso_secret_row	*s;
	size_t				 i;

	wbuf_str(b, "<section id=\"secrets\"><h2>Your secrets</h2>"
	    "<p class=\"muted\">Passwords for <code>docker login</code>, "
	    "<code>podman login</code> and <code>skopeo login</code> that "
	    "carry your identity and groups as of now.</p>\n");
	if (v->secrets_failed)
		wbuf_str(b, "<p class=\"notice\">The secret store did not "
		    "answer; the list is missing.</p>\n");
	wbuf_str(b, "<table><tr><th>id</th><th>name</th><th>created</th>"
	    "<th>expires</th><th>last used</th><th>state</th><th></th>"
	    "</tr>\n");
	for (i = 0; i < v->nsecrets; i++) {
		s = &v->secrets[i];
		wbuf_str(b, "<tr><td><code>");
		wbuf_esc(b, s->id);
		wbuf_str(b, "</code></td><td>");
		wbuf_esc(b, s->name);
		wbuf_str(b, "</td><td>");
		page_time(b, s->created);
		wbuf_str(b, "</td><td>");
		page_time(b, s->expires);
		wbuf_str(b, "</td><td>");
		page_time(b, s->last_used);
		wbuf_str(b, "</td><td>");
		wbuf_str(b, s->revoked != 0 ? "revoked" : (s->expires != 0 &&
		    now >= s->expires) ? "expired" : "active");
		wbuf_str(b, "</td><td>");
		if (s->revoked == 0) {
			wbuf_str(b, "<form class=\"inline\" method=\"post\" "
			    "action=\"/ui/secrets/revoke\">");
			page_csrf(b, v->csrf);
			wbuf_str(b, "<input type=\"hidden\" name=\"id\" "
			    "value=\"");
			wbuf_esc(b, s->id);
			wbuf_str(b, "\"><input type=\"submit\" "
			    "value=\"Revoke\"></form>");
		}
		wbuf_str(b, "</td></tr>\n");
	}
	if (v->nsecrets == 0 && !v->secrets_failed)
		wbuf_str(b, "<tr><td colspan=\"7\" class=\"muted\">none"
		    "</td></tr>\n");
	wbuf_str(b, "</table><h3>Create a secret</h3><form method=\"post\" "
	    "action=\"/ui/secrets\" id=\"create-secret\">");
	page_csrf(b, v->csrf);
	wbuf_str(b, "<label>Name (what it is for) <input type=\"text\" "
	    "name=\"name\" maxlength=\"64\"></label> <input type=\"submit\" "
	    "value=\"Create secret\"></form></section>\n");
}

static void
page_activity(struct wbuf *b, const struct sso_view *v)
{
	const struct sso_activity_row	*a;
	size_t				 i;

	wbuf_str(b, "<section id=\"activity\"><h2>Recent activity</h2>\n");
	if (v->activity_note != NULL) {
		wbuf_str(b, "<p class=\"muted\">");
		wbuf_esc(b, v->activity_note);
		wbuf_str(b, "</p></section>\n");
		return;
	}
	wbuf_str(b, "<table><tr><th>time</th><th>action</th><th>request</th>"
	    "<th>repository</th><th>status</th><th>decision</th></tr>\n");
	for (i = 0; i < v->nactivity; i++) {
		a = &v->activity[i];
		wbuf_str(b, "<tr><td>");
		wbuf_esc(b, a->time);
		wbuf_str(b, "</td><td>");
		wbuf_esc(b, a->action);
		wbuf_str(b, "</td><td><code>");
		wbuf_esc(b, a->method);
		wbuf_str(b, " ");
		wbuf_esc(b, a->path);
		wbuf_str(b, "</code></td><td>");
		wbuf_esc(b, a->repository);
		if (a->reference != NULL && a->reference[0] != '\0') {
			wbuf_str(b, ":");
			wbuf_esc(b, a->reference);
		}
		wbuf_str(b, "</td><td>");
		wbuf_esc(b, a->status);
		wbuf_str(b, "</td><td>");
		wbuf_esc(b, a->decision);
		wbuf_str(b, "</td></tr>\n");
	}
	if (v->nactivity == 0)
		wbuf_str(b, "<tr><td colspan=\"6\" class=\"muted\">none yet"
		    "</td></tr>\n");
	wbuf_str(b, "</table></section>\n");
}

/* The landing page of a signed-in person. */
void
sso_page_landing(struct wbuf *b, const struct sso_view *v)
{
	size_t	 i;
	int64_t	 now = (int64_t)time(NULL);

	page_head(b, "Your registry access");
	wbuf_str(b, "<header><h1>portcullis</h1><form class=\"inline\" "
	    "method=\"post\" action=\"/logout\" id=\"logout\">");
	page_csrf(b, v->csrf);
	wbuf_str(b, "<input type=\"submit\" value=\"Sign out\"></form>"
	    "</header><main>\n");
	if (v->notice != NULL) {
		wbuf_str(b, "<section class=\"notice\"><p>");
		wbuf_esc(b, v->notice);
		wbuf_str(b, "</p></section>\n");
	}
	if (v->new_secret != NULL)
		page_new_secret(b, v);
	wbuf_str(b, "<section id=\"who\"><h2>Signed in as <span "
	    "id=\"subject\">");
	wbuf_esc(b, v->subject);
	wbuf_str(b, "</span></h2><table>");
	if (v->name != NULL) {
		wbuf_str(b, "<tr><th>name</th><td id=\"name\">");
		wbuf_esc(b, v->name);
		wbuf_str(b, "</td></tr>");
	}
	if (v->email != NULL) {
		wbuf_str(b, "<tr><th>email</th><td>");
		wbuf_esc(b, v->email);
		wbuf_str(b, "</td></tr>");
	}
	wbuf_str(b, "<tr><th>groups</th><td id=\"groups\">");
	for (i = 0; i < v->ngroups; i++) {
		wbuf_str(b, "<span class=\"tag\">");
		wbuf_esc(b, v->groups[i]);
		wbuf_str(b, "</span>");
	}
	if (v->ngroups == 0)
		wbuf_str(b, "<span class=\"muted\">none</span>");
	wbuf_str(b, "</td></tr><tr><th>session ends</th><td>");
	page_time(b, v->session_expires);
	wbuf_str(b, "</td></tr></table></section>\n");
	page_access(b, v);
	page_secrets(b, v, now);
	page_activity(b, v);
	wbuf_str(b, "</main></body></html>\n");
}
