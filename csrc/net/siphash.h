/* siphash.h - SipHash-2-4 (Aumasson & Bernstein), 64-bit output.
 *
 * The flow table's keyed hash: with a random 128-bit key chosen at start-up,
 * nobody outside can predict which flow keys collide, so a sender cannot
 * flood one bucket (OSv XORs the 4-tuple: trivially floodable).
 * Written from the paper's specification; checked against the reference
 * test vectors in csrc/tests/test_flow_table.c.
 */
#ifndef OSVRT_SIPHASH_H
#define OSVRT_SIPHASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct osvrt_sipkey {
    uint64_t k0, k1;
};

static inline uint64_t osvrt_rotl64(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

static inline uint64_t osvrt_le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

#define OSVRT_SIPROUND(v0, v1, v2, v3)                                          \
    do {                                                                       \
        v0 += v1; v1 = osvrt_rotl64(v1, 13); v1 ^= v0; v0 = osvrt_rotl64(v0, 32); \
        v2 += v3; v3 = osvrt_rotl64(v3, 16); v3 ^= v2;                         \
        v0 += v3; v3 = osvrt_rotl64(v3, 21); v3 ^= v0;                         \
        v2 += v1; v1 = osvrt_rotl64(v1, 17); v1 ^= v2; v2 = osvrt_rotl64(v2, 32); \
    } while (0)

static inline uint64_t osvrt_siphash(const struct osvrt_sipkey *key, const void *data, size_t len)
{
    const uint8_t *p = data;
    uint64_t v0 = 0x736f6d6570736575ull ^ key->k0;
    uint64_t v1 = 0x646f72616e646f6dull ^ key->k1;
    uint64_t v2 = 0x6c7967656e657261ull ^ key->k0;
    uint64_t v3 = 0x7465646279746573ull ^ key->k1;
    const uint8_t *end = p + (len & ~(size_t)7);
    for (; p != end; p += 8) {
        uint64_t m = osvrt_le64(p);
        v3 ^= m;
        OSVRT_SIPROUND(v0, v1, v2, v3);
        OSVRT_SIPROUND(v0, v1, v2, v3);
        v0 ^= m;
    }
    uint64_t b = (uint64_t)len << 56;
    switch (len & 7) {
    case 7: b |= (uint64_t)p[6] << 48; /* fall through */
    case 6: b |= (uint64_t)p[5] << 40; /* fall through */
    case 5: b |= (uint64_t)p[4] << 32; /* fall through */
    case 4: b |= (uint64_t)p[3] << 24; /* fall through */
    case 3: b |= (uint64_t)p[2] << 16; /* fall through */
    case 2: b |= (uint64_t)p[1] << 8;  /* fall through */
    case 1: b |= (uint64_t)p[0];       /* fall through */
    case 0: break;
    }
    v3 ^= b;
    OSVRT_SIPROUND(v0, v1, v2, v3);
    OSVRT_SIPROUND(v0, v1, v2, v3);
    v0 ^= b;
    v2 ^= 0xff;
    OSVRT_SIPROUND(v0, v1, v2, v3);
    OSVRT_SIPROUND(v0, v1, v2, v3);
    OSVRT_SIPROUND(v0, v1, v2, v3);
    OSVRT_SIPROUND(v0, v1, v2, v3);
    return v0 ^ v1 ^ v2 ^ v3;
}

#endif
