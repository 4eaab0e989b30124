/*
 * audit_frame.h: the audit spool's on-disk format (audit_frame.c): the
 * ring's header, frames and pads, the append log's header, mark and
 * frames, and their CRCs.  Included by audit.h, which defines
 * AUDIT_REC_MAX.
 */
#ifndef PC_AUDIT_FRAME_H
#define PC_AUDIT_FRAME_H

#include <stddef.h>
#include <stdint.h>

/*
 * The spool file: a 32-byte header ("PCAUDSP1", the writer's run number,
 * zeros), then records, each a 12-byte frame head (magic, payload length,
 * checksum of the payload; little endian) and the payload.  The magic
 * names the checksum: "PCR2" CRC-32C (Castagnoli), which frames are
 * written with, or "PCR1" CRC-32 (zlib's), which writers before it used
 * and which is still read.  A record that is short, too long or fails
 * its checksum ends the valid part of the file: after a crash that is
 * the torn tail, and it is dropped.  The append log of session 7 before
 * the ring said "PCAUDSP2" while it held frames (so that a writer before
 * "PCR2" refused it rather than drop them); either header is read, and
 * the file converted into a ring (audit_spool.c).  Only tests write one.
 */
#define AUDIT_SPOOL_HDR		32
#define AUDIT_LOG_FRAME		12
#define AUDIT_SPOOL_MAGIC	0x31524350u	/* "PCR1": CRC-32 */
#define AUDIT_SPOOL_MAGIC_C	0x32524350u	/* "PCR2": CRC-32C */

/*
 * The spool since session 7: a ring of spool_max_bytes (one page of
 * header, the rest records) allocated once and never truncated.  The
 * header page starts with "PCAUDRG1", the run, the ring's size, the
 * released head (the position of the oldest record not acknowledged, a
 * frame boundary) and a CRC-32 of those.  Positions are 64-bit and only
 * grow: the byte at position p is at file offset AUDIT_RING_DATA +
 * (p - AUDIT_RING_DATA) % size, a frame may wrap.  A ring frame is the
 * "PCR3" magic, the payload length, the payload's CRC-32C and the
 * frame's own position (its sequence): a frame of an earlier lap, or of
 * the torn tail, does not carry the position it is read at.
 */
#define AUDIT_RING_DATA		4096
#define AUDIT_RING_HDR		40
#define AUDIT_SPOOL_FRAME	20
#define AUDIT_RING_MAGIC	0x33524350u	/* "PCR3": CRC-32C + seq */
/*
 * A pad ("PCRP", length 0, the CRC-32C of its position, its position):
 * the ring goes on at the start of its next lap.  While Redis keeps up
 * the writer wraps early (audit_spool.c), so that the pages it writes
 * stay few and in the page cache.
 */
#define AUDIT_RING_PAD		0x50524350u	/* "PCRP" */
void	 audit_ring_pad(unsigned char *, uint64_t);
int	 audit_ring_is_pad(const unsigned char *, size_t, uint64_t);
void	 audit_ring_header(unsigned char *, uint64_t, uint64_t, uint64_t);
int	 audit_ring_header_parse(const unsigned char *, size_t, uint64_t *,
	    uint64_t *, uint64_t *);
void	 audit_ring_frame(unsigned char *, const void *, size_t, uint64_t);
/* As audit_spool_check(), and -1 unless the frame says it is at pos. */
long	 audit_ring_check(const unsigned char *, size_t, uint64_t);

uint32_t audit_crc32(const void *, size_t);
/* CRC-32C: SSE 4.2's instruction where there is one, else tables. */
uint32_t audit_crc32c(const void *, size_t);
uint32_t audit_crc32c_tables(const void *, size_t);	/* for tests */
void	 audit_spool_header(unsigned char *, uint64_t, int);
int	 audit_spool_header_parse(const unsigned char *, size_t, uint64_t *);
void	 audit_spool_frame(unsigned char *, const void *, size_t);
uint32_t audit_spool_frame_crc(const unsigned char *);

/*
 * The acknowledged mark, in the header's last 12 bytes (zeros in files
 * of writers before it): the offset after the last record Redis
 * acknowledged and that record's payload CRC.  It is a hint, trusted
 * only where a record of that CRC ends at that offset: a mark left
 * stale by a crash or a power loss (the file emptied and refilled since,
 * or written back before the records it covers) matches nothing, and
 * the whole file is replayed, which the Redis script makes harmless.
 */
#define AUDIT_SPOOL_MARK_AT	20
#define AUDIT_SPOOL_MARK	12
void	 audit_spool_mark(unsigned char *, uint64_t, uint32_t);
void	 audit_spool_mark_parse(const unsigned char *, uint64_t *,
	    uint32_t *);
/*
 * Check the record of an append log (PCR1/PCR2) at buf (avail bytes).
 * Returns its total size (frame and payload), 0 when more bytes are
 * needed, -1 when it is invalid.
 */
long	 audit_spool_check(const unsigned char *, size_t);

#endif /* PC_AUDIT_FRAME_H */
