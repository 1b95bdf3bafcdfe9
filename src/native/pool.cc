// The ResNet18/34 stem's 3x3 stride-2 max-pool with padding 1, for src/model/resnet.py's CPU
// path, as MindSpore "aot" Custom operators (built by src/native/kernels.py with g++).
//
// The pure-MindSpore formulation concatenates rows and columns of zeros and pools 'valid'
// (pad_mode 'pad' runs MaxPool3DWithArgmax on CPU, slower still); backward, MaxPoolGrad and the
// concats' slices. Those five kernels took ~13.5 ms of a 300 ms one-thread ResNet18 step at
// 64 px, batch 32 (profiler). Here the padding is skipped, not stored: a window takes the
// maximum of the input positions it covers, as a max-pool padded with -inf does; its input is
// a ReLU's output (>= 0), where that equals padding with zeros.
//
//   PoolFwd  x (N, C, H, W) -> y (N, C, OH, OW)     OH = (H - 1) / 2 + 1, as MindSpore pads by 1
//   PoolBwd  dy (N, C, OH, OW), x -> dx (N, C, H, W)
//
// The backward routes each output's gradient to the first (row-major) position of its window
// holding the maximum, recomputed from x. Where several positions tie, the choice can differ
// from MindSpore's; for a ReLU's output a tie is, but for measure-zero cases, a window of
// zeros, and the ReLU's gradient there is zero either way. Work is split over the (n, c)
// planes (parallel.h); every kernel returns 0, or 1 on a shape it does not expect.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "parallel.h"

namespace {

// One output row's windows, all columns at once. Each input row r of the window is split into
// its even columns ev[j] = x[r][2j] and its odd ones od[j + 1] = x[r][2j + 1] (od[0] and
// columns past the map: -inf), so column offsets -1, 0, +1 of output column j are od[j],
// ev[j], od[j + 1]: contiguous loads, and the loop over j is branch-free and vectorises.
// Candidates come in row-major order, so a strict > keeps the first maximum.
template <bool ARGMAX>
inline void RowWindows(const float *xp, int64_t h, int64_t w, int64_t i, int64_t ow, float *ev,
                       float *od, float *best, int32_t *at) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < ow; ++j) best[j] = kNegInf;
  if (ARGMAX)
    for (int64_t j = 0; j < ow; ++j) at[j] = 0;
  const int64_t r0 = std::max<int64_t>(0, 2 * i - 1), r1 = std::min(h, 2 * i + 2);
  for (int64_t r = r0; r < r1; ++r) {
    const float *row = xp + r * w;
    od[0] = kNegInf;
    for (int64_t k = 0; k < ow; ++k) ev[k] = row[2 * k];  // 2 (ow - 1) <= w - 1
    for (int64_t k = 0; k < w / 2; ++k) od[k + 1] = row[2 * k + 1];
    for (int64_t k = w / 2; k < ow; ++k) od[k + 1] = kNegInf;
    const int32_t base = static_cast<int32_t>(r * w);
    for (int64_t j = 0; j < ow; ++j) {
      float b = best[j];
      int32_t a = ARGMAX ? at[j] : 0;
      const int32_t c = base + 2 * static_cast<int32_t>(j);
      bool take = od[j] > b;
      b = take ? od[j] : b;
      a = take ? c - 1 : a;
      take = ev[j] > b;
      b = take ? ev[j] : b;
      a = take ? c : a;
      take = od[j + 1] > b;
      b = take ? od[j + 1] : b;
      a = take ? c + 1 : a;
      best[j] = b;
      if (ARGMAX) at[j] = a;
    }
  }
}

int PoolFwd(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  if (nparam != 2 || ndims[0] != 4 || ndims[1] != 4 || !packrun::IsFloat(dtypes[0])) return 1;
  const float *x = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[1]);
  const int64_t planes = shapes[0][0] * shapes[0][1], h = shapes[0][2], w = shapes[0][3];
  const int64_t oh = shapes[1][2], ow = shapes[1][3];
  if (oh != (h - 1) / 2 + 1 || ow != (w - 1) / 2 + 1) return 1;
  packrun::ParallelFor(planes, [&](int64_t begin, int64_t end) {
    std::vector<float> ev(ow), od(ow + 1);
    for (int64_t p = begin; p < end; ++p)
      for (int64_t i = 0; i < oh; ++i)
        RowWindows<false>(x + p * h * w, h, w, i, ow, ev.data(), od.data(),
                          y + (p * oh + i) * ow, nullptr);
  });
  return 0;
}

int PoolBwd(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  if (nparam != 3 || ndims[0] != 4 || ndims[1] != 4 || !packrun::IsFloat(dtypes[0])) return 1;
  const float *dy = static_cast<const float *>(params[0]);
  const float *x = static_cast<const float *>(params[1]);
  float *dx = static_cast<float *>(params[2]);
  const int64_t oh = shapes[0][2], ow = shapes[0][3];
  const int64_t planes = shapes[1][0] * shapes[1][1], h = shapes[1][2], w = shapes[1][3];
  if (oh != (h - 1) / 2 + 1 || ow != (w - 1) / 2 + 1) return 1;
  if (h * w > std::numeric_limits<int32_t>::max()) return 1;  // positions are int32
  packrun::ParallelFor(planes, [&](int64_t begin, int64_t end) {
    std::vector<float> ev(ow), od(ow + 1), best(ow);
    std::vector<int32_t> at(ow);
    for (int64_t p = begin; p < end; ++p) {
      const float *dp = dy + p * oh * ow;
      float *gp = dx + p * h * w;
      std::memset(gp, 0, sizeof(float) * h * w);
      for (int64_t i = 0; i < oh; ++i) {
        RowWindows<true>(x + p * h * w, h, w, i, ow, ev.data(), od.data(), best.data(),
                         at.data());
        for (int64_t j = 0; j < ow; ++j) gp[at[j]] += dp[i * ow + j];
      }
    }
  });
  return 0;
}

}  // namespace

PACKRUN_EXPORT(PoolFwd, PoolFwd)
PACKRUN_EXPORT(PoolBwd, PoolBwd)
