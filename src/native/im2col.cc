// im2col and its adjoint for src/model/resnet.py's CPU path (the convolutions Winograd does not
// take: the 7x7 stem, the stride-2 ones, 3x3 on maps under 4x4), as MindSpore "aot" Custom
// operators (built by src/native/kernels.py with g++).
//
// MindSpore's Im2Col and Col2Im ran at ~2 GB/s (the stem's im2col alone 6.2 ms of a 300 ms
// one-thread ResNet18 step at 64 px, batch 32), and the whole-batch matmul of small maps
// transposed the columns on top. Here the padding is read as zeros, not stored, and the
// columns are written in the layout the matmul takes:
//
//   Cols   x (N, C, H, W), g -> cols (N, K, L)        K = C*kh*kw, L = OH*OW, k = (c*kh + i)*kw + j
//   Rows   x (N, C, H, W), g -> rows (N*L, K)         the same values, one row per output position
//   ColsT  dcols (N, K, L), g, x (shape only) -> dx (N, C, H, W)       adjoint of Cols
//   RowsT  drows (N*L, K), g, x (shape only) -> dx (N, C, H, W)        adjoint of Rows
//
// g: int64 geometry {kh, kw, stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right}.
// Output position (oy, ox), tap (i, j) reads x[oy*sh - top + i][ox*sw - left + j], zero outside.
// Work is split over the (n, c) planes or the images (parallel.h); every kernel returns 0, or
// 1 on a shape it does not expect (MindSpore then raises).
#include <cstdint>
#include <cstring>
#include <vector>

#include "parallel.h"

namespace {

struct Geometry {
  int64_t kh, kw, sh, sw, top, left, h, w, oh, ow;
  Geometry(const int64_t *g, int64_t h_, int64_t w_)
      : kh(g[0]), kw(g[1]), sh(g[2]), sw(g[3]), top(g[4]), left(g[6]), h(h_), w(w_),
        oh((h_ + g[4] + g[5] - g[0]) / g[2] + 1), ow((w_ + g[6] + g[7] - g[1]) / g[3] + 1) {}
  bool Valid() const { return kh > 0 && kw > 0 && sh > 0 && sw > 0 && oh > 0 && ow > 0; }
  int64_t L() const { return oh * ow; }
  // the first and one-past-last output column whose tap j lands inside the row
  // (0 <= ox*sw - left + j <= w - 1), an empty run when there is none
  int64_t FirstX(int64_t j) const {
    const int64_t need = left - j;
    return std::min(ow, need <= 0 ? 0 : (need + sw - 1) / sw);
  }
  int64_t EndX(int64_t j) const {
    const int64_t lim = w - 1 + left - j;
    return std::max(FirstX(j), lim < 0 ? 0 : std::min(ow, lim / sw + 1));
  }
};

bool Check(int nparam, int want, int *ndims, const char **dtypes, int x_at) {
  return nparam == want && ndims[x_at] == 4 && packrun::IsFloat(dtypes[0]) &&
         std::strcmp(dtypes[1], "int64") == 0;
}

// One plane's runs, the same for every plane, so they are worked out once per op (the
// divisions cost more than the copying on ResNet18's 2x2 maps): for each tap t = i*kw + j and
// output row oy, columns x0 .. x1 read the map from offset `at` (row y, column x0*sw - left + j)
// by steps of sw; the other columns, and every column of a row y outside the map
// (x0 = x1 = 0), are padding.
struct Run {
  int64_t t, oy, x0, x1, at;
};

inline std::vector<Run> Runs(const Geometry &g) {
  std::vector<Run> runs;
  runs.reserve(g.kh * g.kw * g.oh);
  for (int64_t i = 0; i < g.kh; ++i)
    for (int64_t j = 0; j < g.kw; ++j) {
      const int64_t x0 = g.FirstX(j), x1 = g.EndX(j);
      for (int64_t oy = 0; oy < g.oh; ++oy) {
        const int64_t y = oy * g.sh - g.top + i;
        if (y >= 0 && y < g.h)
          runs.push_back({i * g.kw + j, oy, x0, x1, y * g.w + x0 * g.sw - g.left + j});
        else runs.push_back({i * g.kw + j, oy, 0, 0, 0});
      }
    }
  return runs;
}

int Cols(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  if (!Check(nparam, 3, ndims, dtypes, 0)) return 1;
  const float *x = static_cast<const float *>(params[0]);
  float *cols = static_cast<float *>(params[2]);
  const int64_t n_ = shapes[0][0], c_ = shapes[0][1];
  const Geometry g(static_cast<const int64_t *>(params[1]), shapes[0][2], shapes[0][3]);
  const int64_t taps = g.kh * g.kw, L = g.L();
  if (!g.Valid() || shapes[2][1] != c_ * taps || shapes[2][2] != L) return 1;
  const std::vector<Run> runs = Runs(g);
  packrun::ParallelFor(n_ * c_, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const float *src = x + p * g.h * g.w;
      float *dst = cols + p * taps * L;  // (n, c) -> rows k = c*taps .. of image n
      for (const Run &run : runs) {
        const int64_t t = run.t, oy = run.oy, x0 = run.x0, x1 = run.x1, at = run.at;
        float *row = dst + t * L + oy * g.ow;
        std::fill(row, row + x0, 0.0f);
        const float *in = src + at;
        for (int64_t ox = x0; ox < x1; ++ox) row[ox] = in[(ox - x0) * g.sw];
        std::fill(row + std::max(x0, x1), row + g.ow, 0.0f);
      }
    }
  });
  return 0;
}

int ColsT(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  if (!Check(nparam, 4, ndims, dtypes, 2)) return 1;
  const float *cols = static_cast<const float *>(params[0]);
  float *dx = static_cast<float *>(params[3]);
  const int64_t n_ = shapes[2][0], c_ = shapes[2][1];
  const Geometry g(static_cast<const int64_t *>(params[1]), shapes[2][2], shapes[2][3]);
  const int64_t taps = g.kh * g.kw, L = g.L();
  if (!g.Valid() || shapes[0][1] != c_ * taps || shapes[0][2] != L) return 1;
  const std::vector<Run> runs = Runs(g);
  packrun::ParallelFor(n_ * c_, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      float *out = dx + p * g.h * g.w;
      const float *src = cols + p * taps * L;
      std::fill(out, out + g.h * g.w, 0.0f);
      for (const Run &run : runs) {
        const int64_t t = run.t, oy = run.oy, x0 = run.x0, x1 = run.x1, at = run.at;
        const float *row = src + t * L + oy * g.ow;
        float *o = out + at;
        for (int64_t ox = x0; ox < x1; ++ox) o[(ox - x0) * g.sw] += row[ox];
      }
    }
  });
  return 0;
}

int Rows(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  if (!Check(nparam, 3, ndims, dtypes, 0)) return 1;
  const float *x = static_cast<const float *>(params[0]);
  float *rows = static_cast<float *>(params[2]);
  const int64_t n_ = shapes[0][0], c_ = shapes[0][1];
  const Geometry g(static_cast<const int64_t *>(params[1]), shapes[0][2], shapes[0][3]);
  const int64_t taps = g.kh * g.kw, L = g.L(), K = c_ * taps;
  if (!g.Valid() || shapes[2][0] != n_ * L || shapes[2][1] != K) return 1;
  const std::vector<Run> runs = Runs(g);
  packrun::ParallelFor(n_, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      float *dst = rows + n * L * K;
      for (int64_t c = 0; c < c_; ++c) {
        const float *src = x + (n * c_ + c) * g.h * g.w;
        for (const Run &run : runs) {
        const int64_t t = run.t, oy = run.oy, x0 = run.x0, x1 = run.x1, at = run.at;
          float *col = dst + oy * g.ow * K + c * taps + t;  // position (oy, 0), column k
          for (int64_t ox = 0; ox < x0; ++ox) col[ox * K] = 0.0f;
          const float *in = src + at;
          for (int64_t ox = x0; ox < x1; ++ox) col[ox * K] = in[(ox - x0) * g.sw];
          for (int64_t ox = std::max(x0, x1); ox < g.ow; ++ox) col[ox * K] = 0.0f;
        }
      }
    }
  });
  return 0;
}

int RowsT(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  if (!Check(nparam, 4, ndims, dtypes, 2)) return 1;
  const float *rows = static_cast<const float *>(params[0]);
  float *dx = static_cast<float *>(params[3]);
  const int64_t n_ = shapes[2][0], c_ = shapes[2][1];
  const Geometry g(static_cast<const int64_t *>(params[1]), shapes[2][2], shapes[2][3]);
  const int64_t taps = g.kh * g.kw, L = g.L(), K = c_ * taps;
  if (!g.Valid() || shapes[0][0] != n_ * L || shapes[0][1] != K) return 1;
  const std::vector<Run> runs = Runs(g);
  packrun::ParallelFor(n_, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const float *src = rows + n * L * K;
      for (int64_t c = 0; c < c_; ++c) {
        float *out = dx + (n * c_ + c) * g.h * g.w;
        std::fill(out, out + g.h * g.w, 0.0f);
        for (const Run &run : runs) {
        const int64_t t = run.t, oy = run.oy, x0 = run.x0, x1 = run.x1, at = run.at;
          const float *col = src + oy * g.ow * K + c * taps + t;
          float *o = out + at;
          for (int64_t ox = x0; ox < x1; ++ox) o[(ox - x0) * g.sw] += col[ox * K];
        }
      }
    }
  });
  return 0;
}

}  // namespace

PACKRUN_EXPORT(Im2ColCols, Cols)
PACKRUN_EXPORT(Im2ColRows, Rows)
PACKRUN_EXPORT(Im2ColColsT, ColsT)
PACKRUN_EXPORT(Im2ColRowsT, RowsT)

// ---- 3x3 convolutions on maps of a few positions, as one dense matmul ----
//
// On a 2x2 map (ResNet18/34's layer4 at 64 px), 5 of the 9 taps of every output fall in the
// padding, so im2col's matmul multiplies zeros 5/9 of the time. Instead the conv is one
// matmul of the image, flattened as it lies in memory (N, C*H*W), with the expanded weight
//   Wd[o*HW + p][c*HW + q] = W[o][c][qy - py + 1][qx - px + 1]   (0 where |q - p| > 1),
// giving (N, O*H*W), the NCHW output as it lies: no transpose either side.
//
//   Expand   W (O, C, 3, 3), x (N, C, H, W; shape only) -> Wd (O*H*W, C*H*W)
//   ExpandT  dWd (O*H*W, C*H*W), W (shape only), x (shape only) -> dW (O, C, 3, 3)
namespace {

// tap of output position p from input position q on a w-wide map, or -1 outside the 3x3
inline int64_t Tap(int64_t p, int64_t q, int64_t w) {
  const int64_t dy = q / w - p / w, dx = q % w - p % w;
  if (dy < -1 || dy > 1 || dx < -1 || dx > 1) return -1;
  return (dy + 1) * 3 + (dx + 1);
}

int Expand(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  if (nparam != 3 || ndims[0] != 4 || ndims[1] != 4 || !packrun::IsFloat(dtypes[0])) return 1;
  if (shapes[0][2] != 3 || shapes[0][3] != 3 || shapes[0][1] != shapes[1][1]) return 1;
  const float *wt = static_cast<const float *>(params[0]);
  float *wd = static_cast<float *>(params[2]);
  const int64_t o_ = shapes[0][0], c_ = shapes[0][1], w = shapes[1][3];
  const int64_t hw = shapes[1][2] * w;
  std::vector<int64_t> taps(hw * hw);
  for (int64_t p = 0; p < hw; ++p)
    for (int64_t q = 0; q < hw; ++q) taps[p * hw + q] = Tap(p, q, w);
  packrun::ParallelFor(o_, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o)
      for (int64_t p = 0; p < hw; ++p) {
        float *row = wd + (o * hw + p) * c_ * hw;
        const int64_t *tp = &taps[p * hw];
        for (int64_t c = 0; c < c_; ++c) {
          const float *k = wt + (o * c_ + c) * 9;
          for (int64_t q = 0; q < hw; ++q) row[c * hw + q] = tp[q] < 0 ? 0.0f : k[tp[q]];
        }
      }
  });
  return 0;
}

int ExpandT(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  if (nparam != 4 || ndims[1] != 4 || ndims[2] != 4 || !packrun::IsFloat(dtypes[0])) return 1;
  const float *wd = static_cast<const float *>(params[0]);
  float *dw = static_cast<float *>(params[3]);
  const int64_t o_ = shapes[1][0], c_ = shapes[1][1], w = shapes[2][3];
  const int64_t hw = shapes[2][2] * w;
  if (shapes[0][0] != o_ * hw || shapes[0][1] != c_ * hw) return 1;
  std::vector<int64_t> taps(hw * hw);
  for (int64_t p = 0; p < hw; ++p)
    for (int64_t q = 0; q < hw; ++q) taps[p * hw + q] = Tap(p, q, w);
  packrun::ParallelFor(o_, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      float *k = dw + o * c_ * 9;
      std::fill(k, k + c_ * 9, 0.0f);
      for (int64_t p = 0; p < hw; ++p) {
        const float *row = wd + (o * hw + p) * c_ * hw;
        const int64_t *tp = &taps[p * hw];
        for (int64_t c = 0; c < c_; ++c)
          for (int64_t q = 0; q < hw; ++q)
            if (tp[q] >= 0) k[c * 9 + tp[q]] += row[c * hw + q];
      }
    }
  });
  return 0;
}

}  // namespace

PACKRUN_EXPORT(Im2ColExpand, Expand)
PACKRUN_EXPORT(Im2ColExpandT, ExpandT)
