/* mp.c: msgpack decode (in place, after one bounds check) and encode. */
#include "mp.h"

#include <stdlib.h>
#include <string.h>

#define MP_MAX_DEPTH 64

static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint64_t be64(const uint8_t *p) { return (uint64_t)be32(p) << 32 | be32(p + 4); }

static void set_signed(struct mp_head *h, int64_t v)
{
	h->type = MP_INT;
	if (v < 0) {
		h->neg = true;
		h->i = v;
	} else {
		h->u = (uint64_t)v;
	}
}

/* Parses the header of the value at p (n bytes available). Payloads are not checked here. */
bool mp_head(const uint8_t *p, size_t n, struct mp_head *h)
{
	memset(h, 0, sizeof *h);
	if (n < 1)
		return false;
	uint8_t t = p[0];
	h->hlen = 1;
	if (t <= 0x7f) {
		h->type = MP_INT;
		h->u = t;
		return true;
	}
	if (t >= 0xe0) {
		set_signed(h, (int8_t)t);
		return true;
	}
	if ((t & 0xf0) == 0x80 || (t & 0xf0) == 0x90) {
		h->type = (t & 0xf0) == 0x80 ? MP_MAP : MP_ARR;
		h->len = t & 0x0f;
		return true;
	}
	if ((t & 0xe0) == 0xa0) {
		h->type = MP_STR;
		h->len = t & 0x1f;
		return true;
	}

	size_t lenbytes = 0; /* size of a length field that follows the tag */
	switch (t) {
	case 0xc0: h->type = MP_NIL; return true;
	case 0xc2: case 0xc3: h->type = MP_BOOL; h->b = t == 0xc3; return true;
	case 0xc4: case 0xc5: case 0xc6: h->type = MP_BIN; lenbytes = 1u << (t - 0xc4); break;
	case 0xd9: case 0xda: case 0xdb: h->type = MP_STR; lenbytes = 1u << (t - 0xd9); break;
	case 0xc7: case 0xc8: case 0xc9: h->type = MP_EXT; lenbytes = 1u << (t - 0xc7); break;
	case 0xdc: case 0xdd: h->type = MP_ARR; lenbytes = 2u << (t - 0xdc); break;
	case 0xde: case 0xdf: h->type = MP_MAP; lenbytes = 2u << (t - 0xde); break;
	case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
		h->type = MP_EXT;
		h->len = 1 + (1u << (t - 0xd4));
		return true;
	case 0xca: {
		if (n < 5)
			return false;
		uint32_t bits = be32(p + 1);
		float f;
		memcpy(&f, &bits, 4);
		h->type = MP_FLOAT;
		h->f = f;
		h->hlen = 5;
		return true;
	}
	case 0xcb: {
		if (n < 9)
			return false;
		uint64_t bits = be64(p + 1);
		memcpy(&h->f, &bits, 8);
		h->type = MP_FLOAT;
		h->hlen = 9;
		return true;
	}
	case 0xcc: case 0xcd: case 0xce: case 0xcf: {
		size_t k = 1u << (t - 0xcc);
		if (n < 1 + k)
			return false;
		h->type = MP_INT;
		h->u = k == 1 ? p[1] : k == 2 ? be16(p + 1) : k == 4 ? be32(p + 1) : be64(p + 1);
		h->hlen = 1 + k;
		return true;
	}
	case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
		size_t k = 1u << (t - 0xd0);
		if (n < 1 + k)
			return false;
		int64_t v = k == 1 ? (int8_t)p[1] : k == 2 ? (int16_t)be16(p + 1)
			: k == 4 ? (int32_t)be32(p + 1) : (int64_t)be64(p + 1);
		set_signed(h, v);
		h->hlen = 1 + k;
		return true;
	}
	default:
		return false; /* 0xc1 is never used */
	}
	if (n < 1 + lenbytes)
		return false;
	h->len = lenbytes == 1 ? p[1] : lenbytes == 2 ? be16(p + 1) : be32(p + 1);
	h->hlen = 1 + lenbytes;
	if (h->type == MP_EXT)
		h->len += 1; /* the ext type byte */
	return true;
}

static bool check(const uint8_t *p, size_t n, size_t *used, int depth)
{
	struct mp_head h;
	if (depth > MP_MAX_DEPTH || !mp_head(p, n, &h))
		return false;
	size_t off = h.hlen;
	switch (h.type) {
	case MP_STR: case MP_BIN: case MP_EXT:
		if (h.len > n - off)
			return false;
		off += h.len;
		break;
	case MP_ARR: case MP_MAP: {
		uint64_t cnt = h.type == MP_MAP ? h.len * 2 : h.len;
		if (cnt > n - off) /* every element takes at least one byte */
			return false;
		for (uint64_t k = 0; k < cnt; k++) {
			size_t u;
			if (!check(p + off, n - off, &u, depth + 1))
				return false;
			off += u;
		}
		break;
	}
	default:
		break;
	}
	*used = off;
	return true;
}

bool mp_check(const uint8_t *p, size_t n)
{
	size_t used;
	return check(p, n, &used, 0) && used == n;
}

enum mp_type mp_type(mpv v)
{
	struct mp_head h;
	return mp_head(v, SIZE_MAX, &h) ? h.type : MP_BAD;
}

mpv mp_skip(mpv v)
{
	struct mp_head h;
	mp_head(v, SIZE_MAX, &h);
	const uint8_t *p = v + h.hlen;
	switch (h.type) {
	case MP_STR: case MP_BIN: case MP_EXT:
		return p + h.len;
	case MP_ARR: case MP_MAP: {
		uint64_t cnt = h.type == MP_MAP ? h.len * 2 : h.len;
		for (uint64_t k = 0; k < cnt; k++)
			p = mp_skip(p);
		return p;
	}
	default:
		return p;
	}
}

uint32_t mp_count(mpv v)
{
	struct mp_head h;
	mp_head(v, SIZE_MAX, &h);
	return h.type == MP_ARR || h.type == MP_MAP ? (uint32_t)h.len : 0;
}

mpv mp_items(mpv v)
{
	struct mp_head h;
	mp_head(v, SIZE_MAX, &h);
	return v + h.hlen;
}

bool mp_str_eq(mpv v, const char *s)
{
	const char *p;
	size_t n;
	return mp_get_str(v, &p, &n) && n == strlen(s) && memcmp(p, s, n) == 0;
}

mpv mp_find(mpv map, const char *key)
{
	if (mp_type(map) != MP_MAP)
		return NULL;
	uint32_t n = mp_count(map);
	mpv p = mp_items(map);
	for (uint32_t k = 0; k < n; k++) {
		mpv val = mp_skip(p);
		if (mp_str_eq(p, key))
			return val;
		p = mp_skip(val);
	}
	return NULL;
}

bool mp_get_u64(mpv v, uint64_t *out)
{
	struct mp_head h;
	mp_head(v, SIZE_MAX, &h);
	if (h.type == MP_INT && !h.neg) {
		*out = h.u;
		return true;
	}
	if (h.type == MP_FLOAT && h.f >= 0 && h.f < 18446744073709551616.0 && (double)(uint64_t)h.f == h.f) {
		*out = (uint64_t)h.f;
		return true;
	}
	return false;
}

bool mp_get_i64(mpv v, int64_t *out)
{
	struct mp_head h;
	mp_head(v, SIZE_MAX, &h);
	if (h.type == MP_INT) {
		if (h.neg) {
			*out = h.i;
			return true;
		}
		if (h.u > INT64_MAX)
			return false;
		*out = (int64_t)h.u;
		return true;
	}
	if (h.type == MP_FLOAT && h.f >= -9223372036854775808.0 && h.f < 9223372036854775808.0 &&
	    (double)(int64_t)h.f == h.f) {
		*out = (int64_t)h.f;
		return true;
	}
	return false;
}

bool mp_get_word(mpv v, uint64_t *out)
{
	int64_t i;
	if (mp_get_u64(v, out))
		return true;
	if (mp_get_i64(v, &i)) {
		*out = (uint64_t)i;
		return true;
	}
	return false;
}

bool mp_get_bool(mpv v, bool *out)
{
	struct mp_head h;
	mp_head(v, SIZE_MAX, &h);
	if (h.type != MP_BOOL)
		return false;
	*out = h.b;
	return true;
}

bool mp_get_str(mpv v, const char **p, size_t *n)
{
	struct mp_head h;
	mp_head(v, SIZE_MAX, &h);
	if (h.type != MP_STR)
		return false;
	*p = (const char *)v + h.hlen;
	*n = h.len;
	return true;
}

bool mp_get_bytes(mpv v, const uint8_t **p, size_t *n)
{
	struct mp_head h;
	mp_head(v, SIZE_MAX, &h);
	if (h.type != MP_STR && h.type != MP_BIN)
		return false;
	*p = v + h.hlen;
	*n = h.len;
	return true;
}

/* ---- encoding ---- */

bool mpw_reserve(struct mpw *w, size_t n)
{
	if (w->oom)
		return false;
	if (w->cap - w->len >= n)
		return true;
	size_t need = w->len + n;
	if (need < w->len)
		goto oom;
	size_t cap = w->cap ? w->cap : 256;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	uint8_t *p = realloc(w->p, cap);
	if (!p)
		goto oom;
	w->p = p;
	w->cap = cap;
	return true;
oom:
	w->oom = true;
	return false;
}

void mpw_raw(struct mpw *w, const void *p, size_t n)
{
	if (n == 0 || !mpw_reserve(w, n))
		return;
	memcpy(w->p + w->len, p, n);
	w->len += n;
}

static void put8(struct mpw *w, uint8_t tag) { mpw_raw(w, &tag, 1); }

static void put_be(struct mpw *w, uint8_t tag, uint64_t v, int bytes)
{
	uint8_t b[9];
	b[0] = tag;
	for (int k = 0; k < bytes; k++)
		b[1 + k] = (uint8_t)(v >> (8 * (bytes - 1 - k)));
	mpw_raw(w, b, 1 + (size_t)bytes);
}

void mpw_nil(struct mpw *w) { put8(w, 0xc0); }
void mpw_bool(struct mpw *w, bool b) { put8(w, b ? 0xc3 : 0xc2); }

void mpw_uint(struct mpw *w, uint64_t u)
{
	if (u <= 0x7f)
		put8(w, (uint8_t)u);
	else if (u <= 0xff)
		put_be(w, 0xcc, u, 1);
	else if (u <= 0xffff)
		put_be(w, 0xcd, u, 2);
	else if (u <= 0xffffffffu)
		put_be(w, 0xce, u, 4);
	else
		put_be(w, 0xcf, u, 8);
}

void mpw_int(struct mpw *w, int64_t i)
{
	if (i >= 0)
		mpw_uint(w, (uint64_t)i);
	else if (i >= -32)
		put8(w, (uint8_t)(int8_t)i);
	else if (i >= INT8_MIN)
		put_be(w, 0xd0, (uint64_t)i, 1);
	else if (i >= INT16_MIN)
		put_be(w, 0xd1, (uint64_t)i, 2);
	else if (i >= INT32_MIN)
		put_be(w, 0xd2, (uint64_t)i, 4);
	else
		put_be(w, 0xd3, (uint64_t)i, 8);
}

void mpw_strn(struct mpw *w, const char *s, size_t n)
{
	if (n <= 31)
		put8(w, (uint8_t)(0xa0 | n));
	else if (n <= 0xff)
		put_be(w, 0xd9, n, 1);
	else if (n <= 0xffff)
		put_be(w, 0xda, n, 2);
	else
		put_be(w, 0xdb, n, 4);
	mpw_raw(w, s, n);
}

void mpw_str(struct mpw *w, const char *s) { mpw_strn(w, s, strlen(s)); }

void mpw_bin(struct mpw *w, const void *p, size_t n)
{
	if (n <= 0xff)
		put_be(w, 0xc4, n, 1);
	else if (n <= 0xffff)
		put_be(w, 0xc5, n, 2);
	else
		put_be(w, 0xc6, n, 4);
	mpw_raw(w, p, n);
}

void mpw_arr(struct mpw *w, uint32_t n)
{
	if (n <= 15)
		put8(w, (uint8_t)(0x90 | n));
	else if (n <= 0xffff)
		put_be(w, 0xdc, n, 2);
	else
		put_be(w, 0xdd, n, 4);
}

void mpw_map(struct mpw *w, uint32_t n)
{
	if (n <= 15)
		put8(w, (uint8_t)(0x80 | n));
	else if (n <= 0xffff)
		put_be(w, 0xde, n, 2);
	else
		put_be(w, 0xdf, n, 4);
}

void mpw_free(struct mpw *w)
{
	free(w->p);
	memset(w, 0, sizeof *w);
}
