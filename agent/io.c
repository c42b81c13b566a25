/* io.c: length-prefixed frame reading, output queues and the poll set. */
#include "agent.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- output queue: whole frames, written in order, without copying ---- */

void outq_push(struct outq *q, uint8_t *p, size_t len)
{
	struct chunk *c = malloc(sizeof *c);
	if (!c) {
		free(p);
		return;
	}
	*c = (struct chunk){ .p = p, .len = len };
	if (q->tail)
		q->tail->next = c;
	else
		q->head = c;
	q->tail = c;
	q->bytes += len;
}

static void pop(struct outq *q)
{
	struct chunk *c = q->head;
	q->head = c->next;
	if (!q->head)
		q->tail = NULL;
	q->bytes -= c->len - c->off;
	free(c->p);
	free(c);
}

int outq_flush(struct outq *q, int fd)
{
	while (q->head) {
		struct chunk *c = q->head;
		ssize_t n = write(fd, c->p + c->off, c->len - c->off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return 0;
			return -1;
		}
		c->off += (size_t)n;
		q->bytes -= (size_t)n;
		if (c->off == c->len)
			pop(q);
	}
	return 0;
}

void outq_clear(struct outq *q)
{
	while (q->head)
		pop(q);
	q->bytes = 0;
}

/* ---- frame reader ----
 * Reads go into a staging buffer, except while a large body is pending with nothing staged:
 * then they go straight into the frame. The length is checked before the body is allocated. */

#define STAGE_SIZE (256u << 10)

ssize_t reader_fill(struct reader *r, int fd)
{
	if (r->frame && r->soff == r->slen && r->flen - r->fgot >= 4096) {
		ssize_t n = read(fd, r->frame + 4 + r->fgot, r->flen - r->fgot);
		if (n > 0)
			r->fgot += (size_t)n;
		return n;
	}
	if (!r->stage && !(r->stage = malloc(STAGE_SIZE))) {
		errno = ENOMEM;
		return -1;
	}
	/* reader_next() always consumes everything staged, so the stage is empty here. */
	r->soff = r->slen = 0;
	ssize_t n = read(fd, r->stage, STAGE_SIZE);
	if (n > 0)
		r->slen = (size_t)n;
	return n;
}

int reader_next(struct reader *r, uint8_t **frame, size_t *flen, uint32_t *badlen)
{
	if (!r->frame) {
		while (r->hgot < 4 && r->soff < r->slen)
			r->hdr[r->hgot++] = r->stage[r->soff++];
		if (r->hgot < 4)
			return RD_AGAIN;
		uint32_t len = (uint32_t)r->hdr[0] << 24 | (uint32_t)r->hdr[1] << 16 |
			       (uint32_t)r->hdr[2] << 8 | r->hdr[3];
		if (len > MAX_FRAME_BYTES) {
			*badlen = len;
			return RD_TOOBIG;
		}
		r->frame = malloc((size_t)len + 4);
		if (!r->frame) {
			*badlen = len;
			return RD_NOMEM;
		}
		memcpy(r->frame, r->hdr, 4);
		r->flen = len;
		r->fgot = 0;
	}
	size_t take = r->flen - r->fgot;
	if (take > r->slen - r->soff)
		take = r->slen - r->soff;
	memcpy(r->frame + 4 + r->fgot, r->stage + r->soff, take);
	r->fgot += take;
	r->soff += take;
	if (r->fgot < r->flen)
		return RD_AGAIN;
	*frame = r->frame;
	*flen = r->flen;
	r->frame = NULL;
	r->hgot = 0;
	return RD_FRAME;
}

/* Discarding after a bad frame: looks through the staged bytes for a complete, valid `hello`
 * frame. A host that (re)connects starts with one, so this resynchronises even when the
 * disconnect went unseen (on a virtio port a quick close and reopen can both happen between two
 * polls). Only hello: a stray frame found inside garbage must never run as a request. */
bool reader_resync_hello(struct reader *r)
{
	for (size_t i = r->soff; i + 5 <= r->slen; i++) {
		const uint8_t *p = r->stage + i;
		uint32_t len = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
		if (len == 0 || len > r->slen - i - 4)
			continue;
		if ((p[4] & 0xf0) != 0x80 && p[4] != 0xde && p[4] != 0xdf)
			continue;
		if (!mp_check(p + 4, len))
			continue;
		mpv kind = mp_find(p + 4, "kind");
		if (kind && mp_str_eq(kind, "hello")) {
			r->soff = i;
			r->hgot = 0;
			return true;
		}
	}
	r->soff = r->slen;
	return false;
}

bool reader_partial(const struct reader *r) { return r->frame || r->hgot; }

void reader_drop_frame(struct reader *r)
{
	free(r->frame);
	r->frame = NULL;
	r->hgot = 0;
}

void reader_reset(struct reader *r)
{
	free(r->frame);
	r->frame = NULL;
	r->hgot = 0;
	r->slen = r->soff = 0;
	r->flen = r->fgot = 0;
}

/* ---- poll set: rebuilt every loop iteration ---- */

struct pent {
	poll_fn fn;
	void *obj;
	int tag;
};

static struct pollfd *ps_fds;
static struct pent *ps_ents;
static size_t ps_n, ps_cap;

void ps_reset(void) { ps_n = 0; }

void ps_add(int fd, short events, poll_fn fn, void *obj, int tag)
{
	if (ps_n == ps_cap) {
		size_t cap = ps_cap ? ps_cap * 2 : 64;
		struct pollfd *f = realloc(ps_fds, cap * sizeof *f);
		if (!f)
			return;
		ps_fds = f;
		struct pent *e = realloc(ps_ents, cap * sizeof *e);
		if (!e)
			return;
		ps_ents = e;
		ps_cap = cap;
	}
	ps_fds[ps_n] = (struct pollfd){ .fd = fd, .events = events };
	ps_ents[ps_n] = (struct pent){ fn, obj, tag };
	ps_n++;
}

static int64_t ps_waited;

int64_t ps_last_wait_ms(void) { return ps_waited; }

void ps_run(int timeout_ms)
{
	int64_t t0 = now_ms();
	int n = poll(ps_fds, ps_n, timeout_ms);
	ps_waited = now_ms() - t0; /* the wait only, not the dispatch below */
	if (n < 0) {
		if (errno != EINTR && errno != EAGAIN)
			logmsg("poll: %s", strerror(errno));
		return;
	}
	/* Callbacks may add to the set only in a worker child that never returns here. */
	size_t count = ps_n;
	for (size_t k = 0; k < count && n > 0; k++) {
		if (!ps_fds[k].revents)
			continue;
		n--;
		ps_ents[k].fn(ps_ents[k].obj, ps_ents[k].tag, ps_fds[k].revents);
	}
}
