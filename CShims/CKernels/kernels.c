#include "CKernels.h"
#include <math.h>

#if defined(__x86_64__)
#include <immintrin.h>

// One item row against 8 * G query columns, for R rows at a time: R * G independent FMA chains
// (latency 4, two ports) keep the units busy; each d broadcasts one item value and multiplies it
// into G vectors of 8 query values.
#define KERNEL(R, G)                                                                             \
  __attribute__((target("avx2,fma"))) static void kernel_##R##_##G(                              \
      const float *qt, int stride, const float *items, int count, int dim, float *out) {         \
    int i = 0;                                                                                   \
    for (; i + R <= count; i += R) {                                                             \
      __m256 acc[R][G];                                                                          \
      for (int r = 0; r < R; r++)                                                                \
        for (int g = 0; g < G; g++) acc[r][g] = _mm256_setzero_ps();                             \
      for (int d = 0; d < dim; d++) {                                                            \
        const float *q = qt + (size_t)d * stride;                                                \
        __m256 qv[G];                                                                            \
        for (int g = 0; g < G; g++) qv[g] = _mm256_loadu_ps(q + 8 * g);                          \
        for (int r = 0; r < R; r++) {                                                            \
          __m256 x = _mm256_broadcast_ss(items + (size_t)(i + r) * dim + d);                     \
          for (int g = 0; g < G; g++) acc[r][g] = _mm256_fmadd_ps(x, qv[g], acc[r][g]);          \
        }                                                                                        \
      }                                                                                          \
      for (int r = 0; r < R; r++)                                                                \
        for (int g = 0; g < G; g++) _mm256_storeu_ps(out + (size_t)(i + r) * stride + 8 * g, acc[r][g]); \
    }                                                                                            \
    for (; i < count; i++) {                                                                     \
      __m256 acc[G];                                                                             \
      for (int g = 0; g < G; g++) acc[g] = _mm256_setzero_ps();                                  \
      for (int d = 0; d < dim; d++) {                                                            \
        __m256 x = _mm256_broadcast_ss(items + (size_t)i * dim + d);                             \
        for (int g = 0; g < G; g++)                                                              \
          acc[g] = _mm256_fmadd_ps(x, _mm256_loadu_ps(qt + (size_t)d * stride + 8 * g), acc[g]); \
      }                                                                                          \
      for (int g = 0; g < G; g++) _mm256_storeu_ps(out + (size_t)i * stride + 8 * g, acc[g]);    \
    }                                                                                            \
  }

KERNEL(8, 1)
KERNEL(4, 2)
KERNEL(3, 3)
KERNEL(2, 4)

// 8 rows of 8 floats become 8 columns: afterwards r[k] holds element k of rows 0..7.
__attribute__((target("avx2,fma"))) static inline void transpose8(__m256 *r) {
  __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// Items in the lanes: 16 items at a time (two independent chains), their rows transposed 8
// columns at a time, each lane summing its item in order of d.
__attribute__((target("avx2,fma"))) static void single_avx2(const float *q, const float *items,
                                                            int count, int dim, float *out) {
  int i = 0;
  const int full = dim & ~7;
  for (; i + 16 <= count; i += 16) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    const float *a = items + (size_t)i * dim, *b = items + (size_t)(i + 8) * dim;
    int d = 0;
    for (; d < full; d += 8) {
      __m256 ra[8], rb[8];
      for (int r = 0; r < 8; r++) {
        ra[r] = _mm256_loadu_ps(a + (size_t)r * dim + d);
        rb[r] = _mm256_loadu_ps(b + (size_t)r * dim + d);
      }
      transpose8(ra);
      transpose8(rb);
      for (int k = 0; k < 8; k++) {
        __m256 x = _mm256_broadcast_ss(q + d + k);
        acc0 = _mm256_fmadd_ps(ra[k], x, acc0);
        acc1 = _mm256_fmadd_ps(rb[k], x, acc1);
      }
    }
    for (; d < dim; d++) {
      __m256 x = _mm256_broadcast_ss(q + d);
      __m256 va = _mm256_set_ps(a[7 * (size_t)dim + d], a[6 * (size_t)dim + d], a[5 * (size_t)dim + d],
                                a[4 * (size_t)dim + d], a[3 * (size_t)dim + d], a[2 * (size_t)dim + d],
                                a[(size_t)dim + d], a[d]);
      __m256 vb = _mm256_set_ps(b[7 * (size_t)dim + d], b[6 * (size_t)dim + d], b[5 * (size_t)dim + d],
                                b[4 * (size_t)dim + d], b[3 * (size_t)dim + d], b[2 * (size_t)dim + d],
                                b[(size_t)dim + d], b[d]);
      acc0 = _mm256_fmadd_ps(va, x, acc0);
      acc1 = _mm256_fmadd_ps(vb, x, acc1);
    }
    _mm256_storeu_ps(out + i, acc0);
    _mm256_storeu_ps(out + i + 8, acc1);
  }
  for (; i < count; i++) {
    float acc = 0;
    const float *row = items + (size_t)i * dim;
    for (int d = 0; d < dim; d++) acc = fmaf(row[d], q[d], acc);
    out[i] = acc;
  }
}

// The same sums as single_avx2 for rows picked by index (a shortlist re-scored exactly).
__attribute__((target("avx2,fma"))) static void indexed_avx2(const float *q, const float *items,
                                                             int dim, const int *indices,
                                                             int count, float *out) {
  int i = 0;
  const int full = dim & ~7;
  for (; i + 8 <= count && full == dim; i += 8) {
    const float *rows[8];
    for (int r = 0; r < 8; r++) rows[r] = items + (size_t)indices[i + r] * dim;
    __m256 acc = _mm256_setzero_ps();
    for (int d = 0; d < full; d += 8) {
      __m256 ra[8];
      for (int r = 0; r < 8; r++) ra[r] = _mm256_loadu_ps(rows[r] + d);
      transpose8(ra);
      for (int k = 0; k < 8; k++) acc = _mm256_fmadd_ps(ra[k], _mm256_broadcast_ss(q + d + k), acc);
    }
    _mm256_storeu_ps(out + i, acc);
  }
  for (; i < count; i++) {
    float acc = 0;
    const float *row = items + (size_t)indices[i] * dim;
    for (int d = 0; d < dim; d++) acc = fmaf(row[d], q[d], acc);
    out[i] = acc;
  }
}

// Half-precision rows (dim a multiple of 8), converted to floats on the fly (F16C): 16 items at
// a time in the lanes, like single_avx2, reading half the bytes.
__attribute__((target("avx2,fma,f16c"))) static void half_avx2(const float *q,
                                                               const unsigned short *items,
                                                               int count, int dim, float *out) {
  int i = 0;
  for (; i + 16 <= count; i += 16) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    const unsigned short *a = items + (size_t)i * dim, *b = items + (size_t)(i + 8) * dim;
    for (int d = 0; d < dim; d += 8) {
      __m256 ra[8], rb[8];
      for (int r = 0; r < 8; r++) {
        ra[r] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + (size_t)r * dim + d)));
        rb[r] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b + (size_t)r * dim + d)));
      }
      transpose8(ra);
      transpose8(rb);
      for (int k = 0; k < 8; k++) {
        __m256 x = _mm256_broadcast_ss(q + d + k);
        acc0 = _mm256_fmadd_ps(ra[k], x, acc0);
        acc1 = _mm256_fmadd_ps(rb[k], x, acc1);
      }
    }
    _mm256_storeu_ps(out + i, acc0);
    _mm256_storeu_ps(out + i + 8, acc1);
  }
  for (; i < count; i++) {
    __m256 acc = _mm256_setzero_ps();
    const unsigned short *row = items + (size_t)i * dim;
    for (int d = 0; d < dim; d += 8)
      acc = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + d))),
                            _mm256_loadu_ps(q + d), acc);
    float lanes[8];
    _mm256_storeu_ps(lanes, acc);
    out[i] = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
  }
}

static int has_f16c(void) {
  static int cached = -1;
  if (cached < 0) {
    __builtin_cpu_init();
    cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("f16c");
  }
  return cached;
}

static int has_avx2_fma(void) {
  static int cached = -1;
  if (cached < 0) {
    __builtin_cpu_init();
    cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }
  return cached;
}
#endif

// The same sums with fmaf, where the CPU lacks AVX2 and FMA (slower; the same floats).
static void portable(const float *qt, int stride, const float *items, int count, int dim,
                     float *out) {
  for (int i = 0; i < count; i++) {
    float *o = out + (size_t)i * stride;
    for (int j = 0; j < stride; j++) o[j] = 0;
    const float *row = items + (size_t)i * dim;
    for (int d = 0; d < dim; d++) {
      const float x = row[d];
      const float *q = qt + (size_t)d * stride;
      for (int j = 0; j < stride; j++) o[j] = fmaf(x, q[j], o[j]);
    }
  }
}

void ck_scores_single(const float *query, const float *items, int count, int dim, float *out) {
#if defined(__x86_64__)
  if (has_avx2_fma()) {
    single_avx2(query, items, count, dim, out);
    return;
  }
#endif
  for (int i = 0; i < count; i++) {
    float acc = 0;
    const float *row = items + (size_t)i * dim;
    for (int d = 0; d < dim; d++) acc = fmaf(row[d], query[d], acc);
    out[i] = acc;
  }
}

int ck_vectorised(void) {
#if defined(__x86_64__)
  return has_avx2_fma();
#else
  return 0;
#endif
}

void ck_scores_batch(const float *queries_t, int stride, const float *items, int count, int dim,
                     float *out) {
#if defined(__x86_64__)
  if (has_avx2_fma()) {
    switch (stride) {
      case 8: kernel_8_1(queries_t, stride, items, count, dim, out); return;
      case 16: kernel_4_2(queries_t, stride, items, count, dim, out); return;
      case 24: kernel_3_3(queries_t, stride, items, count, dim, out); return;
      case 32: kernel_2_4(queries_t, stride, items, count, dim, out); return;
      default: break;
    }
  }
#endif
  portable(queries_t, stride, items, count, dim, out);
}

void ck_scores_indexed(const float *query, const float *items, int dim, const int *indices,
                       int count, float *out) {
#if defined(__x86_64__)
  if (has_avx2_fma()) {
    indexed_avx2(query, items, dim, indices, count, out);
    return;
  }
#endif
  for (int i = 0; i < count; i++) {
    float acc = 0;
    const float *row = items + (size_t)indices[i] * dim;
    for (int d = 0; d < dim; d++) acc = fmaf(row[d], query[d], acc);
    out[i] = acc;
  }
}

// IEEE half to float, for the portable path.
static float half_to_float(unsigned short h) {
  unsigned sign = (unsigned)(h >> 15) << 31, exponent = (h >> 10) & 31, mantissa = h & 1023;
  union { unsigned u; float f; } v;
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
