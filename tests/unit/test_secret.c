#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

/*
 * test_secret.c: the secret's text form (src/secret.c): generated secrets
 * parse back to their id and differ; every malformed variant is refused;
 * the stored hash is SHA-256 of the whole string; records parse from
 * HGETALL pairs and damaged ones are refused naming the field; the
 * verdict order (wrong before revoked or expired); durations and times
 * for the CLIs.  And the revocation channel's messages (src/revoke.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "secret.h"
#include "revoke.h"

static void
test_generate_parse(void **state)
{
	char	 s[SECRET_LEN + 1], id[SECRET_ID_LEN + 1];
	char	 got[SECRET_ID_LEN + 1];
	char	 prev[SECRET_LEN + 1] = "";
	int	 i;

	(void)state;
	for (i = 0; i < 200; i++) {
		assert_int_equal(secret_generate(s, id), 0);
		assert_int_equal(strlen(s), SECRET_LEN);
		assert_int_equal(strncmp(s, "pcs_", 4), 0);
		assert_int_equal(secret_parse(s, strlen(s), got), 0);
		assert_string_equal(got, id);
		assert_string_not_equal(s, prev);
		memcpy(prev, s, sizeof(prev));
	}
}

static void
test_parse_refuses(void **state)
{
	const char	*good =
	    "pcs_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE";
	const char	*bad[] = {
	    "",
	    "pcs_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
	    "pcs_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAEA",
	    "pcx_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE",
	    "pcs_0123456789ABCDEF_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE",
	    "pcs_0123456789abcdeg_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE",
	    "pcs_0123456789abcdef-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE",
	    "pcs_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA+AE",
	    "pcs_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
	    /* 258 bits: the last digit's low bits must be zero. */
	    "pcs_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB",
	    "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
	};
	char		 id[SECRET_ID_LEN + 1];
	size_t		 i;

	(void)state;
	assert_int_equal(secret_parse(good, strlen(good), id), 0);
	assert_string_equal(id, "0123456789abcdef");
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(secret_parse(bad[i], strlen(bad[i]), id), -1);
	/* A NUL inside is not a secret either. */
	{
		char	 t[SECRET_LEN + 1];

		memcpy(t, good, sizeof(t));
		t[30] = '\0';
		assert_int_equal(secret_parse(t, SECRET_LEN, id), -1);
	}
}

static void
test_hash(void **state)
{
	unsigned char	 h[SECRET_HASH_LEN];
	char		 hex[2 * SECRET_HASH_LEN + 1];

	(void)state;
	secret_hash("abc", 3, h);
	secret_hash_hex(h, hex);
	assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223"
	    "b00361a396177a9cb410ff61f20015ad");
}

#define NP(a)	(sizeof(a) / sizeof(a[0]))

static int
parse(struct secret_rec *rec, const char *const *names,
    const char *const *vals, size_t n, size_t max_groups, const char **err)
{
	size_t	 nl[16], vl[16], i;

	for (i = 0; i < n; i++) {
		nl[i] = strlen(names[i]);
		vl[i] = strlen(vals[i]);
	}
	return (secret_rec_parse(rec, "0123456789abcdef", names, nl, vals, vl,
	    n, max_groups, err));
}

static const char HEX[] =
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

static void
test_record(void **state)
{
	const char		*names[] = { "subject", "groups", "name",
	    "created", "expires", "hash", "last_used", "future_field" };
	const char		*vals[] = { "robot:ci", "[\"a\",\"b,c\"]",
	    "CI", "1000", "2000", HEX, "0", "ignored" };
	struct secret_rec	 rec;
	unsigned char		 h[SECRET_HASH_LEN];
	unsigned char		 other[SECRET_HASH_LEN];
	const char		*err = NULL;

	(void)state;
	assert_int_equal(parse(&rec, names, vals, NP(names), 64, &err), 0);
	assert_string_equal(rec.subject, "robot:ci");
	assert_int_equal(rec.ngroups, 2);
	assert_string_equal(rec.groups[1], "b,c");
	assert_string_equal(rec.name, "CI");
	assert_int_equal(rec.created, 1000);
	assert_int_equal(rec.expires, 2000);
	secret_hash("abc", 3, h);
	memcpy(other, h, sizeof(other));
	other[31] ^= 1;
	assert_int_equal(secret_judge(&rec, h, 1500), SECRET_OK);
	assert_int_equal(secret_judge(&rec, other, 1500), SECRET_WRONG);
	assert_int_equal(secret_judge(&rec, h, 2000), SECRET_EXPIRED);
	rec.revoked = 1600;
	assert_int_equal(secret_judge(&rec, h, 2500), SECRET_REVOKED);
	/* The hash first: the id alone learns only "wrong". */
	assert_int_equal(secret_judge(&rec, other, 2500), SECRET_WRONG);
	secret_rec_clear(&rec);

	/* Too many groups for max_groups. */
	assert_int_equal(parse(&rec, names, vals, NP(names), 1, &err), -1);
	assert_string_equal(err, "groups");
}

static void
test_record_damaged(void **state)
{
	struct {
		const char	*field, *value, *err;
	} cases[] = {
		{ "subject", "", "subject" },
		{ "subject", "a\nb", "subject" },
		{ "groups", "{\"a\":1}", "groups" },
		{ "groups", "[1]", "groups" },
		{ "groups", "[\"\"]", "groups" },
		{ "hash", "abc", "hash" },
		{ "hash", "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410"
		    "FF61F20015AD", "hash" },
		{ "created", "-1", "a time field" },
		{ "expires", "12x", "a time field" },
		{ "revoked", "99999999999999", "a time field" },
	};
	const char		*names[3], *vals[3], *err;
	struct secret_rec	 rec;
	size_t			 i;
	char			 longsub[SECRET_FIELD_MAX + 2];

	(void)state;
	for (i = 0; i < NP(cases); i++) {
		names[0] = "subject";
		vals[0] = "s";
		names[1] = "hash";
		vals[1] = HEX;
		names[2] = cases[i].field;
		vals[2] = cases[i].value;
		err = NULL;
		assert_int_equal(parse(&rec, names, vals, 3, 64, &err), -1);
		assert_string_equal(err, cases[i].err);
	}
	names[0] = "subject";
	vals[0] = "s";
	assert_int_equal(parse(&rec, names, vals, 1, 64, &err), -1);
	assert_string_equal(err, "no hash");
	memset(longsub, 'x', sizeof(longsub) - 1);
	longsub[sizeof(longsub) - 1] = '\0';
	vals[0] = longsub;
	names[1] = "hash";
	vals[1] = HEX;
	assert_int_equal(parse(&rec, names, vals, 2, 64, &err), -1);
	assert_string_equal(err, "subject");
}

static void
test_times(void **state)
{
	int64_t	 t;
	char	 buf[32];

	(void)state;
	assert_int_equal(secret_parse_duration("90d", &t), 0);
	assert_int_equal(t, 90 * 86400);
	assert_int_equal(secret_parse_duration("1s", &t), 0);
	assert_int_equal(t, 1);
	assert_int_equal(secret_parse_duration("2w", &t), 0);
	assert_int_equal(t, 14 * 86400);
	assert_int_equal(secret_parse_duration("0d", &t), -1);
	assert_int_equal(secret_parse_duration("d", &t), -1);
	assert_int_equal(secret_parse_duration("5y", &t), -1);
	assert_int_equal(secret_parse_duration("-5d", &t), -1);
	assert_int_equal(secret_parse_duration("4000d", &t), -1);
	assert_int_equal(secret_parse_time("now", 77, &t), 0);
	assert_int_equal(t, 77);
	assert_int_equal(secret_parse_time("@1000", 77, &t), 0);
	assert_int_equal(t, 1000);
	assert_int_equal(secret_parse_time("2001-01-01T00:00:00Z", 0, &t), 0);
	assert_int_equal(t, 978307200);
	assert_int_equal(secret_parse_time("2001-01-01T00:00:00", 0, &t), -1);
	assert_int_equal(secret_parse_time("2001-01-01T00:00:00+01:00", 0,
	    &t), -1);
	assert_int_equal(secret_parse_time("@", 0, &t), -1);
	assert_int_equal(secret_parse_time("@12a", 0, &t), -1);
	assert_int_equal(secret_parse_time("yesterday", 0, &t), -1);
	assert_string_equal(secret_fmt_time(978307200, buf, sizeof(buf)),
	    "2001-01-01T00:00:00Z");
	assert_string_equal(secret_fmt_time(0, buf, sizeof(buf)), "never");
}

static int
msg(const char *m, struct revoke_event *ev, char *buf)
{
	return (revoke_parse_message(m, strlen(m), buf, ev));
}

static void
test_messages(void **state)
{
	struct revoke_event	 ev;
	char			 buf[2048];
	char			 big[REVOKE_SUBJECT_MAX + 64];

	(void)state;
	assert_int_equal(msg("subject 1700000000 gitlab:alice smith", &ev,
	    buf), 0);
	assert_int_equal(ev.kind, REVOKE_SUBJECT);
	assert_int_equal(ev.not_before, 1700000000);
	assert_string_equal(ev.subject, "gitlab:alice smith");
	assert_int_equal(msg("all 5", &ev, buf), 0);
	assert_int_equal(ev.kind, REVOKE_ALL);
	assert_int_equal(ev.not_before, 5);
	assert_int_equal(msg("secret 0123456789abcdef", &ev, buf), 0);
	assert_int_equal(ev.kind, REVOKE_SECRET);
	assert_string_equal(ev.secret_id, "0123456789abcdef");
	assert_int_equal(msg("secret 0123456789ABCDEF", &ev, buf), -1);
	assert_int_equal(msg("secret 0123", &ev, buf), -1);
	assert_int_equal(msg("subject 17 ", &ev, buf), -1);
	assert_int_equal(msg("subject x alice", &ev, buf), -1);
	assert_int_equal(msg("subject 17 a\tb", &ev, buf), -1);
	assert_int_equal(msg("all", &ev, buf), -1);
	assert_int_equal(msg("all -1", &ev, buf), -1);
	assert_int_equal(msg("revoke everything", &ev, buf), -1);
	assert_int_equal(revoke_parse_message("all 5\0", 6, buf, &ev), -1);
	snprintf(big, sizeof(big), "subject 1 %0*d", REVOKE_SUBJECT_MAX + 1,
	    0);
	assert_int_equal(msg(big, &ev, buf), -1);
}

/*
 * The user name of the printed login lines: no ':' (RFC 7617; docker
 * splits user:password at the first one), nothing a shell reads, cut to
 * fit.
 */
static void
test_login_user(void **st)
{
	char	 b[16];

	(void)st;
	assert_string_equal(secret_login_user("robot:ci", b, sizeof(b)),
	    "robot_ci");
	assert_string_equal(secret_login_user("corp:alice@example.test", b,
	    sizeof(b)), "corp_alice@exam");
	assert_string_equal(secret_login_user("a'b $c;d", b, sizeof(b)),
	    "a_b__c_d");
	assert_string_equal(secret_login_user("x-y.z_1", b, sizeof(b)),
	    "x-y.z_1");
	assert_string_equal(secret_login_user("", b, sizeof(b)), "");
	assert_string_equal(secret_login_user("abc", b, 1), "");
	assert_null(strchr(secret_login_user("github:repo:o/r:ref:x", b,
	    sizeof(b)), ':'));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_generate_parse),
		cmocka_unit_test(test_parse_refuses),
		cmocka_unit_test(test_hash),
		cmocka_unit_test(test_record),
		cmocka_unit_test(test_record_damaged),
		cmocka_unit_test(test_times),
		cmocka_unit_test(test_messages),
		cmocka_unit_test(test_login_user),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
