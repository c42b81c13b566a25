/* mp.h: the msgpack subset the agent speaks.
 *
 * Decoding is in place: a frame is checked once with mp_check(), then values are plain pointers
 * into it (mpv) and the accessors below trust the structure. Nothing is copied or allocated.
 * Encoding appends to a growable buffer; every int goes out in its smallest format. */
#ifndef PROVIUM_MP_H
#define PROVIUM_MP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum mp_type { MP_BAD, MP_NIL, MP_BOOL, MP_INT, MP_FLOAT, MP_STR, MP_BIN, MP_ARR, MP_MAP, MP_EXT };

/* A pointer to the first byte of a value inside a buffer that passed mp_check(). */
typedef const uint8_t *mpv;

struct mp_head {
	enum mp_type type;
	uint32_t hlen; /* header bytes */
	uint64_t len;  /* payload bytes (str, bin, ext with its type byte) or element count (arr, map) */
	bool neg;      /* MP_INT: negative and held in i, else held in u */
	uint64_t u;
	int64_t i;
	double f;
	bool b;
};

bool mp_head(const uint8_t *p, size_t n, struct mp_head *h);
/* True when p[0..n) is exactly one well-formed value, nested at most 64 deep. */
bool mp_check(const uint8_t *p, size_t n);

enum mp_type mp_type(mpv v);
mpv mp_skip(mpv v);                   /* the byte after v */
mpv mp_find(mpv map, const char *key); /* value for a str key, or NULL */
uint32_t mp_count(mpv v);             /* elements of an array, pairs of a map */
mpv mp_items(mpv v);                  /* first element of an array or map */

/* Integers: any int format, or a float holding an integral value. */
bool mp_get_u64(mpv v, uint64_t *out);
bool mp_get_i64(mpv v, int64_t *out);
/* A machine word: any int in [INT64_MIN, UINT64_MAX], as its 64-bit pattern. */
bool mp_get_word(mpv v, uint64_t *out);
bool mp_get_bool(mpv v, bool *out);
bool mp_get_str(mpv v, const char **p, size_t *n);       /* str only */
bool mp_get_bytes(mpv v, const uint8_t **p, size_t *n);  /* bin or str */
bool mp_str_eq(mpv v, const char *s);

struct mpw {
	uint8_t *p;
	size_t len, cap;
	bool oom; /* an append failed; the buffer is incomplete */
};

bool mpw_reserve(struct mpw *w, size_t n);
void mpw_raw(struct mpw *w, const void *p, size_t n);
void mpw_nil(struct mpw *w);
void mpw_bool(struct mpw *w, bool b);
void mpw_uint(struct mpw *w, uint64_t u);
void mpw_int(struct mpw *w, int64_t i);
void mpw_str(struct mpw *w, const char *s);
void mpw_strn(struct mpw *w, const char *s, size_t n);
void mpw_bin(struct mpw *w, const void *p, size_t n);
void mpw_arr(struct mpw *w, uint32_t n);
void mpw_map(struct mpw *w, uint32_t n);
void mpw_free(struct mpw *w);

#endif
