#ifndef CKERNELS_H
#define CKERNELS_H
#include <stddef.h>

// Hand-vectorised kernels that Swift cannot target per CPU: the function picks AVX2 + FMA at run
// time when the CPU has them, else a portable loop. No allocation, no threads, no policy.

// Scores of up to 32 queries against `count` item rows, item-major:
//   out[i * stride + j] = sum_d items[i * dim + d] * queries_t[d * stride + j]
// for i < count and j < stride, where queries_t holds the queries transposed ([dim][stride],
// stride a multiple of 8 no larger than 32, unused columns zero) and items is row-major.
void ck_scores_batch(const float *queries_t, int stride, const float *items, int count, int dim,
                     float *out);

// One query against `count` item rows: out[i] = sum_d items[i * dim + d] * query[d]. Every sum
// here and in ck_scores_batch is taken in order of d with fused multiply-adds, so one query
// scored alone and the same query scored in a batch give the same floats.
void ck_scores_single(const float *query, const float *items, int count, int dim, float *out);

// The same sums as ck_scores_single for the rows named by `indices`:
//   out[j] = sum_d items[indices[j] * dim + d] * query[d]
// (bit-identical to scoring those rows with ck_scores_single).
void ck_scores_indexed(const float *query, const float *items, int dim, const int *indices,
                       int count, float *out);

// One query against `count` half-precision (IEEE binary16) rows, summed in f32:
//   out[i] = sum_d float(items[i * dim + d]) * query[d]  (the order of the sum may vary).
void ck_scores_half(const float *query, const unsigned short *items, int count, int dim,
                    float *out);

// 1 when the vectorised path is in use (for tests and logs).
int ck_vectorised(void);

#endif
