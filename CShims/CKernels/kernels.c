#include "CKernels.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

// Every exact score here is the same sum, in the same order, whichever kernel computes it:
// lane l (0..7) accumulates x[d] * q[d] for d = l, l + 8, l + 16, ... with fused multiply-adds
// (a final partial chunk counts as zeros past dim), and the lanes are added as
//   ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)).
// So a query scored alone, in a batch, or over a shortlist gets bit-identical floats.

// The reference: one pair.
static float dot_ref(const float *x, const float *q, int dim) {
  float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int d = 0; d < dim; d += 8) {
    for (int l = 0; l < 8; l++) {
      const int at = d + l;
      a[l] = at < dim ? fmaf(x[at], q[at], a[l]) : fmaf(0.0f, 0.0f, a[l]);
    }
  }
  return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
}

#if defined(__x86_64__)
#include <immintrin.h>

// What the CPU offers: 0 portable C, 1 AVX2 + FMA + F16C, 2 also AVX-512 (F, DQ). Detected once;
// RECSERVE_KERNELS=portable|avx2 caps it, and ck_set_level caps it for tests.
static int detected_level(void) {
  __builtin_cpu_init();
  int level = 0;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c")) {
    level = 1;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")) level = 2;
  }
  const char *cap = getenv("RECSERVE_KERNELS");
  if (cap && strcmp(cap, "portable") == 0) level = 0;
  if (cap && strcmp(cap, "avx2") == 0 && level > 1) level = 1;
  return level;
}

static int level_cache = -1;

static int level(void) {
  if (level_cache < 0) level_cache = detected_level();
  return level_cache;
}

static int has_avx2_fma(void) { return level() >= 1; }
static int has_f16c(void) { return level() >= 1; }
static int has_avx512(void) { return level() >= 2; }

// Eight accumulators to one vector of their eight lane sums, in the order of dot_ref:
// r[s] = ((a_s0 + a_s4) + (a_s2 + a_s6)) + ((a_s1 + a_s5) + (a_s3 + a_s7)).
__attribute__((target("avx2,fma"))) static inline __m256 reduce8(const __m256 *a) {
  __m256 b[4];
  for (int s = 0; s < 4; s++) {
    // [a_s lanes 0-3 | a_s+4 lanes 0-3] + [a_s lanes 4-7 | a_s+4 lanes 4-7]
    b[s] = _mm256_add_ps(_mm256_permute2f128_ps(a[s], a[s + 4], 0x20),
                         _mm256_permute2f128_ps(a[s], a[s + 4], 0x31));
  }
  // Per 128-bit half: [b0[0]+b0[2], b1[0]+b1[2], b0[1]+b0[3], b1[1]+b1[3]]
  __m256 c01 = _mm256_add_ps(_mm256_unpacklo_ps(b[0], b[1]), _mm256_unpackhi_ps(b[0], b[1]));
  __m256 c23 = _mm256_add_ps(_mm256_unpacklo_ps(b[2], b[3]), _mm256_unpackhi_ps(b[2], b[3]));
  __m256 even = _mm256_shuffle_ps(c01, c23, _MM_SHUFFLE(1, 0, 1, 0));
  __m256 odd = _mm256_shuffle_ps(c01, c23, _MM_SHUFFLE(3, 2, 3, 2));
  return _mm256_add_ps(even, odd);
}

static const int tail_mask_table[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

// Lanes below `left` (1..7) loaded, the rest zero.
__attribute__((target("avx2,fma"))) static inline __m256i tail_mask(int left) {
  return _mm256_loadu_si256((const __m256i *)(tail_mask_table + 8 - left));
}

// Eight rows against one query: out[s] = dot_ref(rows[s], q).
__attribute__((target("avx2,fma"))) static inline void rows8(const float *const *rows,
                                                             const float *q, int dim,
                                                             float *out) {
  __m256 acc[8];
  for (int s = 0; s < 8; s++) acc[s] = _mm256_setzero_ps();
  const int full = dim & ~7;
  for (int d = 0; d < full; d += 8) {
    const __m256 qv = _mm256_loadu_ps(q + d);
    for (int s = 0; s < 8; s++) acc[s] = _mm256_fmadd_ps(_mm256_loadu_ps(rows[s] + d), qv, acc[s]);
  }
  if (full < dim) {
    const __m256i mask = tail_mask(dim - full);
    const __m256 qv = _mm256_maskload_ps(q + full, mask);
    for (int s = 0; s < 8; s++)
      acc[s] = _mm256_fmadd_ps(_mm256_maskload_ps(rows[s] + full, mask), qv, acc[s]);
  }
  _mm256_storeu_ps(out, reduce8(acc));
}

// One query against rows of up to 8 chunks (dim <= 64), the query's chunks held in registers
// and each row read front to back (a sequential stream the prefetchers follow); eight rows'
// accumulators reduced together. C: chunks; the last is masked when dim is not a multiple of 8.
#define SINGLE_CHUNKS(C)                                                                          \
  __attribute__((target("avx2,fma"))) static void single_##C(const float *q, const float *items,  \
                                                             int count, int dim, float *out) {    \
    const int left = dim - 8 * (C - 1);                                                           \
    const __m256i mask = tail_mask(left < 8 ? left : 8);                                          \
    __m256 qv[C];                                                                                 \
    for (int k = 0; k < C - 1; k++) qv[k] = _mm256_loadu_ps(q + 8 * k);                          \
    qv[C - 1] = _mm256_maskload_ps(q + 8 * (C - 1), mask);                                        \
    int i = 0;                                                                                    \
    for (; i + 8 <= count; i += 8) {                                                              \
      __m256 acc[8];                                                                              \
      for (int s = 0; s < 8; s++) {                                                               \
        const float *row = items + (size_t)(i + s) * dim;                                         \
        __m256 a = _mm256_setzero_ps();                                                           \
        for (int k = 0; k < C - 1; k++) a = _mm256_fmadd_ps(_mm256_loadu_ps(row + 8 * k), qv[k], a); \
        const __m256 last = left == 8 ? _mm256_loadu_ps(row + 8 * (C - 1))                        \
                                      : _mm256_maskload_ps(row + 8 * (C - 1), mask);            \
        acc[s] = _mm256_fmadd_ps(last, qv[C - 1], a);                                             \
      }                                                                                           \
      _mm256_storeu_ps(out + i, reduce8(acc));                                                    \
    }                                                                                             \
    for (; i < count; i++) out[i] = dot_ref(items + (size_t)i * dim, q, dim);                     \
  }

SINGLE_CHUNKS(1)
SINGLE_CHUNKS(2)
SINGLE_CHUNKS(3)
SINGLE_CHUNKS(4)
SINGLE_CHUNKS(5)
SINGLE_CHUNKS(6)
SINGLE_CHUNKS(7)
SINGLE_CHUNKS(8)

__attribute__((target("avx2,fma"))) static void single_avx2(const float *q, const float *items,
                                                            int count, int dim, float *out) {
  switch ((dim + 7) / 8) {
    case 1: single_1(q, items, count, dim, out); return;
    case 2: single_2(q, items, count, dim, out); return;
    case 3: single_3(q, items, count, dim, out); return;
    case 4: single_4(q, items, count, dim, out); return;
    case 5: single_5(q, items, count, dim, out); return;
    case 6: single_6(q, items, count, dim, out); return;
    case 7: single_7(q, items, count, dim, out); return;
    case 8: single_8(q, items, count, dim, out); return;
    default: break;
  }
  int i = 0;
  for (; i + 8 <= count; i += 8) {
    const float *rows[8];
    for (int s = 0; s < 8; s++) rows[s] = items + (size_t)(i + s) * dim;
    rows8(rows, q, dim, out + i);
  }
  for (; i < count; i++) out[i] = dot_ref(items + (size_t)i * dim, q, dim);
}

__attribute__((target("avx2,fma"))) static void indexed_avx2(const float *q, const float *items,
                                                             int dim, const int *indices,
                                                             int count, float *out) {
  int i = 0;
  for (; i + 8 <= count; i += 8) {
    const float *rows[8];
    for (int s = 0; s < 8; s++) rows[s] = items + (size_t)indices[i + s] * dim;
    rows8(rows, q, dim, out + i);
  }
  for (; i < count; i++) out[i] = dot_ref(items + (size_t)indices[i] * dim, q, dim);
}

// The batch kernels at 256 bits: tiles of 2 items x 4 queries, eight accumulators (acc[t] item i
// with query 4g + t, acc[4 + t] item i + 1), reduced together by reduce8, which leaves item i's
// four scores in the low 128 bits and item i + 1's in the high ones. The queries are packed
// first, zero-padded to whole chunks and groups, so that the inner loop reads them in order
// without bounds; each item chunk is loaded once per group of four and stays in L1 across them.

// The queries packed for the batch kernels, zero past dim or count, in groups of 4 (halves 1:
// the 256-bit tiles) or of 8 (halves 2: the 512-bit ones, two 8-lane halves a register):
//   packed[(((g * chunks + c) * 4 + t) * halves + h) * 8 + l] = query (4 * halves * g + t + 4h),
//   dim 8c + l.
// PACKED_FLOATS (below) leaves room for 32 queries of up to 512 dims.
static void pack_queries(const float *queries, int count, int dim, int halves, float *packed) {
  const int chunks = (dim + 7) / 8;
  const int per = 4 * halves;
  const int groups = (count + per - 1) / per;
  for (int g = 0; g < groups; g++)
    for (int c = 0; c < chunks; c++)
      for (int t = 0; t < 4; t++)
        for (int h = 0; h < halves; h++) {
          const int j = per * g + t + 4 * h;
          float *to = packed + ((((size_t)g * chunks + c) * 4 + t) * halves + h) * 8;
          for (int l = 0; l < 8; l++) {
            const int d = 8 * c + l;
            to[l] = j < count && d < dim ? queries[(size_t)j * dim + d] : 0;
          }
        }
}

// One 256-bit tile's accumulators to scores: (dot + offset) + term as everywhere, stored to items
// i and i + 1 (when i + 1 < n), queries 4g..4g+3 (those below count; padding columns get 0).
__attribute__((target("avx2,fma"))) static inline void finish_quad(
    const __m256 *acc, const float *offsets, int count, int g, const float *terms, int i, int n,
    float *out, int stride) {
  const int j = 4 * g;
  float o4[4];
  for (int t = 0; t < 4; t++) o4[t] = j + t < count ? offsets[j + t] : 0;
  const __m128 ov = _mm_loadu_ps(o4);
  const float t0 = terms ? terms[i] : 0, t1 = terms && i + 1 < n ? terms[i + 1] : 0;
  __m256 r = _mm256_add_ps(reduce8(acc), _mm256_set_m128(ov, ov));
  r = _mm256_add_ps(r, _mm256_set_m128(_mm_set1_ps(t1), _mm_set1_ps(t0)));
  float *o0 = out + (size_t)i * stride + j;
  float *o1 = out + (size_t)(i + 1) * stride + j;
  if (j + 4 <= count) {
    _mm_storeu_ps(o0, _mm256_castps256_ps128(r));
    if (i + 1 < n) _mm_storeu_ps(o1, _mm256_extractf128_ps(r, 1));
  } else {
    float lanes[8];
    _mm256_storeu_ps(lanes, r);
    for (int t = 0; t < 4 && j + t < stride; t++) o0[t] = j + t < count ? lanes[t] : 0;
    if (i + 1 < n)
      for (int t = 0; t < 4 && j + t < stride; t++) o1[t] = j + t < count ? lanes[4 + t] : 0;
  }
}

// The padding columns past the last group of four, for items i and i + 1.
static inline void zero_padding_quads(int count, int i, int n, float *out, int stride) {
  for (int j = (count + 3) & ~3; j < stride; j++) {
    out[(size_t)i * stride + j] = 0;
    if (i + 1 < n) out[(size_t)(i + 1) * stride + j] = 0;
  }
}

// One group of 4 packed queries (qp) against two item rows, whose chunk c the LOAD expressions
// give as a __m256 (x0 / x1 and c in scope): into acc[8].
#define QUAD_ACCUMULATE(CHUNKS, LOAD0, LOAD1)                                                     \
  for (int s = 0; s < 8; s++) acc[s] = _mm256_setzero_ps();                                       \
  for (int c = 0; c < (CHUNKS); c++, qp += 32) {                                                  \
    const __m256 v0 = (LOAD0);                                                                    \
    const __m256 v1 = (LOAD1);                                                                    \
    for (int t = 0; t < 4; t++) {                                                                 \
      const __m256 q = _mm256_load_ps(qp + 8 * t);                                                \
      acc[t] = _mm256_fmadd_ps(v0, q, acc[t]);                                                    \
      acc[4 + t] = _mm256_fmadd_ps(v1, q, acc[4 + t]);                                            \
    }                                                                                             \
  }

// The f32 tiles over every item pair. Inlined with a constant `chunks` for whole-chunk dims up to
// 64, so that the chunk loop unrolls.
__attribute__((target("avx2,fma"), always_inline)) static inline void batch_quads(
    const float *packed, int count, const float *offsets, const float *items, const float *terms,
    int n, int dim, int chunks, float *out, int stride) {
  const int groups = (count + 3) / 4;
  const int full = dim & ~7;
  const int left = dim - full;
  const __m256i mask = left ? tail_mask(left) : _mm256_setzero_si256();
  for (int i = 0; i < n; i += 2) {
    const float *x0 = items + (size_t)i * dim;
    const float *x1 = i + 1 < n ? x0 + dim : x0;
    for (int g = 0; g < groups; g++) {
      __m256 acc[8];
      const float *qp = packed + (size_t)g * chunks * 32;
      QUAD_ACCUMULATE(chunks,
                      8 * c < full ? _mm256_loadu_ps(x0 + 8 * c)
                                   : _mm256_maskload_ps(x0 + 8 * c, mask),
                      8 * c < full ? _mm256_loadu_ps(x1 + 8 * c)
                                   : _mm256_maskload_ps(x1 + 8 * c, mask))
      finish_quad(acc, offsets, count, g, terms, i, n, out, stride);
    }
    zero_padding_quads(count, i, n, out, stride);
  }
}

enum { PACKED_FLOATS = 4 * 4 * 64 * 16 };

__attribute__((target("avx2,fma"))) static void batch_avx2(const float *queries, int count,
                                                           const float *offsets,
                                                           const float *items,
                                                           const float *terms, int n, int dim,
                                                           float *out, int stride) {
  float packed[PACKED_FLOATS] __attribute__((aligned(32)));
  pack_queries(queries, count, dim, 1, packed);
  const int chunks = (dim + 7) / 8;
#define BATCH_QUADS_CASE(C) \
  case C: batch_quads(packed, count, offsets, items, terms, n, dim, C, out, stride); return;
  if ((dim & 7) == 0) {
    switch (chunks) {
      BATCH_QUADS_CASE(1)
      BATCH_QUADS_CASE(2)
      BATCH_QUADS_CASE(3)
      BATCH_QUADS_CASE(4)
      BATCH_QUADS_CASE(5)
      BATCH_QUADS_CASE(6)
      BATCH_QUADS_CASE(7)
      BATCH_QUADS_CASE(8)
      default: break;
    }
  }
#undef BATCH_QUADS_CASE
  batch_quads(packed, count, offsets, items, terms, n, dim, chunks, out, stride);
}

// Many queries against half-precision rows (dim a multiple of 8, at most 512; count at most 32):
// the tiles of batch_avx2, each item chunk converted from half (F16C) once per group of four
// queries. An approximation like every half score, (dot + offset) + term as elsewhere.
__attribute__((target("avx2,fma,f16c"), always_inline)) static inline void half_batch_quads(
    const float *packed, int count, const float *offsets, const unsigned short *items,
    const float *terms, int n, int dim, int chunks, float *out, int stride) {
  const int groups = (count + 3) / 4;
  for (int i = 0; i < n; i += 2) {
    const unsigned short *x0 = items + (size_t)i * dim;
    const unsigned short *x1 = i + 1 < n ? x0 + dim : x0;
    for (int g = 0; g < groups; g++) {
      __m256 acc[8];
      const float *qp = packed + (size_t)g * chunks * 32;
      QUAD_ACCUMULATE(chunks, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x0 + 8 * c))),
                      _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x1 + 8 * c))))
      finish_quad(acc, offsets, count, g, terms, i, n, out, stride);
    }
    zero_padding_quads(count, i, n, out, stride);
  }
}

__attribute__((target("avx2,fma,f16c"))) static void half_batch_avx2(
    const float *queries, int count, const float *offsets, const unsigned short *items,
    const float *terms, int n, int dim, float *out, int stride) {
  float packed[PACKED_FLOATS] __attribute__((aligned(32)));
  pack_queries(queries, count, dim, 1, packed);
  const int chunks = dim / 8;
#define HALF_QUADS_CASE(C) \
  case C: half_batch_quads(packed, count, offsets, items, terms, n, dim, C, out, stride); return;
  switch (chunks) {
    HALF_QUADS_CASE(1)
    HALF_QUADS_CASE(2)
    HALF_QUADS_CASE(3)
    HALF_QUADS_CASE(4)
    HALF_QUADS_CASE(5)
    HALF_QUADS_CASE(6)
    HALF_QUADS_CASE(7)
    HALF_QUADS_CASE(8)
    default: break;
  }
#undef HALF_QUADS_CASE
  half_batch_quads(packed, count, offsets, items, terms, n, dim, chunks, out, stride);
}

// The batch kernels at 512 bits, in the same order: a 512-bit accumulator holds two 8-lane
// accumulators of the canonical sum, (item, query t) in its low half and (item, query t + 4) in its
// high half, so the lanes still sum d = l, l + 8, ... for one pair each. Tiles of 2 items x 8
// queries: per chunk of 8 dims, each item's chunk is broadcast to both halves and multiplied with
// four packed query pairs. The reduction is the canonical tree on all sixteen accumulators at
// once, and leaves item 0's eight queries in the low 256 bits and item 1's in the high ones.

// One tile's accumulators to scores: the canonical tree, then (dot + offset) + term as everywhere,
// columns past `count` zero; stored to items i and i + 1 (when i + 1 < n), queries 8g..8g+7.
__attribute__((target("avx2,fma,avx512f,avx512dq"))) static inline void finish_tile(
    const __m512 *acc, const float *offsets, int count, int g, const float *terms, int i, int n,
    float *out, int stride) {
  // b[l] = a[l] + a[l + 4] ...
  __m512 b[4];
  for (int s = 0; s < 4; s++)
    b[s] = _mm512_add_ps(_mm512_shuffle_f32x4(acc[s], acc[s + 4], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(acc[s], acc[s + 4], _MM_SHUFFLE(3, 1, 3, 1)));
  // ... e = b[0] + b[2], o = b[1] + b[3] ...
  const __m512 c01 = _mm512_add_ps(_mm512_unpacklo_ps(b[0], b[1]), _mm512_unpackhi_ps(b[0], b[1]));
  const __m512 c23 = _mm512_add_ps(_mm512_unpacklo_ps(b[2], b[3]), _mm512_unpackhi_ps(b[2], b[3]));
  // ... e + o. 128-bit lane L of r holds, for s = 0..3, the sum of b[s]'s lane L: lane 0 acc[s]
  // low (item 0, query s), 1 acc[s] high (item 0, query s + 4), 2 and 3 the same for item 1.
  __m512 r = _mm512_add_ps(_mm512_shuffle_ps(c01, c23, _MM_SHUFFLE(1, 0, 1, 0)),
                           _mm512_shuffle_ps(c01, c23, _MM_SHUFFLE(3, 2, 3, 2)));
  float o8[8];
  for (int t = 0; t < 8; t++) o8[t] = 8 * g + t < count ? offsets[8 * g + t] : 0;
  const __m256 ov = _mm256_loadu_ps(o8);
  r = _mm512_add_ps(r, _mm512_insertf32x8(_mm512_castps256_ps512(ov), ov, 1));
  const float t0 = terms ? terms[i] : 0, t1 = terms && i + 1 < n ? terms[i + 1] : 0;
  r = _mm512_add_ps(r, _mm512_insertf32x8(_mm512_set1_ps(t0), _mm256_set1_ps(t1), 1));
  const int valid = count - 8 * g < 8 ? count - 8 * g : 8;
  const __mmask16 keep = (__mmask16)(((1u << valid) - 1) * 0x101u);
  r = _mm512_maskz_mov_ps(keep, r);
  _mm256_storeu_ps(out + (size_t)i * stride + 8 * g, _mm512_castps512_ps256(r));
  if (i + 1 < n)
    _mm256_storeu_ps(out + (size_t)(i + 1) * stride + 8 * g, _mm512_extractf32x8_ps(r, 1));
}

// The padding columns past the last group of items i and i + 1.
static inline void zero_padding(int count, int i, int n, float *out, int stride) {
  for (int j = (count + 7) / 8 * 8; j < stride; j++) {
    out[(size_t)i * stride + j] = 0;
    if (i + 1 < n) out[(size_t)(i + 1) * stride + j] = 0;
  }
}

// One group of 8 packed queries (qp) against two item rows, whose chunk c the LOAD expression
// gives as a __m256 (x0 / x1 and c in scope): into acc[8].
#define TILE_ACCUMULATE(LOAD0, LOAD1)                                                             \
  for (int s = 0; s < 8; s++) acc[s] = _mm512_setzero_ps();                                       \
  for (int c = 0; c < chunks; c++, qp += 64) {                                                    \
    const __m512 v0 = _mm512_broadcast_f32x8(LOAD0);                                              \
    const __m512 v1 = _mm512_broadcast_f32x8(LOAD1);                                              \
    for (int t = 0; t < 4; t++) {                                                                 \
      const __m512 q = _mm512_load_ps(qp + 16 * t);                                               \
      acc[t] = _mm512_fmadd_ps(v0, q, acc[t]);                                                    \
      acc[4 + t] = _mm512_fmadd_ps(v1, q, acc[4 + t]);                                            \
    }                                                                                             \
  }

__attribute__((target("avx2,fma,avx512f,avx512dq"))) static void batch_avx512(
    const float *queries, int count, const float *offsets, const float *items,
    const float *terms, int n, int dim, float *out, int stride) {
  const int chunks = (dim + 7) / 8;
  const int groups = (count + 7) / 8;
  float packed[PACKED_FLOATS] __attribute__((aligned(64)));
  pack_queries(queries, count, dim, 2, packed);
  const int full = dim & ~7;
  const int left = dim - full;
  const __m256i mask = left ? tail_mask(left) : _mm256_setzero_si256();
  for (int i = 0; i < n; i += 2) {
    const float *x0 = items + (size_t)i * dim;
    const float *x1 = i + 1 < n ? x0 + dim : x0;
    for (int g = 0; g < groups; g++) {
      __m512 acc[8];
      const float *qp = packed + (size_t)g * chunks * 64;
      TILE_ACCUMULATE(8 * c < full ? _mm256_loadu_ps(x0 + 8 * c)
                                   : _mm256_maskload_ps(x0 + 8 * c, mask),
                      8 * c < full ? _mm256_loadu_ps(x1 + 8 * c)
                                   : _mm256_maskload_ps(x1 + 8 * c, mask))
      finish_tile(acc, offsets, count, g, terms, i, n, out, stride);
    }
    zero_padding(count, i, n, out, stride);
  }
}

// Many queries against half-precision rows (dim a multiple of 8, at most 512; count at most
// 32): the tiles of batch_avx512, each item chunk converted from half once per group of queries.
// An approximation like every half score, (dot + offset) + term as elsewhere.
__attribute__((target("avx2,fma,f16c,avx512f,avx512dq"))) static void half_batch_avx512(
    const float *queries, int count, const float *offsets, const unsigned short *items,
    const float *terms, int n, int dim, float *out, int stride) {
  const int chunks = dim / 8;
  const int groups = (count + 7) / 8;
  float packed[PACKED_FLOATS] __attribute__((aligned(64)));
  pack_queries(queries, count, dim, 2, packed);
  for (int i = 0; i < n; i += 2) {
    const unsigned short *x0 = items + (size_t)i * dim;
    const unsigned short *x1 = i + 1 < n ? x0 + dim : x0;
    for (int g = 0; g < groups; g++) {
      __m512 acc[8];
      const float *qp = packed + (size_t)g * chunks * 64;
      TILE_ACCUMULATE(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x0 + 8 * c))),
                      _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x1 + 8 * c))))
      finish_tile(acc, offsets, count, g, terms, i, n, out, stride);
    }
    zero_padding(count, i, n, out, stride);
  }
}

// Half-precision rows (dim a multiple of 8), converted on the fly (F16C), read front to back
// like single_C, half the bytes. (An approximation: the order of the sum is free here.)
#define HALF_CHUNKS(C)                                                                            \
  __attribute__((target("avx2,fma,f16c"))) static void half_##C(                                  \
      const float *q, const unsigned short *items, int count, int dim, float *out) {              \
    __m256 qv[C];                                                                                 \
    for (int k = 0; k < C; k++) qv[k] = _mm256_loadu_ps(q + 8 * k);                              \
    int i = 0;                                                                                    \
    for (; i + 8 <= count; i += 8) {                                                              \
      __m256 acc[8];                                                                              \
      for (int s = 0; s < 8; s++) {                                                               \
        const unsigned short *row = items + (size_t)(i + s) * dim;                                \
        __m256 a = _mm256_setzero_ps();                                                           \
        for (int k = 0; k < C; k++)                                                               \
          a = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + 8 * k))),   \
                              qv[k], a);                                                          \
        acc[s] = a;                                                                               \
      }                                                                                           \
      _mm256_storeu_ps(out + i, reduce8(acc));                                                    \
    }                                                                                             \
    for (; i < count; i++) {                                                                      \
      const unsigned short *row = items + (size_t)i * dim;                                        \
      __m256 a = _mm256_setzero_ps();                                                             \
      for (int k = 0; k < C; k++)                                                                 \
        a = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + 8 * k))),     \
                            qv[k], a);                                                            \
      __m256 acc[8] = {a, a, a, a, a, a, a, a};                                                   \
      float lanes[8];                                                                             \
      _mm256_storeu_ps(lanes, reduce8(acc));                                                      \
      out[i] = lanes[0];                                                                          \
    }                                                                                             \
  }

HALF_CHUNKS(1)
HALF_CHUNKS(2)
HALF_CHUNKS(3)
HALF_CHUNKS(4)
HALF_CHUNKS(5)
HALF_CHUNKS(6)
HALF_CHUNKS(7)
HALF_CHUNKS(8)

__attribute__((target("avx2,fma,f16c"))) static void half_avx2(const float *q,
                                                               const unsigned short *items,
                                                               int count, int dim, float *out) {
  switch (dim / 8) {
    case 1: half_1(q, items, count, dim, out); return;
    case 2: half_2(q, items, count, dim, out); return;
    case 3: half_3(q, items, count, dim, out); return;
    case 4: half_4(q, items, count, dim, out); return;
    case 5: half_5(q, items, count, dim, out); return;
    case 6: half_6(q, items, count, dim, out); return;
    case 7: half_7(q, items, count, dim, out); return;
    case 8: half_8(q, items, count, dim, out); return;
    default: break;
  }
  for (int i = 0; i < count; i++) {
    __m256 acc = _mm256_setzero_ps();
    const unsigned short *row = items + (size_t)i * dim;
    for (int d = 0; d < dim; d += 8)
      acc = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + d))),
                            _mm256_loadu_ps(q + d), acc);
    float lanes[8];
    _mm256_storeu_ps(lanes, acc);
    out[i] = ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) +
             ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]));
  }
}
#endif

void ck_scores_single(const float *query, const float *items, int count, int dim, float *out) {
#if defined(__x86_64__)
  if (has_avx2_fma()) {
    single_avx2(query, items, count, dim, out);
    return;
  }
#endif
  for (int i = 0; i < count; i++) out[i] = dot_ref(items + (size_t)i * dim, query, dim);
}

void ck_scores_indexed(const float *query, const float *items, int dim, const int *indices,
                       int count, float *out) {
#if defined(__x86_64__)
  if (has_avx2_fma()) {
    indexed_avx2(query, items, dim, indices, count, out);
    return;
  }
#endif
  for (int i = 0; i < count; i++) out[i] = dot_ref(items + (size_t)indices[i] * dim, query, dim);
}

void ck_scores_batch(const float *queries, int count, const float *offsets, const float *items,
                     const float *terms, int n, int dim, float *out, int stride) {
#if defined(__x86_64__)
  if (dim <= 512 && count <= 32 && has_avx512()) {
    batch_avx512(queries, count, offsets, items, terms, n, dim, out, stride);
    return;
  }
  if (dim <= 512 && count <= 32 && has_avx2_fma()) {
    batch_avx2(queries, count, offsets, items, terms, n, dim, out, stride);
    return;
  }
#endif
  for (int i = 0; i < n; i++) {
    float *o = out + (size_t)i * stride;
    const float *x = items + (size_t)i * dim;
    const float term = terms ? terms[i] : 0;
    for (int j = 0; j < stride; j++)
      o[j] = j < count ? (dot_ref(x, queries + (size_t)j * dim, dim) + offsets[j]) + term : 0;
  }
}

int ck_level(void) {
#if defined(__x86_64__)
  return level();
#else
  return 0;
#endif
}

int ck_set_level(int wanted) {
#if defined(__x86_64__)
  const int most = detected_level();
  level_cache = wanted < most ? (wanted < 0 ? 0 : wanted) : most;
  return level_cache;
#else
  (void)wanted;
  return 0;
#endif
}

// IEEE half to float, for the portable path.
static float half_to_float(unsigned short h) {
  unsigned sign = (unsigned)(h >> 15) << 31, exponent = (h >> 10) & 31, mantissa = h & 1023;
  union {
    unsigned u;
    float f;
  } v;
  if (exponent == 0) {
    v.f = ldexpf((float)mantissa, -24);
    v.u |= sign;
    return v.f;
  }
  if (exponent == 31) {
    v.u = sign | 0x7f800000u | (mantissa << 13);
    return v.f;
  }
  v.u = sign | ((exponent + 112) << 23) | (mantissa << 13);
  return v.f;
}

void ck_scores_half(const float *query, const unsigned short *items, int count, int dim,
                    float *out) {
#if defined(__x86_64__)
  if ((dim & 7) == 0 && has_f16c()) {
    half_avx2(query, items, count, dim, out);
    return;
  }
#endif
  for (int i = 0; i < count; i++) {
    float acc = 0;
    const unsigned short *row = items + (size_t)i * dim;
    for (int d = 0; d < dim; d++) acc = fmaf(half_to_float(row[d]), query[d], acc);
    out[i] = acc;
  }
}

int ck_scores_half_batch(const float *queries, int count, const float *offsets,
                         const unsigned short *items, const float *terms, int n, int dim,
                         float *out, int stride) {
#if defined(__x86_64__)
  if ((dim & 7) == 0 && dim <= 512 && count <= 32 && has_avx512()) {
    half_batch_avx512(queries, count, offsets, items, terms, n, dim, out, stride);
    return 1;
  }
  if ((dim & 7) == 0 && dim <= 512 && count <= 32 && has_f16c()) {
    half_batch_avx2(queries, count, offsets, items, terms, n, dim, out, stride);
    return 1;
  }
#endif
  (void)queries, (void)count, (void)offsets, (void)items, (void)terms, (void)n, (void)dim,
      (void)out, (void)stride;
  return 0;
}
