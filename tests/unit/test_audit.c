#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

/*
 * test_audit.c: the pure parts of the audit subsystem: record payloads
 * (sanitised, bounded, parsed back), the spool's CRC framing and its torn
 * or corrupt records, the time grammar and the query filters.
 */
#include <sys/mman.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "audit.h"

static void
test_payload_roundtrip(void **state)
{
	struct audit_buf	 b;
	struct audit_fields	 fl;
	char			 big[5000];

	audit_buf_init(&b);
	audit_buf_addf(&b, AF_TIME, "%d", 1234);
	audit_buf_add(&b, AF_USER_AGENT, "ua\n\x1b[31mx\xff", 10);
	memset(big, 'a', sizeof(big));
	audit_buf_add(&b, AF_PATH, big, sizeof(big));
	audit_buf_add(&b, AF_CACHE, "hit", 3);
	assert_true(b.len <= AUDIT_REC_MAX);
	assert_true(b.truncated);
	assert_int_equal(audit_payload_parse(b.data, b.len, &fl), 0);
	assert_int_equal(fl.len[AF_TIME], 4);
	assert_memory_equal(fl.v[AF_TIME], "1234", 4);
	/* Control and non-ASCII bytes are replaced, not passed on. */
	assert_int_equal(fl.len[AF_USER_AGENT], 10);
	assert_memory_equal(fl.v[AF_USER_AGENT], "ua??[31mx?", 10);
	assert_int_equal(fl.len[AF_PATH], AUDIT_VALUE_MAX);
	assert_memory_equal(fl.v[AF_CACHE], "hit", 3);
	assert_int_equal(fl.len[AF_SUBJECT], 0);	/* absent is "" */
	/* Not NUL-terminated: refused. */
	assert_int_equal(audit_payload_parse("time\0" "12", 7, &fl), -1);
}

/*
 * The offsets audit_buf_add() keeps give the fields parsing the payload
 * would (the writer sends a record it built without parsing it back),
 * for every field, present, empty, cut to fit, or never added.
 */
static void
test_payload_offsets(void **state)
{
	struct audit_buf	 b;
	struct audit_fields	 a, k;
	char			 big[5000];
	int			 f, round;

	memset(big, 'x', sizeof(big));
	for (round = 0; round < 3; round++) {
		audit_buf_init(&b);
		audit_buf_addu(&b, AF_TIME, 1700000000123ULL);
		audit_buf_add(&b, AF_ID, "gw/1-2", 6);
		if (round == 1)
			audit_buf_add(&b, AF_USER_AGENT, "ua\x01z", 4);
		for (f = AF_SUBJECT; f < AF__MAX; f++) {
			if (round == 2 && f == AF_REPOSITORY)
				continue;	/* never added: "" */
			audit_buf_add(&b, f, round == 2 ? big : "v1", round ==
			    2 ? sizeof(big) : (size_t)(f % 3));
		}
		assert_int_equal(audit_payload_parse(b.data, b.len, &a), 0);
		audit_payload_fields(b.data, b.voff, b.vlen, &k);
		for (f = 0; f < AF__MAX; f++) {
			assert_int_equal(a.len[f], k.len[f]);
			assert_memory_equal(a.v[f], k.v[f], a.len[f]);
		}
	}
}

/*
 * Sanitising, eight bytes a step: a byte below 0x20 or above 0x7e
 * becomes '?' wherever it is in a word, and every other byte is kept.
 */
static void
test_sanitise(void **state)
{
	struct audit_buf	 b;
	struct audit_fields	 fl;
	char			 v[41], want[41];
	const unsigned char	 bad[] = { 0x00, 0x01, 0x09, 0x1f, 0x7f, 0x80,
	    0xff };
	size_t			 i, pos, k;

	for (k = 0; k < sizeof(bad); k++) {
		for (pos = 0; pos < 40; pos += 3) {
			for (i = 0; i < 40; i++)
				v[i] = want[i] = (char)(0x20 + (i * 11) % 95);
			v[pos] = (char)bad[k];
			want[pos] = '?';
			audit_buf_init(&b);
			audit_buf_add(&b, AF_TIME, "1", 1);
			audit_buf_add(&b, AF_ID, v, 40);
			assert_int_equal(audit_payload_parse(b.data, b.len, &fl),
			    0);
			assert_int_equal(fl.len[AF_ID], 40);
			assert_memory_equal(fl.v[AF_ID], want, 40);
		}
	}
}

/* Packing, eight bytes a step: a tab anywhere in a value becomes '?'. */
static void
test_pack_tabs(void **state)
{
	struct audit_fields	 fl, back;
	char			 v[30], out[AF__MAX + 64];
	size_t			 pos, i, n;

	for (pos = 0; pos < 30; pos++) {
		memset(&fl, 0, sizeof(fl));
		for (i = 0; i < AF__MAX; i++)
			fl.v[i] = "";
		for (i = 0; i < 30; i++)
			v[i] = (char)('a' + i % 26);
		v[pos] = '\t';
		fl.v[AF_PATH] = v;
		fl.len[AF_PATH] = 30;
		n = audit_pack(&fl, out);
		assert_int_equal(n, audit_pack_len(&fl));
		assert_int_equal(audit_unpack(out, n, &back), 0);
		assert_int_equal(back.len[AF_PATH], 30);
		for (i = 0; i < 30; i++)
			assert_int_equal(back.v[AF_PATH][i],
			    i == pos ? '?' : 'a' + (int)(i % 26));
	}
}

static void
test_numbers(void **state)
{
	struct audit_buf	 b;
	struct audit_fields	 fl;
	char			 tmp[AUDIT_U64_MAX], *p;

	p = audit_u64(tmp, 0);
	assert_int_equal(tmp + sizeof(tmp) - p, 1);
	assert_memory_equal(p, "0", 1);
	p = audit_u64(tmp, UINT64_MAX);
	assert_int_equal(tmp + sizeof(tmp) - p, 20);
	assert_memory_equal(p, "18446744073709551615", 20);
	audit_buf_init(&b);
	audit_buf_addu(&b, AF_TIME, 1714564800123ULL);
	audit_buf_addu(&b, AF_STATUS, 404);
	assert_int_equal(audit_payload_parse(b.data, b.len, &fl), 0);
	assert_int_equal(fl.len[AF_TIME], 13);
	assert_memory_equal(fl.v[AF_TIME], "1714564800123", 13);
	assert_int_equal(fl.len[AF_STATUS], 3);
	assert_memory_equal(fl.v[AF_STATUS], "404", 3);
	assert_int_equal(audit_field_name_len(AF_DURATION_MS), 11);
}

/* Fields out of schema order, unknown or repeated still parse. */
static void
test_payload_any_order(void **state)
{
	static const char p[] = "status\0" "500\0" "bogus\0" "x\0"
	    "time\0" "7\0" "cache\0" "hit\0" "status\0" "200\0";
	struct audit_fields	 fl;

	assert_int_equal(audit_payload_parse(p, sizeof(p) - 1, &fl), 0);
	assert_memory_equal(fl.v[AF_STATUS], "200", 3);
	assert_memory_equal(fl.v[AF_TIME], "7", 1);
	assert_memory_equal(fl.v[AF_CACHE], "hit", 3);
	assert_int_equal(fl.len[AF_ID], 0);
}

static void
test_spool_frames(void **state)
{
	unsigned char	 buf[64];
	const char	*p = "time\0" "1\0";
	uint64_t	 run;

	assert_int_equal(audit_crc32("123456789", 9), 0xcbf43926u);
	/* Longer than a step, and zlib's crc32() of it. */
	{
		unsigned char	 big[1000];
		size_t		 i;

		for (i = 0; i < sizeof(big); i++)
			big[i] = (i * 7 + 3) & 0xff;
		assert_true(audit_crc32(big, sizeof(big)) == 0x17bc2a46u);
		assert_true(audit_crc32(big, 0) == 0);
	}
	/* A file with frames says so ("PCAUDSP2"); both are read. */
	audit_spool_header(buf, 0x123456789abcULL, 1);
	assert_memory_equal(buf, "PCAUDSP2", 8);
	assert_int_equal(audit_spool_header_parse(buf, AUDIT_SPOOL_HDR, &run),
	    0);
	assert_true(run == 0x123456789abcULL);
	audit_spool_header(buf, 0x123456789abcULL, 0);
	assert_memory_equal(buf, "PCAUDSP1", 8);
	assert_int_equal(audit_spool_header_parse(buf, AUDIT_SPOOL_HDR, &run),
	    0);
	assert_true(run == 0x123456789abcULL);
	buf[9] ^= 1;
	assert_int_equal(audit_spool_header_parse(buf, AUDIT_SPOOL_HDR, &run),
	    -1);
	buf[9] ^= 1;
	/* The acknowledged mark: none in a fresh header, and round trips;
	 * it is outside what the header's CRC covers. */
	{
		uint64_t	 off;
		uint32_t	 crc;

		audit_spool_mark_parse(buf + AUDIT_SPOOL_MARK_AT, &off, &crc);
		assert_true(off == 0 && crc == 0);
		audit_spool_mark(buf + AUDIT_SPOOL_MARK_AT, 0x1122334455ULL,
		    0xdeadbeefu);
		audit_spool_mark_parse(buf + AUDIT_SPOOL_MARK_AT, &off, &crc);
		assert_true(off == 0x1122334455ULL && crc == 0xdeadbeefu);
		assert_int_equal(audit_spool_header_parse(buf,
		    AUDIT_SPOOL_HDR, &run), 0);
		assert_int_equal(AUDIT_SPOOL_MARK_AT + AUDIT_SPOOL_MARK,
		    AUDIT_SPOOL_HDR);
	}

	/* CRC-32C: its check value, and the same by either path. */
	assert_true(audit_crc32c("123456789", 9) == 0xe3069283u);
	assert_true(audit_crc32c_tables("123456789", 9) == 0xe3069283u);
	{
		unsigned char	 big[1000];
		size_t		 i, n;
		uint32_t	 ref;
		int		 k;

		for (i = 0; i < sizeof(big); i++)
			big[i] = (i * 7 + 3) & 0xff;
		for (n = 0; n < sizeof(big); n += 37) {
			/* Bit by bit, the reflected polynomial. */
			ref = 0xffffffffu;
			for (i = 0; i < n; i++) {
				ref ^= big[i];
				for (k = 0; k < 8; k++)
					ref = (ref & 1) ? (ref >> 1) ^
					    0x82f63b78u : ref >> 1;
			}
			ref ^= 0xffffffffu;
			assert_true(audit_crc32c(big, n) == ref);
			assert_true(audit_crc32c_tables(big, n) == ref);
		}
	}
	/* A frame of a writer before CRC-32C ("PCR1", CRC-32) is read. */
	memcpy(buf, "PCR1", 4);
	buf[4] = 7;
	buf[5] = buf[6] = buf[7] = 0;
	{
		uint32_t	 c = audit_crc32(p, 7);

		buf[8] = c & 0xff;
		buf[9] = (c >> 8) & 0xff;
		buf[10] = (c >> 16) & 0xff;
		buf[11] = c >> 24;
	}
	memcpy(buf + AUDIT_LOG_FRAME, p, 7);
	assert_int_equal(audit_spool_check(buf, AUDIT_LOG_FRAME + 7),
	    AUDIT_LOG_FRAME + 7);
	/* ... but not with the other checksum. */
	memcpy(buf, "PCR2", 4);
	assert_int_equal(audit_spool_check(buf, AUDIT_LOG_FRAME + 7), -1);

	audit_spool_frame(buf, p, 7);
	memcpy(buf + AUDIT_LOG_FRAME, p, 7);
	assert_memory_equal(buf, "PCR2", 4);
	assert_int_equal(audit_spool_check(buf, AUDIT_LOG_FRAME + 7),
	    AUDIT_LOG_FRAME + 7);
	assert_true(audit_spool_frame_crc(buf) == audit_crc32c(p, 7));
	/* A torn tail: not enough bytes yet. */
	assert_int_equal(audit_spool_check(buf, AUDIT_LOG_FRAME + 6), 0);
	assert_int_equal(audit_spool_check(buf, 5), 0);
	/* A flipped payload bit fails the checksum. */
	buf[AUDIT_LOG_FRAME + 5] ^= 0x10;
	assert_int_equal(audit_spool_check(buf, AUDIT_LOG_FRAME + 7), -1);
	buf[AUDIT_LOG_FRAME + 5] ^= 0x10;
	/* A length past the limit is refused before anything is read. */
	buf[6] = 0x7f;
	assert_int_equal(audit_spool_check(buf, AUDIT_LOG_FRAME + 7), -1);
	buf[6] = 0;
	buf[0] ^= 1;
	assert_int_equal(audit_spool_check(buf, AUDIT_LOG_FRAME + 7), -1);
}

/*
 * The ring's header and frames: a frame validates only at the position
 * it names (a frame of the previous lap, read where the next lap's head
 * reached, is the end of the records), a torn frame needs more bytes or
 * fails its checksum, and the header keeps run, size and head under its
 * CRC.
 */
static void
test_ring_frames(void **state)
{
	unsigned char	 buf[AUDIT_SPOOL_FRAME + 16], h[AUDIT_RING_HDR];
	const char	*p = "time\0" "1\0";
	uint64_t	 run, size, head, pos = 0x100000123ULL;

	audit_ring_header(h, 42, 1 << 20, pos);
	assert_int_equal(audit_ring_header_parse(h, sizeof(h), &run, &size,
	    &head), 0);
	assert_true(run == 42 && size == 1 << 20 && head == pos);
	assert_int_equal(audit_ring_header_parse(h, sizeof(h) - 1, &run,
	    &size, &head), -1);
	h[25] ^= 1;		/* the head, torn */
	assert_int_equal(audit_ring_header_parse(h, sizeof(h), &run, &size,
	    &head), -1);
	h[25] ^= 1;
	/* An append log's header is not a ring's, and the reverse. */
	audit_spool_header(buf, 42, 0);
	assert_int_equal(audit_ring_header_parse(buf, sizeof(h), &run, &size,
	    &head), -1);
	assert_int_equal(audit_spool_header_parse(h, AUDIT_SPOOL_HDR, &run),
	    -1);

	audit_ring_frame(buf, p, 7, pos);
	memcpy(buf + AUDIT_SPOOL_FRAME, p, 7);
	assert_memory_equal(buf, "PCR3", 4);
	assert_int_equal(audit_ring_check(buf, AUDIT_SPOOL_FRAME + 7, pos),
	    AUDIT_SPOOL_FRAME + 7);
	assert_true(audit_spool_frame_crc(buf) == audit_crc32c(p, 7));
	/* Stale: the same bytes one lap (of any size) off. */
	assert_int_equal(audit_ring_check(buf, AUDIT_SPOOL_FRAME + 7,
	    pos + (1 << 20)), -1);
	assert_int_equal(audit_ring_check(buf, AUDIT_SPOOL_FRAME + 7,
	    pos - 4096), -1);
	/* Torn: bytes missing, or the payload of an older record. */
	assert_int_equal(audit_ring_check(buf, AUDIT_SPOOL_FRAME + 6, pos), 0);
	assert_int_equal(audit_ring_check(buf, 11, pos), 0);
	buf[AUDIT_SPOOL_FRAME + 2] ^= 4;
	assert_int_equal(audit_ring_check(buf, AUDIT_SPOOL_FRAME + 7, pos),
	    -1);
	buf[AUDIT_SPOOL_FRAME + 2] ^= 4;
	/* Zeros (an allocated, never written ring) are no frame. */
	memset(buf, 0, sizeof(buf));
	assert_int_equal(audit_ring_check(buf, sizeof(buf), pos), -1);
	/* An append-log frame is not a ring frame. */
	audit_spool_frame(buf, p, 7);
	memcpy(buf + AUDIT_LOG_FRAME, p, 7);
	assert_int_equal(audit_ring_check(buf, sizeof(buf), pos), -1);
	/* A length past the limit is refused before anything is read. */
	audit_ring_frame(buf, p, 7, pos);
	buf[6] = 0x7f;
	assert_int_equal(audit_ring_check(buf, AUDIT_SPOOL_FRAME, pos), -1);
}

static void
test_time(void **state)
{
	int64_t	 t, now = 1700000000000LL;

	assert_int_equal(audit_parse_time("15m", now, &t), 0);
	assert_true(t == now - 900000);
	assert_int_equal(audit_parse_time("7d", now, &t), 0);
	assert_true(t == now - 7 * 86400000LL);
	assert_int_equal(audit_parse_time("2024-05-01T12:00:00Z", now, &t), 0);
	assert_true(t == 1714564800000LL);
	assert_int_equal(audit_parse_time("2024-05-01T12:00:00.25Z", now, &t),
	    0);
	assert_true(t == 1714564800250LL);
	assert_int_equal(audit_parse_time("2024-05-01", now, &t), 0);
	assert_true(t == 1714521600000LL);
	assert_int_equal(audit_parse_time("1714564800000", now, &t), 0);
	assert_true(t == 1714564800000LL);
	assert_int_equal(audit_parse_time("", now, &t), -1);
	assert_int_equal(audit_parse_time("15", now, &t), -1);
	assert_int_equal(audit_parse_time("15y", now, &t), -1);
	assert_int_equal(audit_parse_time("-5m", now, &t), -1);
	assert_int_equal(audit_parse_time("2024-13-01", now, &t), -1);
	assert_int_equal(audit_parse_time("2024-05-01T12:00:00", now, &t), -1);
	assert_int_equal(audit_parse_time("2024-05-01T12:00:00+02:00", now,
	    &t), -1);
}

static void
rec(struct audit_buf *b, const char *time, const char *sub, const char *repo,
    const char *act, const char *status, const char *dec)
{
	audit_buf_init(b);
	audit_buf_add(b, AF_TIME, time, strlen(time));
	audit_buf_add(b, AF_SUBJECT, sub, strlen(sub));
	audit_buf_add(b, AF_ACTION, act, strlen(act));
	audit_buf_add(b, AF_REPOSITORY, repo, strlen(repo));
	audit_buf_add(b, AF_STATUS, status, strlen(status));
	audit_buf_add(b, AF_DECISION, dec, strlen(dec));
}

static void
test_filter(void **state)
{
	struct audit_filter	 f;
	struct audit_buf	 b;
	struct audit_fields	 fl;
	char			*cause;

	rec(&b, "1000", "alice", "team1/app", "pull", "404", "allow");
	assert_int_equal(audit_payload_parse(b.data, b.len, &fl), 0);
	audit_filter_init(&f);
	assert_true(audit_filter_match(&f, &fl));
	assert_int_equal(audit_filter_set(&f, "status", "4xx", 0, &cause), 0);
	assert_true(audit_filter_match(&f, &fl));
	assert_int_equal(audit_filter_set(&f, "status", "403", 0, &cause), 0);
	assert_false(audit_filter_match(&f, &fl));
	assert_int_equal(audit_filter_set(&f, "status", "404", 0, &cause), 0);
	assert_int_equal(audit_filter_set(&f, "repo", "team*", 0, &cause), 0);
	assert_true(audit_filter_match(&f, &fl));
	assert_false(audit_glob_literal(f.repo));
	assert_int_equal(audit_filter_set(&f, "repo", "team1/app", 0, &cause),
	    0);
	assert_true(audit_glob_literal(f.repo));
	assert_int_equal(audit_filter_set(&f, "subject", "bob", 0, &cause), 0);
	assert_false(audit_filter_match(&f, &fl));
	assert_int_equal(audit_filter_set(&f, "subject", "alice", 0, &cause),
	    0);
	assert_int_equal(audit_filter_set(&f, "decision", "allow", 0, &cause),
	    0);
	assert_int_equal(audit_filter_set(&f, "action", "pull", 0, &cause), 0);
	assert_int_equal(audit_filter_set(&f, "since", "999", 0, &cause), -1);
	assert_int_equal(audit_filter_set(&f, "until", "1714564800000", 0,
	    &cause), 0);
	assert_true(audit_filter_match(&f, &fl));
	assert_int_equal(audit_filter_set(&f, "since", "1714564800000", 0,
	    &cause), 0);
	assert_false(audit_filter_match(&f, &fl));

	assert_int_equal(audit_filter_set(&f, "decision", "maybe", 0, &cause),
	    -1);
	assert_int_equal(audit_filter_set(&f, "status", "6xx", 0, &cause), -1);
	assert_int_equal(audit_filter_set(&f, "status", "20", 0, &cause), -1);
	assert_int_equal(audit_filter_set(&f, "limit", "0", 0, &cause), -1);
	assert_int_equal(audit_filter_set(&f, "cursor", "12-x", 0, &cause),
	    -1);
	assert_int_equal(audit_filter_set(&f, "cursor", "1714564800000-3", 0,
	    &cause), 0);
	assert_int_equal(audit_filter_set(&f, "bogus", "1", 0, &cause), -1);
	audit_filter_clear(&f);
}

/* The stream's layout: a record packed and back, refs of an index. */
static void
test_packed_layout(void **state)
{
	struct audit_buf	 b;
	struct audit_fields	 fl, out;
	char			 packed[AUDIT_REC_MAX];
	char			 tail[AUDIT_REF_TAIL_MAX];
	char			 refs[256], id[AUDIT_ID_MAX];
	size_t			 n, end;
	int			 f;

	audit_buf_init(&b);
	audit_buf_addf(&b, AF_TIME, "%d", 1234);
	audit_buf_add(&b, AF_SUBJECT, "alice", 5);
	audit_buf_add(&b, AF_ACTION, "pull", 4);
	audit_buf_add(&b, AF_STATUS, "200", 3);
	audit_buf_add(&b, AF_CACHE, "hit", 3);
	assert_int_equal(audit_payload_parse(b.data, b.len, &fl), 0);
	n = audit_pack(&fl, packed);
	assert_int_equal(n, audit_pack_len(&fl));
	assert_int_equal(n, 4 + 5 + 4 + 3 + 3 + AF__MAX);
	assert_memory_equal(packed, "1234\t\t", 6);
	assert_int_equal(audit_unpack(packed, n, &out), 0);
	for (f = 0; f < AF__MAX; f++) {
		assert_int_equal(out.len[f], fl.len[f]);
		assert_memory_equal(out.v[f], fl.v[f], fl.len[f]);
	}
	/* A tab in a value (not from audit_buf_add) cannot split it. */
	fl.v[AF_PATH] = "/a\tb";
	fl.len[AF_PATH] = 4;
	n = audit_pack(&fl, packed);
	assert_int_equal(audit_unpack(packed, n, &out), 0);
	assert_memory_equal(out.v[AF_PATH], "/a?b", 4);
	assert_memory_equal(out.v[AF_CACHE], "hit", 3);
	/* Fewer values (an older writer): "" for the rest; more: ignored. */
	assert_int_equal(audit_unpack("1\tid\t", 5, &out), 0);
	assert_int_equal(out.len[AF_ID], 2);
	assert_int_equal(out.len[AF_CACHE], 0);
	memcpy(packed + n, "new\t", 4);
	assert_int_equal(audit_unpack(packed, n + 4, &out), 0);
	assert_memory_equal(out.v[AF_CACHE], "hit", 3);
	assert_int_equal(audit_unpack("1\tno tab", 8, &out), -1);

	/* Refs: " <action> <status> <decision>;" after each id. */
	fl.v[AF_DECISION] = "al low;";
	fl.len[AF_DECISION] = 7;
	n = audit_ref_tail(&fl, tail, sizeof(tail));
	assert_int_equal(n, 18);
	assert_memory_equal(tail, " pull 200 al?low?;", 18);
	assert_int_equal(audit_ref_tail(&fl, tail, 10), 0);
	snprintf(refs, sizeof(refs), "5-0 pull 200 allow;7-3 push 201 ;"
	    "9-1  404 deny;");
	end = strlen(refs);
	assert_int_equal(audit_ref_prev(refs, &end, id, &out), 1);
	assert_string_equal(id, "9-1");
	assert_int_equal(out.len[AF_ACTION], 0);
	assert_memory_equal(out.v[AF_STATUS], "404", 3);
	assert_memory_equal(out.v[AF_DECISION], "deny", 4);
	assert_int_equal(audit_ref_prev(refs, &end, id, &out), 1);
	assert_string_equal(id, "7-3");
	assert_memory_equal(out.v[AF_ACTION], "push", 4);
	assert_int_equal(out.len[AF_DECISION], 0);
	assert_int_equal(audit_ref_prev(refs, &end, id, &out), 1);
	assert_string_equal(id, "5-0");
	assert_memory_equal(out.v[AF_DECISION], "allow", 5);
	assert_int_equal(audit_ref_prev(refs, &end, id, &out), 0);
	end = 7;
	assert_int_equal(audit_ref_prev("5-0 pull;", &end, id, &out), -1);
}

/*
 * References for the word-at-a-time loops: the byte-at-a-time versions
 * they replaced (parse with memchr(3), pack then replace tabs, sanitise
 * byte by byte).  The loops must agree with them on any input.
 */
static int
ref_parse(const char *p, size_t len, struct audit_fields *out)
{
	const char	*end = p + len, *name, *val, *z;
	int		 f, i, next = 0;

	for (i = 0; i < AF__MAX; i++) {
		out->v[i] = "";
		out->len[i] = 0;
	}
	while (p < end) {
		name = p;
		if ((z = memchr(p, '\0', end - p)) == NULL)
			return (-1);
		val = z + 1;
		if (val >= end)
			return (-1);
		if ((z = memchr(val, '\0', end - val)) == NULL)
			return (-1);
		if (next < AF__MAX && (size_t)(val - 1 - name) ==
		    audit_field_name_len(next) && memcmp(name,
		    audit_field_name(next), val - 1 - name) == 0)
			f = next;
		else
			f = audit_field_lookup(name, val - 1 - name);
		if (f != -1) {
			next = f + 1;
			out->v[f] = val;
			out->len[f] = z - val;
		}
		p = z + 1;
	}
	return (0);
}

static size_t
ref_pack(const struct audit_fields *fl, char *out)
{
	char	*p = out;
	size_t	 i;
	int	 f;

	for (f = 0; f < AF__MAX; f++) {
		for (i = 0; i < fl->len[f]; i++)
			*p++ = fl->v[f][i] == '\t' ? '?' : fl->v[f][i];
		*p++ = '\t';
	}
	return (p - out);
}

static unsigned long	rnd_state = 0x2545f4914f6cdd1dULL;

static unsigned
rnd(unsigned n)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return ((unsigned)(rnd_state >> 11) % n);
}

/* Two pages, the second inaccessible: data placed to end at the first. */
static char *
guard_page(void)
{
	long	 pg = sysconf(_SC_PAGESIZE);
	char	*m;

	m = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE |
	    MAP_ANONYMOUS, -1, 0);
	assert_true(m != MAP_FAILED);
	assert_int_equal(mprotect(m + pg, pg, PROT_NONE), 0);
	return (m + pg);		/* the first byte that faults */
}

static void
unguard_page(char *end)
{
	long	 pg = sysconf(_SC_PAGESIZE);

	munmap(end - pg, 2 * pg);
}

/*
 * Values, payloads and frames that end where the memory ends (the next
 * byte faults): sanitising, parsing, packing, the frame check and both
 * CRC-32C paths read nothing past the end, at every length and every
 * alignment, and agree with the byte-at-a-time references.
 */
static void
test_page_ends(void **state)
{
	static const unsigned char bytes[] = { 'a', 'Z', ' ', '~', '\t',
	    '\n', '\r', '\0', 0x1f, 0x7f, 0x80, 0xff, '/', '?' };
	struct audit_buf	 b;
	struct audit_fields	 got, want;
	char			*end = guard_page(), *v;
	char			 out1[AUDIT_REC_MAX + AF__MAX];
	char			 out2[AUDIT_REC_MAX + AF__MAX];
	unsigned char		 fr[AUDIT_SPOOL_FRAME + 64];
	size_t			 vlen, i, n, k;
	int			 f, rc, round;

	/* Sanitising: every value length, each byte anywhere. */
	for (vlen = 0; vlen <= 40; vlen++) {
		for (round = 0; round < 60; round++) {
			v = end - vlen;
			for (i = 0; i < vlen; i++)
				v[i] = (char)bytes[rnd(sizeof(bytes))];
			audit_buf_init(&b);
			audit_buf_add(&b, AF_TIME, "1", 1);
			audit_buf_add(&b, AF_PATH, v, vlen);
			assert_int_equal(audit_payload_parse(b.data, b.len,
			    &got), 0);
			assert_int_equal(got.len[AF_PATH], vlen);
			for (i = 0; i < vlen; i++) {
				unsigned char	c = (unsigned char)v[i];

				assert_int_equal(got.v[AF_PATH][i],
				    c < 0x20 || c > 0x7e ? '?' : c);
			}
		}
	}
	/*
	 * Parsing: payloads of names (known, in and out of order, unknown),
	 * values and NULs in any mix, cut at any length, ending at the
	 * fault; the result is the reference's.
	 */
	for (round = 0; round < 20000; round++) {
		char	 tmp[512];

		n = 0;
		while (n < 200) {
			switch (rnd(5)) {
			case 0:
			case 1:
				f = rnd(AF__MAX);
				k = audit_field_name_len(f);
				memcpy(tmp + n, audit_field_name(f), k);
				n += k;
				if (rnd(4) != 0)
					tmp[n++] = '\0';
				break;
			case 2:
				for (k = rnd(20); k > 0; k--)
					tmp[n++] = (char)bytes[rnd(
					    sizeof(bytes))];
				break;
			case 3:
				tmp[n++] = '\0';
				break;
			default:
				for (k = rnd(12); k > 0; k--)
					tmp[n++] = (char)('a' + rnd(26));
				tmp[n++] = '\0';
				break;
			}
		}
		n = rnd(n + 1);
		v = end - n;
		memcpy(v, tmp, n);
		rc = audit_payload_parse(v, n, &got);
		assert_int_equal(rc, ref_parse(v, n, &want));
		if (rc != 0)
			continue;
		for (f = 0; f < AF__MAX; f++) {
			assert_int_equal(got.len[f], want.len[f]);
			/* "" is a literal of each file: not compared. */
			if (want.len[f] > 0)
				assert_ptr_equal(got.v[f], want.v[f]);
		}
		/* Packing values that end at the fault. */
		k = audit_pack(&got, out1);
		assert_int_equal(k, audit_pack_len(&got));
		assert_int_equal(k, ref_pack(&got, out2));
		assert_memory_equal(out1, out2, k);
	}
	/* Packing one value of every length ending at the fault. */
	for (vlen = 0; vlen <= 40; vlen++) {
		for (round = 0; round < 40; round++) {
			v = end - vlen;
			for (i = 0; i < vlen; i++)
				v[i] = (char)bytes[rnd(sizeof(bytes))];
			for (f = 0; f < AF__MAX; f++) {
				got.v[f] = "";
				got.len[f] = 0;
			}
			got.v[AF_CACHE] = v;	/* the last but one */
			got.len[AF_CACHE] = vlen;
			got.v[AF_AUTH_FAILURE] = v;
			got.len[AF_AUTH_FAILURE] = vlen;
			k = audit_pack(&got, out1);
			assert_int_equal(k, ref_pack(&got, out2));
			assert_memory_equal(out1, out2, k);
		}
	}
	/* CRC-32C, both paths, and frames cut anywhere. */
	for (n = 0; n <= 40; n++) {
		v = end - n;
		for (i = 0; i < n; i++)
			v[i] = (char)rnd(256);
		assert_true(audit_crc32c(v, n) == audit_crc32c_tables(v, n));
	}
	/* Append-log frames (read when an older spool is converted). */
	for (n = 1; n <= 40; n++) {
		for (i = 0; i < n; i++)
			fr[AUDIT_LOG_FRAME + i] = (unsigned char)rnd(256);
		audit_spool_frame(fr, fr + AUDIT_LOG_FRAME, n);
		for (k = 0; k <= AUDIT_LOG_FRAME + n; k++) {
			v = end - k;
			memcpy(v, fr, k);
			assert_int_equal(audit_spool_check((unsigned char *)v,
			    k), k < AUDIT_LOG_FRAME + n ? 0 :
			    (long)(AUDIT_LOG_FRAME + n));
			/* A length past what is there: more is needed. */
			if (k >= AUDIT_LOG_FRAME) {
				v[4] = (char)(n + 1);
				assert_int_equal(audit_spool_check(
				    (unsigned char *)v, k), k <
				    AUDIT_LOG_FRAME + n + 1 ? 0 : -1);
			}
		}
	}
	/* Ring frames likewise. */
	for (n = 1; n <= 40; n++) {
		for (i = 0; i < n; i++)
			fr[AUDIT_SPOOL_FRAME + i] = (unsigned char)rnd(256);
		audit_ring_frame(fr, fr + AUDIT_SPOOL_FRAME, n, 4096 + n);
		for (k = 0; k <= AUDIT_SPOOL_FRAME + n; k++) {
			v = end - k;
			memcpy(v, fr, k);
			assert_int_equal(audit_ring_check((unsigned char *)v,
			    k, 4096 + n), k < AUDIT_SPOOL_FRAME + n ? 0 :
			    (long)(AUDIT_SPOOL_FRAME + n));
			if (k >= AUDIT_SPOOL_FRAME) {
				v[4] = (char)(n + 1);
				assert_int_equal(audit_ring_check(
				    (unsigned char *)v, k, 4096 + n), k <
				    AUDIT_SPOOL_FRAME + n + 1 ? 0 : -1);
			}
		}
	}
	unguard_page(end);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_payload_roundtrip),
		cmocka_unit_test(test_payload_offsets),
		cmocka_unit_test(test_numbers),
		cmocka_unit_test(test_sanitise),
		cmocka_unit_test(test_pack_tabs),
		cmocka_unit_test(test_payload_any_order),
		cmocka_unit_test(test_spool_frames),
		cmocka_unit_test(test_ring_frames),
		cmocka_unit_test(test_time),
		cmocka_unit_test(test_filter),
		cmocka_unit_test(test_packed_layout),
		cmocka_unit_test(test_page_ends),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
