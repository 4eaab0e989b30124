#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

/*
 * test_token_svc.c: the token service's checks that need no server
 * (src/token.c): the service= parameter told apart as absent, this
 * service, another, too long or malformed (a "%00" is never absent or
 * equal); and the end of the credential a token is issued for, where a
 * gateway token, access or refresh, ends at its exp.
 */
#include <stdlib.h>
#include <string.h>

#include "portcullis.h"
#include "token_int.h"

#define SVC	"registry.example.com"

static enum tok_svc
svc(const char *q)
{
	return (token_service_check(q, strlen(q), SVC));
}

static void
test_service(void **state)
{
	char	 q[1024];

	(void)state;
	assert_int_equal(svc(""), TOK_SVC_ABSENT);
	assert_int_equal(svc("scope=repository:a/b:pull"), TOK_SVC_ABSENT);
	assert_int_equal(svc("services=x&xservice=y"), TOK_SVC_ABSENT);
	assert_int_equal(svc("service=" SVC), TOK_SVC_OK);
	assert_int_equal(svc("scope=x&service=" SVC "&account=a"), TOK_SVC_OK);
	assert_int_equal(svc("service=registry%2Eexample.com"), TOK_SVC_OK);
	/* The first counts (Go's FormValue). */
	assert_int_equal(svc("service=" SVC "&service=other"), TOK_SVC_OK);
	assert_int_equal(svc("service=other"), TOK_SVC_OTHER);
	assert_int_equal(svc("service="), TOK_SVC_OTHER);
	assert_int_equal(svc("service"), TOK_SVC_OTHER);
	assert_int_equal(svc("service=" SVC "x"), TOK_SVC_OTHER);
	/* A NUL, alone or after the service, is no end of the value. */
	assert_int_equal(svc("service=%00"), TOK_SVC_MALFORMED);
	assert_int_equal(svc("service=" SVC "%00"), TOK_SVC_MALFORMED);
	assert_int_equal(svc("service=" SVC "%00junk"), TOK_SVC_MALFORMED);
	assert_int_equal(svc("service=%zz"), TOK_SVC_MALFORMED);
	/* 255 bytes is another service; 256 too long, not absent. */
	memset(q, 0, sizeof(q));
	memcpy(q, "service=", 8);
	memset(q + 8, 'a', TOK_SERVICE_MAX);
	assert_int_equal(svc(q), TOK_SVC_OTHER);
	q[8 + TOK_SERVICE_MAX] = 'a';
	assert_int_equal(svc(q), TOK_SVC_TOO_LONG);
	/* Not NUL-terminated at qlen: nothing past it is read. */
	assert_int_equal(token_service_check("service=" SVC "xyz",
	    strlen("service=" SVC), SVC), TOK_SVC_OK);
}

static void
test_credential_end(void **state)
{
	struct req		*req;
	struct tok_ident	 ti;

	(void)state;
	req = calloc(1, sizeof(*req));
	assert_non_null(req);
	memset(&ti, 0, sizeof(ti));
	req->principal.method = AUTH_ANONYMOUS;
	assert_int_equal(token_credential_end(req), 0);
	/* A gateway token ends at its exp, access as refresh. */
	req->tok = &ti;
	ti.exp = 1800000000;
	ti.refresh = 1;
	assert_int_equal(token_credential_end(req), 1800000000);
	ti.refresh = 0;
	assert_int_equal(token_credential_end(req), 1800000000);
	/* None is never "no end". */
	ti.exp = 0;
	assert_int_not_equal(token_credential_end(req), 0);
	free(req);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_service),
		cmocka_unit_test(test_credential_end),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
