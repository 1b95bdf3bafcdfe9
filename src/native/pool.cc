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

#include "parallel.h"

namespace {

struct Window {  // the input rows (or columns) output index o covers: 2o - 1 .. 2o + 1, clipped
  int64_t lo, hi;
  Window(int64_t o, int64_t size) : lo(o > 0 ? 2 * o - 1 : 0), hi(std::min(size, 2 * o + 2)) {}
};

int PoolFwd(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  if (nparam != 2 || ndims[0] != 4 || ndims[1] != 4 || !packrun::IsFloat(dtypes[0])) return 1;
  const float *x = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[1]);
  const int64_t planes = shapes[0][0] * shapes[0][1], h = shapes[0][2], w = shapes[0][3];
  const int64_t oh = shapes[1][2], ow = shapes[1][3];
  if (oh != (h - 1) / 2 + 1 || ow != (w - 1) / 2 + 1) return 1;
  packrun::ParallelFor(planes, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const float *xp = x + p * h * w;
      float *yp = y + p * oh * ow;
      for (int64_t i = 0; i < oh; ++i) {
        const Window rows(i, h);
        for (int64_t j = 0; j < ow; ++j) {
          const Window cols(j, w);
          float m = xp[rows.lo * w + cols.lo];
          for (int64_t r = rows.lo; r < rows.hi; ++r)
            for (int64_t c = cols.lo; c < cols.hi; ++c) m = std::max(m, xp[r * w + c]);
          yp[i * ow + j] = m;
        }
      }
    }
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
  packrun::ParallelFor(planes, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const float *xp = x + p * h * w;
      const float *dp = dy + p * oh * ow;
      float *gp = dx + p * h * w;
      std::memset(gp, 0, sizeof(float) * h * w);
      for (int64_t i = 0; i < oh; ++i) {
        const Window rows(i, h);
        for (int64_t j = 0; j < ow; ++j) {
          const Window cols(j, w);
          int64_t at = rows.lo * w + cols.lo;
          for (int64_t r = rows.lo; r < rows.hi; ++r)
            for (int64_t c = cols.lo; c < cols.hi; ++c)
              if (xp[r * w + c] > xp[at]) at = r * w + c;
          gp[at] += dp[i * ow + j];
        }
      }
    }
  });
  return 0;
}

}  // namespace

PACKRUN_EXPORT(PoolFwd, PoolFwd)
PACKRUN_EXPORT(PoolBwd, PoolBwd)
