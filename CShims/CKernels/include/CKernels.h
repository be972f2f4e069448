#ifndef CKERNELS_H
#define CKERNELS_H
#include <stddef.h>

// Hand-vectorised kernels that Swift cannot target per CPU: each function picks AVX2 + FMA at run
// time when the CPU has them, else a portable loop. No allocation, no threads, no policy.
//
// Every exact score (single, indexed, batch) is the same sum in the same order: lane l of 8
// accumulates x[d] * q[d] for d = l, l + 8, ... with fused multiply-adds, and the lanes are added
// as ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)); the portable loops do exactly that. So a
// query scored alone, in a batch, or over a shortlist gets bit-identical floats.

// Scores of `count` queries (row-major [count][dim]) against `n` item rows, item-major, with each
// query's offset and each item's term (NULL: none) added in that order:
//   out[i * stride + j] = (score(items row i, query j) + offsets[j]) + terms[i]   for j < count,
//   out[i * stride + j] = 0                                                       otherwise.
void ck_scores_batch(const float *queries, int count, const float *offsets, const float *items,
                     const float *terms, int n, int dim, float *out, int stride);

// One query against `count` item rows: out[i] = score(items row i, query).
void ck_scores_single(const float *query, const float *items, int count, int dim, float *out);

// One query against the rows named by `indices`: out[j] = score(items row indices[j], query).
void ck_scores_indexed(const float *query, const float *items, int dim, const int *indices,
                       int count, float *out);

// One query against `count` half-precision (IEEE binary16) rows, summed in f32 (an
// approximation; the order of the sum may differ from the exact kernels):
//   out[i] ~ sum_d float(items[i * dim + d]) * query[d]
void ck_scores_half(const float *query, const unsigned short *items, int count, int dim,
                    float *out);

// Approximate scores of `count` queries against half-precision rows, laid out as ck_scores_batch
// lays out exact ones (padding columns 0), each summed in the documented order over the rows as
// rounded to half. With AVX2 + F16C or AVX-512, dim a multiple of 8 up to 512 and count up to 32;
// returns 0 (and writes nothing) otherwise.
int ck_scores_half_batch(const float *queries, int count, const float *offsets,
                         const unsigned short *items, const float *terms, int n, int dim,
                         float *out, int stride);

// The kernels in use: 0 portable C, 1 AVX2 + FMA + F16C, 2 AVX-512 for batches. Chosen from
// the CPU once; the environment variable RECSERVE_KERNELS=portable or =avx2 caps it.
int ck_level(void);

// Caps the level (for tests: every level gives the same floats); returns the level now in use.
// Not for use while other threads score.
int ck_set_level(int level);

#endif
