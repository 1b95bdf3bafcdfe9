// Training-mode BatchNorm (batch statistics), optionally fused with the ReLU after it, for
// src/model/resnet.py's CPU path, as MindSpore "aot" Custom operators (built by
// src/native/kernels.py with g++).
//
// MindSpore's CPU BatchNorm (oneDNN's plain-layout ncsp_bnorm) and a separate ReLU / ReluGrad
// make five passes over each activation forward and backward; here the forward reads x twice
// and writes y, the backward reads dy and x twice and writes dx, and the ReLU mask is
// recomputed from x (the same float operations as the forward, so the same mask).
//
//   BnFwd<r>  x (N, C, H, W), gamma (C), beta (C), eps (1)
//             -> y (N, C, H, W), mean (C), var (C)             biased variance, as oneDNN's
//   BnBwd<r>  dy, x, gamma, beta, mean, var, eps -> dx, dgamma, dbeta
//
// r = 1: y = relu(BN(x)). Sums are accumulated per row in float (16 partial sums, see RowSums)
// and per channel in double.
// Work is split over channels on as many threads as this process may run on.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "parallel.h"

namespace {

struct Affine {  // y = x * a + b, from the float mean / var the forward returns
  float a, b, invstd;
  Affine(float gamma, float beta, float mean, float var, float eps) {
    invstd = 1.0f / std::sqrt(var + eps);
    a = gamma * invstd;
    b = beta - mean * a;
  }
};

// Sums of f(e) over a row, in kLanes independent partial sums: GCC does not reorder a float
// reduction (without -ffast-math), so a single accumulator ran one add at a time, 4 cycles
// apart; independent lanes vectorise. fn(e, acc, q) adds element e's terms
// to acc[0..S)[q].
constexpr int kLanes = 16;

template <int S, typename Fn>
inline void RowSums(int64_t n, float *out, Fn fn) {
  if (n < kLanes) {  // rows of a few elements (2x2, 4x4 maps): one accumulator is faster
    float acc[S][1] = {};
    for (int64_t e = 0; e < n; ++e) fn(e, acc, 0);
    for (int k = 0; k < S; ++k) out[k] = acc[k][0];
    return;
  }
  float acc[S][kLanes] = {};
  int64_t e = 0;
  for (; e + kLanes <= n; e += kLanes)
    for (int q = 0; q < kLanes; ++q) fn(e + q, acc, q);
  float tail[S][kLanes] = {};
  for (int q = 0; e + q < n; ++q) fn(e + q, tail, q);
  for (int k = 0; k < S; ++k) {
    float total = 0.0f;
    for (int q = 0; q < kLanes; ++q) total += acc[k][q] + tail[k][q];
    out[k] = total;
  }
}

template <bool RELU>
int BnFwd(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  if (nparam != 7 || ndims[0] != 4 || !packrun::IsFloat(dtypes[0])) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *gamma = static_cast<const float *>(params[1]);
  const float *beta = static_cast<const float *>(params[2]);
  const float eps = *static_cast<const float *>(params[3]);
  float *y = static_cast<float *>(params[4]);
  float *mean_out = static_cast<float *>(params[5]);
  float *var_out = static_cast<float *>(params[6]);
  const int64_t n_ = shapes[0][0], c_ = shapes[0][1], hw = shapes[0][2] * shapes[0][3];
  const double count = static_cast<double>(n_ * hw);
  packrun::ParallelFor(c_, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      double sum = 0.0, sumsq = 0.0;
      for (int64_t n = 0; n < n_; ++n) {
        const float *row = x + (n * c_ + c) * hw;
        float sums[2];
        RowSums<2>(hw, sums, [&](int64_t e, auto acc, int q) {
          acc[0][q] += row[e];
          acc[1][q] += row[e] * row[e];
        });
        sum += sums[0];
        sumsq += sums[1];
      }
      const double mean = sum / count;
      const double var = std::max(0.0, sumsq / count - mean * mean);
      mean_out[c] = static_cast<float>(mean);
      var_out[c] = static_cast<float>(var);
      const Affine f(gamma[c], beta[c], mean_out[c], var_out[c], eps);
      for (int64_t n = 0; n < n_; ++n) {
        const float *row = x + (n * c_ + c) * hw;
        float *out = y + (n * c_ + c) * hw;
        for (int64_t e = 0; e < hw; ++e) {
          const float v = row[e] * f.a + f.b;
          out[e] = RELU ? (v > 0.0f ? v : 0.0f) : v;
        }
      }
    }
  });
  return 0;
}

template <bool RELU>
int BnBwd(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  if (nparam != 10 || ndims[0] != 4 || !packrun::IsFloat(dtypes[0])) return 1;
  const float *dy = static_cast<const float *>(params[0]);
  const float *x = static_cast<const float *>(params[1]);
  const float *gamma = static_cast<const float *>(params[2]);
  const float *beta = static_cast<const float *>(params[3]);
  const float *mean = static_cast<const float *>(params[4]);
  const float *var = static_cast<const float *>(params[5]);
  const float eps = *static_cast<const float *>(params[6]);
  float *dx = static_cast<float *>(params[7]);
  float *dgamma = static_cast<float *>(params[8]);
  float *dbeta = static_cast<float *>(params[9]);
  const int64_t n_ = shapes[0][0], c_ = shapes[0][1], hw = shapes[0][2] * shapes[0][3];
  const double count = static_cast<double>(n_ * hw);
  packrun::ParallelFor(c_, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const Affine f(gamma[c], beta[c], mean[c], var[c], eps);
      double sum_g = 0.0, sum_gx = 0.0;  // sums of the gradient past the ReLU, and of it * x
      for (int64_t n = 0; n < n_; ++n) {
        const float *xr = x + (n * c_ + c) * hw;
        const float *dr = dy + (n * c_ + c) * hw;
        float sums[2];
        RowSums<2>(hw, sums, [&](int64_t e, auto acc, int q) {
          const float g = (!RELU || xr[e] * f.a + f.b > 0.0f) ? dr[e] : 0.0f;
          acc[0][q] += g;
          acc[1][q] += g * xr[e];
        });
        sum_g += sums[0];
        sum_gx += sums[1];
      }
      const double d_beta = sum_g;
      const double d_gamma = (sum_gx - mean[c] * sum_g) * f.invstd;
      dbeta[c] = static_cast<float>(d_beta);
      dgamma[c] = static_cast<float>(d_gamma);
      // dx = a * (g - dbeta / M - xhat * dgamma / M), xhat = (x - mean) * invstd
      const double k2 = -static_cast<double>(f.a) * f.invstd * d_gamma / count;
      const float kg = f.a;
      const float kx = static_cast<float>(k2);
      const float k0 = static_cast<float>(-f.a * d_beta / count - k2 * mean[c]);
      for (int64_t n = 0; n < n_; ++n) {
        const float *xr = x + (n * c_ + c) * hw;
        const float *dr = dy + (n * c_ + c) * hw;
        float *out = dx + (n * c_ + c) * hw;
        for (int64_t e = 0; e < hw; ++e) {
          const float g = (!RELU || xr[e] * f.a + f.b > 0.0f) ? dr[e] : 0.0f;
          out[e] = kg * g + kx * xr[e] + k0;
        }
      }
    }
  });
  return 0;
}

}  // namespace

PACKRUN_EXPORT(BnFwd0, BnFwd<false>)
PACKRUN_EXPORT(BnFwd1, BnFwd<true>)
PACKRUN_EXPORT(BnBwd0, BnBwd<false>)
PACKRUN_EXPORT(BnBwd1, BnBwd<true>)
