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
// Two implementations of each, the same arithmetic on different loops (src/model/resnet.py
// picks one by the map's size):
// * "runs" (WinoIn<m> ...): one (n, c) plane at a time, as long flat runs (below). Fast on
//   large maps (ResNet50 at 224 px: 56x56, 28x28), but on small ones the runs are a few
//   elements long and the loop overhead is the work (ResNet18 at 64 px, 16x16 .. 4x4).
// * "lanes" (WinoInLanes<m> ...): 16 channels of one image side by side, one vector per map
//   position, each tile transformed with full-width vector arithmetic; the planes are gathered
//   into and scattered out of that layout. Pinned to one core, forward and backward
//   transforms of one conv, batch 32: 16x16 maps 11.9 -> 3.6 ms, 8x8 9.5 -> 2.3, 4x4 18.8 ->
//   2.0; batch 8: 14x14 (m = 2) 5.9 -> 5.5, 7x7 5.5 -> 1.7; but 28x28 8.3 -> 8.6, 56x56
//   17.1 -> 21.7 (there the scalar gathers cost more than the runs' overhead).
//
// Work is split over the (n, c) planes or the (n, 16-channel) groups (parallel.h). Every
// kernel returns 0, or 1 on a shape it does not expect (MindSpore then raises).
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


// Per (n, c) plane the kernels work on flat runs, so the inner loops are long and vectorise:
//
// * The zero-padded input plane (rows/columns -1 .. TH*m / TW*m) is stored "by phase",
//   xr[kr][kc][ir][ic] for padded row ir*m + kr and column ic*m + kc (Lr = TH+1 rows of
//   L = TW+1). Tap (i, j) of every tile (th, tw) is then xr[i%m][j%m][th + i/m][tw + j/m]: one
//   flat run over th*L + tw, shifted by (i/m)*L + j/m. Runs carry one spare column per row
//   (tw = TW), which is computed and dropped (or kept zero in an adjoint).
// * The output transform has no overlap: the products of all tiles are one flat run.

template <int M>
struct Plane {
  int64_t h, w, th_n, tw_n, L, Lr, tiles;
  Plane(int64_t h_, int64_t w_)
      : h(h_), w(w_), th_n((h_ + M - 1) / M), tw_n((w_ + M - 1) / M), L(tw_n + 1),
        Lr(th_n + 1), tiles(th_n * tw_n) {}
  int64_t run() const { return th_n * L; }         // th*L + tw over the tiles, spare column too
  int64_t phase() const { return Lr * L; }         // one (kr, kc) phase of the padded plane
  // where input row y (padded row y + 1) starts in xr, at column phase 0
  int64_t row_at(int64_t y) const { return ((y + 1) % M) * M * phase() + ((y + 1) / M) * L; }
  // input row -> its M column phases (padded column col + 1 = ic*M + kc)
  void split_row(const float *src, float *dst) const {
    for (int kc = 0; kc < M; ++kc) {
      float *d = dst + kc * phase();
      const int64_t first = kc == 0 ? 1 : 0;  // padded column 0 is the zero padding
      for (int64_t ic = first; ic * M + kc - 1 < w; ++ic) d[ic] = src[ic * M + kc - 1];
    }
  }
  // the adjoint of split_row: an input row gathered back from its phases
  void join_row(const float *src, float *dst) const {
    for (int kc = 0; kc < M; ++kc) {
      const float *s = src + kc * phase();
      const int64_t first = kc == 0 ? 1 : 0;
      for (int64_t ic = first; ic * M + kc - 1 < w; ++ic) dst[ic * M + kc - 1] = s[ic];
    }
  }
};

// dst[e] = sum_q k[q] * src[q][e] for e < n: the one inner loop of every transform. K taps,
// zero ones included, so it unrolls and vectorises over e (one store per output, no
// read-modify-write passes).
template <int K>
inline void Combine(float *__restrict dst, const float *const *src, const float *k, int64_t n) {
  const float *__restrict p[K];
  float c[K];
  for (int q = 0; q < K; ++q) {
    p[q] = src[q];
    c[q] = k[q];
  }
#pragma GCC ivdep
  for (int64_t e = 0; e < n; ++e) {
    float s = 0.0f;
#pragma GCC unroll 16
    for (int q = 0; q < K; ++q) s += c[q] * p[q][e];
    dst[e] = s;
  }
}

// x (N, C, H, W) -> v (S, C, N, TH, TW)
template <int M>
int WinoIn(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  constexpr int R = Mat<M>::R;
  if (nparam != 2 || ndims[0] != 4 || !packrun::IsFloat(dtypes[0])) return 1;
  const float *x = static_cast<const float *>(params[0]);
  float *v = static_cast<float *>(params[1]);
  const int64_t n_ = shapes[0][0], c_ = shapes[0][1];
  const Plane<M> pl(shapes[0][2], shapes[0][3]);
  const int64_t run = pl.run();
  packrun::ParallelFor(n_ * c_, [&](int64_t begin, int64_t end) {
    // t[a][kc]: the vertical transform, one run (+ 1 spare) per column phase
    std::vector<float> xr(M * M * pl.phase() + 1), t(R * M * (run + 1)), acc(run);
    const float *src[R];
    float k[R];
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / c_, c = plane % c_;
      const float *xp = x + plane * pl.h * pl.w;
      std::fill(xr.begin(), xr.end(), 0.0f);
      for (int64_t y = 0; y < pl.h; ++y) pl.split_row(xp + y * pl.w, &xr[pl.row_at(y)]);
      // vertical: t[a][kc] = sum_i BT[a][i] xr[i%M][kc] shifted by (i/M) rows
      for (int a = 0; a < R; ++a)
        for (int kc = 0; kc < M; ++kc) {
          for (int i = 0; i < R; ++i) {
            src[i] = &xr[((i % M) * M + kc) * pl.phase() + (i / M) * pl.L];
            k[i] = Mat<M>::BT[a][i];
          }
          Combine<R>(&t[(a * M + kc) * (run + 1)], src, k, run + 1);
        }
      // horizontal: v[a][b] = sum_j BT[b][j] t[a][j%M] shifted by j/M columns, as one run;
      // then copied out without the spare column
      for (int a = 0; a < R; ++a)
        for (int b = 0; b < R; ++b) {
          for (int j = 0; j < R; ++j) {
            src[j] = &t[(a * M + j % M) * (run + 1) + j / M];
            k[j] = Mat<M>::BT[b][j];
          }
          Combine<R>(acc.data(), src, k, run);
          float *out = v + (((a * R + b) * c_ + c) * n_ + n) * pl.tiles;
          for (int64_t th = 0; th < pl.th_n; ++th) {
            const float *row = &acc[th * pl.L];
            float *dst = out + th * pl.tw_n;
            for (int64_t tw = 0; tw < pl.tw_n; ++tw) dst[tw] = row[tw];
          }
        }
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
  const int64_t n_ = shapes[1][0], c_ = shapes[1][1];
  const Plane<M> pl(shapes[1][2], shapes[1][3]);
  const int64_t run = pl.run(), L = pl.L, phase = pl.phase();
  // Buffers carry zero margins so the adjoints of the shifts read zeros: g[b] (one margin
  // column in front), t[a][kc] (L in front and behind).
  const int64_t g_len = run + 1, t_len = run + 2 * L;
  packrun::ParallelFor(n_ * c_, [&](int64_t begin, int64_t end) {
    std::vector<float> g(R * g_len, 0.0f), t(R * M * t_len, 0.0f), xr(M * M * phase);
    const float *src[2 * R];
    float k[2 * R];
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / c_, c = plane % c_;
      for (int a = 0; a < R; ++a) {
        // g[b]: dv[a][b] as runs with a zero spare column
        for (int b = 0; b < R; ++b) {
          const float *in = dv + (((a * R + b) * c_ + c) * n_ + n) * pl.tiles;
          float *gb = &g[b * g_len + 1];
          for (int64_t th = 0; th < pl.th_n; ++th)
            for (int64_t tw = 0; tw < pl.tw_n; ++tw) gb[th * L + tw] = in[th * pl.tw_n + tw];
        }
        // adjoint of the horizontal transform: t[a][kc][e] = sum over taps j = kc + M*s
        // of sum_b BT[b][j] g[b][e - s]
        for (int kc = 0; kc < M; ++kc) {
          int taps = 0;
          for (int j = kc; j < R; j += M)
            for (int b = 0; b < R; ++b) {
              src[taps] = &g[b * g_len + 1 - j / M];
              k[taps++] = Mat<M>::BT[b][j];
            }
          float *dst = &t[(a * M + kc) * t_len + L];
          if (taps == R) Combine<R>(dst, src, k, run);
          else Combine<2 * R>(dst, src, k, run);
        }
      }
      // adjoint of the vertical transform: xr[kr][kc][f] = sum over taps i = kr + M*s of
      // sum_a BT[a][i] t[a][kc][f - s*L]
      for (int kr = 0; kr < M; ++kr)
        for (int kc = 0; kc < M; ++kc) {
          int taps = 0;
          for (int i = kr; i < R; i += M)
            for (int a = 0; a < R; ++a) {
              src[taps] = &t[(a * M + kc) * t_len + L - (i / M) * L];
              k[taps++] = Mat<M>::BT[a][i];
            }
          float *dst = &xr[(kr * M + kc) * phase];
          if (taps == R) Combine<R>(dst, src, k, phase);
          else Combine<2 * R>(dst, src, k, phase);
        }
      float *xp = dx + plane * pl.h * pl.w;
      for (int64_t y = 0; y < pl.h; ++y) pl.join_row(&xr[pl.row_at(y)], xp + y * pl.w);
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
  const int64_t tiles = th_n * tw_n, w = tw_n * M;
  packrun::ParallelFor(n_ * o_, [&](int64_t begin, int64_t end) {
    std::vector<float> hq(R * M * tiles), out(M * M * tiles);
    const float *src[R];
    float k[R];
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / o_, o = plane % o_;
      for (int a = 0; a < R; ++a)  // hq[a][q] = sum_b AT[q][b] M[a][b]
        for (int q = 0; q < M; ++q) {
          for (int b = 0; b < R; ++b) {
            src[b] = in + (((a * R + b) * o_ + o) * n_ + n) * tiles;
            k[b] = Mat<M>::AT[q][b];
          }
          Combine<R>(&hq[(a * M + q) * tiles], src, k, tiles);
        }
      for (int p = 0; p < M; ++p)  // out[p][q] = sum_a AT[p][a] hq[a][q]
        for (int q = 0; q < M; ++q) {
          for (int a = 0; a < R; ++a) {
            src[a] = &hq[(a * M + q) * tiles];
            k[a] = Mat<M>::AT[p][a];
          }
          Combine<R>(&out[(p * M + q) * tiles], src, k, tiles);
        }
      float *yp = y + plane * th_n * M * w;
      for (int64_t th = 0; th < th_n; ++th)
        for (int p = 0; p < M; ++p) {
          float *row = yp + (th * M + p) * w;
          for (int64_t tw = 0; tw < tw_n; ++tw)
            for (int q = 0; q < M; ++q) row[tw * M + q] = out[(p * M + q) * tiles + th * tw_n + tw];
        }
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
  const int64_t th_n = h / M, tw_n = w / M, tiles = th_n * tw_n;
  packrun::ParallelFor(n_ * o_, [&](int64_t begin, int64_t end) {
    std::vector<float> g(M * M * tiles), hq(R * M * tiles);
    const float *src[R];
    float k[R];
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / o_, o = plane % o_;
      const float *yp = dy + plane * h * w;
      for (int64_t th = 0; th < th_n; ++th)  // g[p][q][tile] = dy[th*M + p][tw*M + q]
        for (int p = 0; p < M; ++p) {
          const float *row = yp + (th * M + p) * w;
          for (int64_t tw = 0; tw < tw_n; ++tw)
            for (int q = 0; q < M; ++q) g[(p * M + q) * tiles + th * tw_n + tw] = row[tw * M + q];
        }
      for (int a = 0; a < R; ++a)  // hq[a][q] = sum_p AT[p][a] g[p][q]
        for (int q = 0; q < M; ++q) {
          for (int p = 0; p < M; ++p) {
            src[p] = &g[(p * M + q) * tiles];
            k[p] = Mat<M>::AT[p][a];
          }
          Combine<M>(&hq[(a * M + q) * tiles], src, k, tiles);
        }
      for (int a = 0; a < R; ++a)  // dM[a][b] = sum_q AT[q][b] hq[a][q]
        for (int b = 0; b < R; ++b) {
          for (int q = 0; q < M; ++q) {
            src[q] = &hq[(a * M + q) * tiles];
            k[q] = Mat<M>::AT[q][b];
          }
          Combine<M>(out + (((a * R + b) * o_ + o) * n_ + n) * tiles, src, k, tiles);
        }
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

// ---- "lanes": 16 channels side by side ----
namespace {

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

// x (N, C, H, W) -> v (S, C, N, TH, TW)
template <int M>
int WinoInLanes(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  constexpr int R = Mat<M>::R;
  if (nparam != 2 || ndims[0] != 4 || !packrun::IsFloat(dtypes[0])) return 1;
  const float *x = static_cast<const float *>(params[0]);
  float *v = static_cast<float *>(params[1]);
  const int64_t n_ = shapes[0][0], c_ = shapes[0][1], h = shapes[0][2], w = shapes[0][3];
  const int64_t th_n = (h + M - 1) / M, tw_n = (w + M - 1) / M, tiles = th_n * tw_n;
  const int64_t pw = tw_n * M + 2, ph = th_n * M + 2;  // the padded, zero-extended map
  const int64_t groups = n_ * ((c_ + kLanes - 1) / kLanes);
  packrun::ParallelFor(groups, [&](int64_t begin, int64_t end) {
    std::vector<V> pad(ph * pw, V{}), out(R * R * tiles);
    for (int64_t g = begin; g < end; ++g) {
      const Group gr(g, c_);
      ZeroIfPartial(pad, gr.lanes);
      for (int64_t l = 0; l < gr.lanes; ++l) {
        const float *plane = x + ((gr.n * c_ + gr.c0 + l) * h) * w;
        for (int64_t y = 0; y < h; ++y)
          for (int64_t xx = 0; xx < w; ++xx) pad[(y + 1) * pw + xx + 1][l] = plane[y * w + xx];
      }
      for (int64_t th = 0; th < th_n; ++th)
        for (int64_t tw = 0; tw < tw_n; ++tw) {
          const V *d = &pad[th * M * pw + tw * M];
          V t[R][R];
#pragma GCC unroll 8
          for (int a = 0; a < R; ++a)
#pragma GCC unroll 8
            for (int j = 0; j < R; ++j) {
              V s = {};
#pragma GCC unroll 8
              for (int i = 0; i < R; ++i)
                if (Mat<M>::BT[a][i] != 0.0f) s += Mat<M>::BT[a][i] * d[i * pw + j];
              t[a][j] = s;
            }
          const int64_t tile = th * tw_n + tw;
#pragma GCC unroll 8
          for (int a = 0; a < R; ++a)
#pragma GCC unroll 8
            for (int b = 0; b < R; ++b) {
              V s = {};
#pragma GCC unroll 8
              for (int j = 0; j < R; ++j)
                if (Mat<M>::BT[b][j] != 0.0f) s += Mat<M>::BT[b][j] * t[a][j];
              out[(a * R + b) * tiles + tile] = s;
            }
        }
      for (int s = 0; s < R * R; ++s)
        for (int64_t l = 0; l < gr.lanes; ++l) {
          float *dst = v + ((s * c_ + gr.c0 + l) * n_ + gr.n) * tiles;
          const V *src = &out[s * tiles];
          for (int64_t t = 0; t < tiles; ++t) dst[t] = src[t][l];
        }
    }
  });
  return 0;
}

// dv (S, C, N*TH*TW), x (N, C, H, W; shape only) -> dx (N, C, H, W)
template <int M>
int WinoInTLanes(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  constexpr int R = Mat<M>::R;
  if (nparam != 3 || ndims[1] != 4 || !packrun::IsFloat(dtypes[0])) return 1;
  const float *dv = static_cast<const float *>(params[0]);
  float *dx = static_cast<float *>(params[2]);
  const int64_t n_ = shapes[1][0], c_ = shapes[1][1], h = shapes[1][2], w = shapes[1][3];
  const int64_t th_n = (h + M - 1) / M, tw_n = (w + M - 1) / M, tiles = th_n * tw_n;
  const int64_t pw = tw_n * M + 2, ph = th_n * M + 2;
  const int64_t groups = n_ * ((c_ + kLanes - 1) / kLanes);
  packrun::ParallelFor(groups, [&](int64_t begin, int64_t end) {
    std::vector<V> pad(ph * pw), in(R * R * tiles);
    for (int64_t g = begin; g < end; ++g) {
      const Group gr(g, c_);
      ZeroIfPartial(in, gr.lanes);
      for (int s = 0; s < R * R; ++s)
        for (int64_t l = 0; l < gr.lanes; ++l) {
          const float *src = dv + ((s * c_ + gr.c0 + l) * n_ + gr.n) * tiles;
          V *dst = &in[s * tiles];
          for (int64_t t = 0; t < tiles; ++t) dst[t][l] = src[t];
        }
      std::fill(pad.begin(), pad.end(), V{});
      for (int64_t th = 0; th < th_n; ++th)
        for (int64_t tw = 0; tw < tw_n; ++tw) {
          const int64_t tile = th * tw_n + tw;
          V t[R][R];  // t[a][j] = sum_b BT[b][j] G[a][b]
#pragma GCC unroll 8
          for (int a = 0; a < R; ++a)
#pragma GCC unroll 8
            for (int j = 0; j < R; ++j) {
              V s = {};
#pragma GCC unroll 8
              for (int b = 0; b < R; ++b)
                if (Mat<M>::BT[b][j] != 0.0f) s += Mat<M>::BT[b][j] * in[(a * R + b) * tiles + tile];
              t[a][j] = s;
            }
          V *d = &pad[th * M * pw + tw * M];  // d[i][j] += sum_a BT[a][i] t[a][j]
#pragma GCC unroll 8
          for (int i = 0; i < R; ++i)
#pragma GCC unroll 8
            for (int j = 0; j < R; ++j) {
              V s = {};
#pragma GCC unroll 8
              for (int a = 0; a < R; ++a)
                if (Mat<M>::BT[a][i] != 0.0f) s += Mat<M>::BT[a][i] * t[a][j];
              d[i * pw + j] += s;
            }
        }
      for (int64_t l = 0; l < gr.lanes; ++l) {
        float *plane = dx + ((gr.n * c_ + gr.c0 + l) * h) * w;
        for (int64_t y = 0; y < h; ++y)
          for (int64_t xx = 0; xx < w; ++xx) plane[y * w + xx] = pad[(y + 1) * pw + xx + 1][l];
      }
    }
  });
  return 0;
}

// M (S, O, N, TH, TW) -> y (N, O, TH*m, TW*m)
template <int M>
int WinoOutLanes(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  constexpr int R = Mat<M>::R;
  if (nparam != 2 || ndims[0] != 5 || !packrun::IsFloat(dtypes[0])) return 1;
  const float *in = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[1]);
  const int64_t o_ = shapes[0][1], n_ = shapes[0][2], th_n = shapes[0][3], tw_n = shapes[0][4];
  const int64_t tiles = th_n * tw_n, w = tw_n * M, hw = th_n * M * w;
  const int64_t groups = n_ * ((o_ + kLanes - 1) / kLanes);
  packrun::ParallelFor(groups, [&](int64_t begin, int64_t end) {
    std::vector<V> buf(R * R * tiles), map(hw);
    for (int64_t g = begin; g < end; ++g) {
      const Group gr(g, o_);
      ZeroIfPartial(buf, gr.lanes);
      for (int s = 0; s < R * R; ++s)
        for (int64_t l = 0; l < gr.lanes; ++l) {
          const float *src = in + ((s * o_ + gr.c0 + l) * n_ + gr.n) * tiles;
          V *dst = &buf[s * tiles];
          for (int64_t t = 0; t < tiles; ++t) dst[t][l] = src[t];
        }
      for (int64_t th = 0; th < th_n; ++th)
        for (int64_t tw = 0; tw < tw_n; ++tw) {
          const int64_t tile = th * tw_n + tw;
          V t[R][M];  // t[a][q] = sum_b AT[q][b] M[a][b]
#pragma GCC unroll 8
          for (int a = 0; a < R; ++a)
#pragma GCC unroll 8
            for (int q = 0; q < M; ++q) {
              V s = {};
#pragma GCC unroll 8
              for (int b = 0; b < R; ++b)
                if (Mat<M>::AT[q][b] != 0.0f) s += Mat<M>::AT[q][b] * buf[(a * R + b) * tiles + tile];
              t[a][q] = s;
            }
          V *o = &map[th * M * w + tw * M];
#pragma GCC unroll 8
          for (int p = 0; p < M; ++p)
#pragma GCC unroll 8
            for (int q = 0; q < M; ++q) {
              V s = {};
#pragma GCC unroll 8
              for (int a = 0; a < R; ++a)
                if (Mat<M>::AT[p][a] != 0.0f) s += Mat<M>::AT[p][a] * t[a][q];
              o[p * w + q] = s;
            }
        }
      for (int64_t l = 0; l < gr.lanes; ++l) {
        float *plane = y + (gr.n * o_ + gr.c0 + l) * hw;
        for (int64_t e = 0; e < hw; ++e) plane[e] = map[e][l];
      }
    }
  });
  return 0;
}

// dy (N, O, TH*m, TW*m) -> dM (S, O, N, TH, TW)
template <int M>
int WinoOutTLanes(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
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
    for (int64_t g = begin; g < end; ++g) {
      const Group gr(g, o_);
      ZeroIfPartial(map, gr.lanes);
      for (int64_t l = 0; l < gr.lanes; ++l) {
        const float *plane = dy + (gr.n * o_ + gr.c0 + l) * hw;
        for (int64_t e = 0; e < hw; ++e) map[e][l] = plane[e];
      }
      for (int64_t th = 0; th < th_n; ++th)
        for (int64_t tw = 0; tw < tw_n; ++tw) {
          const int64_t tile = th * tw_n + tw;
          const V *gq = &map[th * M * w + tw * M];
          V t[R][M];  // t[a][q] = sum_p AT[p][a] g[p][q]
#pragma GCC unroll 8
          for (int a = 0; a < R; ++a)
#pragma GCC unroll 8
            for (int q = 0; q < M; ++q) {
              V s = {};
#pragma GCC unroll 8
              for (int p = 0; p < M; ++p)
                if (Mat<M>::AT[p][a] != 0.0f) s += Mat<M>::AT[p][a] * gq[p * w + q];
              t[a][q] = s;
            }
#pragma GCC unroll 8
          for (int a = 0; a < R; ++a)
#pragma GCC unroll 8
            for (int b = 0; b < R; ++b) {
              V s = {};
#pragma GCC unroll 8
              for (int q = 0; q < M; ++q)
                if (Mat<M>::AT[q][b] != 0.0f) s += Mat<M>::AT[q][b] * t[a][q];
              buf[(a * R + b) * tiles + tile] = s;
            }
        }
      for (int s = 0; s < R * R; ++s)
        for (int64_t l = 0; l < gr.lanes; ++l) {
          float *dst = out + ((s * o_ + gr.c0 + l) * n_ + gr.n) * tiles;
          const V *src = &buf[s * tiles];
          for (int64_t t = 0; t < tiles; ++t) dst[t] = src[t][l];
        }
    }
  });
  return 0;
}

}  // namespace

PACKRUN_EXPORT(WinoInLanes2, WinoInLanes<2>)
PACKRUN_EXPORT(WinoInLanes4, WinoInLanes<4>)
PACKRUN_EXPORT(WinoInTLanes2, WinoInTLanes<2>)
PACKRUN_EXPORT(WinoInTLanes4, WinoInTLanes<4>)
PACKRUN_EXPORT(WinoOutLanes2, WinoOutLanes<2>)
PACKRUN_EXPORT(WinoOutLanes4, WinoOutLanes<4>)
PACKRUN_EXPORT(WinoOutTLanes2, WinoOutTLanes<2>)
PACKRUN_EXPORT(WinoOutTLanes4, WinoOutTLanes<4>)
