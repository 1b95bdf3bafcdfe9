// Winograd F(m x m, 3x3) input and output transforms for src/model/resnet.py's CPU path, as
// MindSpore "aot" Custom operators (mindspore.ops.Custom, func_type="aot"; built by
// src/native/kernels.py with g++).
//
// Each transform replaces a chain of MindSpore kernels (unfold, a transpose, a Kronecker
// matmul; and their adjoints col2im, transpose, matmul) by one pass over memory that reads
// the NCHW map and writes the transform domain in the layout the batched matmul wants:
//
//   WinoIn<m>   x  (N, C, H, W)             -> v  (S, C, N*TH*TW)   S = (m+2)^2, TH = ceil(H/m)
//   WinoInT<m>  dv (S, C, N*TH*TW), x (shape only) -> dx (N, C, H, W)          adjoint of WinoIn
//   WinoOut<m>  M  (S, O, N, TH, TW)        -> y  (N, O, TH*m, TW*m)
//   WinoOutT<m> dy (N, O, TH*m, TW*m)       -> dM (S, O, N, TH, TW)            adjoint of WinoOut
//
// Tiles: tile (th, tw) reads x rows th*m-1 .. th*m+m and columns tw*m-1 .. tw*m+m (zero
// outside the map: padding 1 all round, and the bottom/right extended to a multiple of m).
// v[a*(m+2)+b] = (B^T d B)[a][b]; y tile = A^T M A, written at rows th*m.., columns tw*m..
// The matrices are Lavin & Gray's, the same as _WINOGRAD in src/model/resnet.py.
//
// The kernels work on 16 channels of one image side by side (the "lanes" layout): one vector
// per map position, each tile transformed with full-width vector arithmetic, the planes moved
// into and out of that layout through 16 x 16 register transposes. They replaced kernels that
// worked one plane at a time on flat runs: on ResNet18's small maps those runs were a few
// elements long and the loop overhead was the work. Forward and backward transforms of one
// conv, pinned to one core (ms): batch 32, 16x16 maps 11.9 -> 2.1, 8x8 9.5 -> 1.5, 4x4 18.8
// -> 1.7; batch 8, 56x56 17.1 -> 6.7, 28x28 8.3 -> 3.1, 14x14 (m = 2) 5.9 -> 1.9, 7x7 5.5 -> 1.0.
//
// Work is split over the (n, 16-channel) groups (parallel.h). Every kernel returns 0, or 1 on
// a shape it does not expect (MindSpore then raises).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "parallel.h"

namespace {

template <int M>
struct Mat;

template <>
struct Mat<2> {
  static constexpr int R = 4;
  static constexpr float BT[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
  static constexpr float AT[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
};

template <>
struct Mat<4> {
  static constexpr int R = 6;
  static constexpr float BT[6][6] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0},
                                     {0, 4, -4, -1, 1, 0}, {0, -2, -1, 2, 1, 0},
                                     {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
  static constexpr float AT[4][6] = {
      {1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};
};

// 16 channel planes side by side: one vector per map position. GCC's vector extension, so
// it compiles to AVX-512 registers where -march=native has them and to pairs of AVX2 ones
// otherwise.
typedef float V __attribute__((vector_size(64)));
constexpr int kLanes = 16;

// The planes of lanes c0 .. c0 + lanes - 1 of image n, for a map of `plane` floats per channel.
struct Group {
  int64_t n, c0, lanes;
  Group(int64_t g, int64_t channels) {
    const int64_t per = (channels + kLanes - 1) / kLanes;
    n = g / per;
    c0 = (g % per) * kLanes;
    lanes = std::min<int64_t>(kLanes, channels - c0);
  }
};

inline void ZeroIfPartial(std::vector<V> &buf, int64_t lanes) {
  if (lanes < kLanes) std::fill(buf.begin(), buf.end(), V{});
}

// Moving between 16 planes and the lanes layout one element at a time was most of these
// kernels' time (16x16 maps: ~70%); 16 x 16 blocks go through registers instead.
typedef int32_t VI __attribute__((vector_size(64)));

// r[k][l] <- r[l][k]: four butterfly stages, stage b swapping bit b of the row and the column.
inline void Transpose16(V (&r)[kLanes]) {
  static const VI lo[4] = {
      {0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30},
      {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29},
      {0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27},
      {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23}};
  static const VI hi[4] = {
      {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31},
      {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31},
      {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31},
      {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31}};
#pragma GCC unroll 4
  for (int stage = 0; stage < 4; ++stage) {
    const int b = 1 << stage;
#pragma GCC unroll 16
    for (int i = 0; i < kLanes; ++i) {
      if (i & b) continue;
      const V a = r[i], c = r[i | b];
      r[i] = __builtin_shuffle(a, c, lo[stage]);
      r[i | b] = __builtin_shuffle(a, c, hi[stage]);
    }
  }
}

// dst[e][l] = src[l][e] for e < count and l < lanes (src[l]: `count` contiguous floats).
inline void ToLanes(const float *const *src, int64_t lanes, int64_t count, V *dst) {
  int64_t e = 0;
  for (; e + kLanes <= count; e += kLanes) {
    V r[kLanes];
    for (int l = 0; l < kLanes; ++l) {
      if (l < lanes) std::memcpy(&r[l], src[l] + e, sizeof(V));
      else r[l] = V{};
    }
    Transpose16(r);
    for (int k = 0; k < kLanes; ++k) dst[e + k] = r[k];
  }
  for (int64_t l = 0; l < lanes; ++l)
    for (int64_t t = e; t < count; ++t) dst[t][l] = src[l][t];
}

// dst[l][e] = src[e][l] for e < count and l < lanes: the inverse of ToLanes.
inline void FromLanes(const V *src, int64_t lanes, int64_t count, float *const *dst) {
  int64_t e = 0;
  for (; e + kLanes <= count; e += kLanes) {
    V r[kLanes];
    for (int k = 0; k < kLanes; ++k) r[k] = src[e + k];
    Transpose16(r);
    for (int64_t l = 0; l < lanes; ++l) std::memcpy(dst[l] + e, &r[l], sizeof(V));
  }
  for (int64_t l = 0; l < lanes; ++l)
    for (int64_t t = e; t < count; ++t) dst[l][t] = src[t][l];
}

// The transform-domain side, (S, C, N, tiles): lane l's element (s, t) is at
// base[s * stride_s + l * stride_l + t]; in the lanes layout it is dst[s * tiles + t][l]. With
// 16 tiles or more each s is a ToLanes of runs; fewer (8x8 maps: 4 tiles, 4x4: 1) go one
// element at a time, faster there than gathering the short runs first.
inline void RunsToLanes(const float *base, int64_t s_n, int64_t stride_s, int64_t tiles,
                        int64_t lanes, int64_t stride_l, V *dst) {
  if (tiles >= kLanes) {
    const float *src[kLanes];
    for (int64_t s = 0; s < s_n; ++s) {
      for (int64_t l = 0; l < lanes; ++l) src[l] = base + s * stride_s + l * stride_l;
      ToLanes(src, lanes, tiles, dst + s * tiles);
    }
    return;
  }
  for (int64_t s = 0; s < s_n; ++s)
    for (int64_t l = 0; l < lanes; ++l) {
      const float *src = base + s * stride_s + l * stride_l;
      for (int64_t t = 0; t < tiles; ++t) dst[s * tiles + t][l] = src[t];
    }
}

// The inverse of RunsToLanes.
inline void LanesToRuns(const V *src, int64_t s_n, int64_t stride_s, int64_t tiles,
                        int64_t lanes, int64_t stride_l, float *base) {
  if (tiles >= kLanes) {
    float *dst[kLanes];
    for (int64_t s = 0; s < s_n; ++s) {
      for (int64_t l = 0; l < lanes; ++l) dst[l] = base + s * stride_s + l * stride_l;
      FromLanes(src + s * tiles, lanes, tiles, dst);
    }
    return;
  }
  for (int64_t s = 0; s < s_n; ++s)
    for (int64_t l = 0; l < lanes; ++l) {
      float *dst = base + s * stride_s + l * stride_l;
      for (int64_t t = 0; t < tiles; ++t) dst[t] = src[s * tiles + t][l];
    }
}

// out(r, c, sum over k < K of coef(r, c, k) * in(r, c, k)) for r < Rows, c < Cols: the small
// matrix products of every transform, fully unrolled so the coefficients are constants and the
// zero ones drop out.
template <int Rows, int Cols, int K, typename Coef, typename In, typename Out>
inline void Product(Coef coef, In in, Out out) {
#pragma GCC unroll 8
  for (int r = 0; r < Rows; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < Cols; ++c) {
      V s = {};
#pragma GCC unroll 8
      for (int k = 0; k < K; ++k)
        if (coef(r, c, k) != 0.0f) s += coef(r, c, k) * in(r, c, k);
      out(r, c, s);
    }
}

// x (N, C, H, W) -> v (S, C, N, TH, TW)
template <int M>
int WinoIn(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  constexpr int R = Mat<M>::R;
  if (nparam != 2 || ndims[0] != 4 || !packrun::IsFloat(dtypes[0])) return 1;
  const float *x = static_cast<const float *>(params[0]);
  float *v = static_cast<float *>(params[1]);
  const int64_t n_ = shapes[0][0], c_ = shapes[0][1], h = shapes[0][2], w = shapes[0][3];
  const int64_t th_n = (h + M - 1) / M, tw_n = (w + M - 1) / M, tiles = th_n * tw_n;
  const int64_t pw = tw_n * M + 2, ph = th_n * M + 2;  // the padded, zero-extended map
  const int64_t groups = n_ * ((c_ + kLanes - 1) / kLanes);
  packrun::ParallelFor(groups, [&](int64_t begin, int64_t end) {
    std::vector<V> pad(ph * pw, V{}), out(R * R * tiles), map(h * w);
    const float *planes[kLanes];
    for (int64_t g = begin; g < end; ++g) {
      const Group gr(g, c_);
      ZeroIfPartial(pad, gr.lanes);
      for (int64_t l = 0; l < gr.lanes; ++l) planes[l] = x + ((gr.n * c_ + gr.c0 + l) * h) * w;
      ToLanes(planes, gr.lanes, h * w, map.data());
      for (int64_t y = 0; y < h; ++y)
        std::copy(&map[y * w], &map[y * w] + w, &pad[(y + 1) * pw + 1]);
      for (int64_t th = 0; th < th_n; ++th)
        for (int64_t tw = 0; tw < tw_n; ++tw) {
          const V *d = &pad[th * M * pw + tw * M];
          V t[R][R];  // t[a][j] = sum_i BT[a][i] d[i][j]; v[a][b] = sum_j BT[b][j] t[a][j]
          Product<R, R, R>([](int a, int, int i) { return Mat<M>::BT[a][i]; },
                           [&](int, int j, int i) { return d[i * pw + j]; },
                           [&](int a, int j, V s) { t[a][j] = s; });
          const int64_t tile = th * tw_n + tw;
          Product<R, R, R>([](int, int b, int j) { return Mat<M>::BT[b][j]; },
                           [&](int a, int, int j) { return t[a][j]; },
                           [&](int a, int b, V s) { out[(a * R + b) * tiles + tile] = s; });
        }
      LanesToRuns(out.data(), R * R, c_ * n_ * tiles, tiles, gr.lanes, n_ * tiles,
                  v + (gr.c0 * n_ + gr.n) * tiles);
    }
  });
  return 0;
}

// dv (S, C, N*TH*TW), x (N, C, H, W; shape only) -> dx (N, C, H, W)
template <int M>
int WinoInT(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  constexpr int R = Mat<M>::R;
  if (nparam != 3 || ndims[1] != 4 || !packrun::IsFloat(dtypes[0])) return 1;
  const float *dv = static_cast<const float *>(params[0]);
  float *dx = static_cast<float *>(params[2]);
  const int64_t n_ = shapes[1][0], c_ = shapes[1][1], h = shapes[1][2], w = shapes[1][3];
  const int64_t th_n = (h + M - 1) / M, tw_n = (w + M - 1) / M, tiles = th_n * tw_n;
  const int64_t pw = tw_n * M + 2, ph = th_n * M + 2;
  const int64_t groups = n_ * ((c_ + kLanes - 1) / kLanes);
  packrun::ParallelFor(groups, [&](int64_t begin, int64_t end) {
    std::vector<V> pad(ph * pw), in(R * R * tiles), map(h * w);
    float *rows[kLanes];
    for (int64_t g = begin; g < end; ++g) {
      const Group gr(g, c_);
      ZeroIfPartial(in, gr.lanes);
      RunsToLanes(dv + (gr.c0 * n_ + gr.n) * tiles, R * R, c_ * n_ * tiles, tiles, gr.lanes,
                  n_ * tiles, in.data());
      std::fill(pad.begin(), pad.end(), V{});
      for (int64_t th = 0; th < th_n; ++th)
        for (int64_t tw = 0; tw < tw_n; ++tw) {
          const int64_t tile = th * tw_n + tw;
          V t[R][R];  // t[a][j] = sum_b BT[b][j] G[a][b]
          Product<R, R, R>([](int, int j, int b) { return Mat<M>::BT[b][j]; },
                           [&](int a, int, int b) { return in[(a * R + b) * tiles + tile]; },
                           [&](int a, int j, V s) { t[a][j] = s; });
          V *d = &pad[th * M * pw + tw * M];  // d[i][j] += sum_a BT[a][i] t[a][j]
          Product<R, R, R>([](int i, int, int a) { return Mat<M>::BT[a][i]; },
                           [&](int, int j, int a) { return t[a][j]; },
                           [&](int i, int j, V s) { d[i * pw + j] += s; });
        }
      for (int64_t y = 0; y < h; ++y)
        std::copy(&pad[(y + 1) * pw + 1], &pad[(y + 1) * pw + 1] + w, &map[y * w]);
      for (int64_t l = 0; l < gr.lanes; ++l) rows[l] = dx + ((gr.n * c_ + gr.c0 + l) * h) * w;
      FromLanes(map.data(), gr.lanes, h * w, rows);
    }
  });
  return 0;
}

// M (S, O, N, TH, TW) -> y (N, O, TH*m, TW*m)
template <int M>
int WinoOut(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  constexpr int R = Mat<M>::R;
  if (nparam != 2 || ndims[0] != 5 || !packrun::IsFloat(dtypes[0])) return 1;
  const float *in = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[1]);
  const int64_t o_ = shapes[0][1], n_ = shapes[0][2], th_n = shapes[0][3], tw_n = shapes[0][4];
  const int64_t tiles = th_n * tw_n, w = tw_n * M, hw = th_n * M * w;
  const int64_t groups = n_ * ((o_ + kLanes - 1) / kLanes);
  packrun::ParallelFor(groups, [&](int64_t begin, int64_t end) {
    std::vector<V> buf(R * R * tiles), map(hw);
    float *rows[kLanes];
    for (int64_t g = begin; g < end; ++g) {
      const Group gr(g, o_);
      ZeroIfPartial(buf, gr.lanes);
      RunsToLanes(in + (gr.c0 * n_ + gr.n) * tiles, R * R, o_ * n_ * tiles, tiles, gr.lanes,
                  n_ * tiles, buf.data());
      for (int64_t th = 0; th < th_n; ++th)
        for (int64_t tw = 0; tw < tw_n; ++tw) {
          const int64_t tile = th * tw_n + tw;
          V t[R][M];  // t[a][q] = sum_b AT[q][b] M[a][b]; y[p][q] = sum_a AT[p][a] t[a][q]
          Product<R, M, R>([](int, int q, int b) { return Mat<M>::AT[q][b]; },
                           [&](int a, int, int b) { return buf[(a * R + b) * tiles + tile]; },
                           [&](int a, int q, V s) { t[a][q] = s; });
          V *o = &map[th * M * w + tw * M];
          Product<M, M, R>([](int p, int, int a) { return Mat<M>::AT[p][a]; },
                           [&](int, int q, int a) { return t[a][q]; },
                           [&](int p, int q, V s) { o[p * w + q] = s; });
        }
      for (int64_t l = 0; l < gr.lanes; ++l) rows[l] = y + (gr.n * o_ + gr.c0 + l) * hw;
      FromLanes(map.data(), gr.lanes, hw, rows);
    }
  });
  return 0;
}

// dy (N, O, TH*m, TW*m) -> dM (S, O, N, TH, TW)
template <int M>
int WinoOutT(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  constexpr int R = Mat<M>::R;
  if (nparam != 2 || ndims[0] != 4 || !packrun::IsFloat(dtypes[0])) return 1;
  const float *dy = static_cast<const float *>(params[0]);
  float *out = static_cast<float *>(params[1]);
  const int64_t n_ = shapes[0][0], o_ = shapes[0][1], h = shapes[0][2], w = shapes[0][3];
  if (h % M != 0 || w % M != 0) return 1;
  const int64_t th_n = h / M, tw_n = w / M, tiles = th_n * tw_n, hw = h * w;
  const int64_t groups = n_ * ((o_ + kLanes - 1) / kLanes);
  packrun::ParallelFor(groups, [&](int64_t begin, int64_t end) {
    std::vector<V> map(hw), buf(R * R * tiles);
    const float *planes[kLanes];
    for (int64_t g = begin; g < end; ++g) {
      const Group gr(g, o_);
      ZeroIfPartial(map, gr.lanes);
      for (int64_t l = 0; l < gr.lanes; ++l) planes[l] = dy + (gr.n * o_ + gr.c0 + l) * hw;
      ToLanes(planes, gr.lanes, hw, map.data());
      for (int64_t th = 0; th < th_n; ++th)
        for (int64_t tw = 0; tw < tw_n; ++tw) {
          const int64_t tile = th * tw_n + tw;
          const V *gq = &map[th * M * w + tw * M];
          V t[R][M];  // t[a][q] = sum_p AT[p][a] g[p][q]; dM[a][b] = sum_q AT[q][b] t[a][q]
          Product<R, M, M>([](int a, int, int p) { return Mat<M>::AT[p][a]; },
                           [&](int, int q, int p) { return gq[p * w + q]; },
                           [&](int a, int q, V s) { t[a][q] = s; });
          Product<R, R, M>([](int, int b, int q) { return Mat<M>::AT[q][b]; },
                           [&](int a, int, int q) { return t[a][q]; },
                           [&](int a, int b, V s) { buf[(a * R + b) * tiles + tile] = s; });
        }
      LanesToRuns(buf.data(), R * R, o_ * n_ * tiles, tiles, gr.lanes, n_ * tiles,
                  out + (gr.c0 * n_ + gr.n) * tiles);
    }
  });
  return 0;
}

}  // namespace

PACKRUN_EXPORT(WinoIn2, WinoIn<2>)
PACKRUN_EXPORT(WinoIn4, WinoIn<4>)
PACKRUN_EXPORT(WinoInT2, WinoInT<2>)
PACKRUN_EXPORT(WinoInT4, WinoInT<4>)
PACKRUN_EXPORT(WinoOut2, WinoOut<2>)
PACKRUN_EXPORT(WinoOut4, WinoOut<4>)
PACKRUN_EXPORT(WinoOutT2, WinoOutT<2>)
PACKRUN_EXPORT(WinoOutT4, WinoOutT<4>)
