// Whole-sequence forward + BPTT for K independent tiny recurrent networks (rnn_tanh, gru,
// lstm) with a linear head and the fixed-sigma Gaussian NLL of SCIENCE.md section 2.
//
// Why native: at H <= 32 a time step is a few thousand FLOPs per network, so a PyTorch
// loop spends its time in per-op dispatch and in scalar tanh/sigmoid. Here one call runs
// every time step, forward and backward, for every member, with the batch dimension in
// SIMD lanes and members (and batch chunks) spread over threads.
//
// Plain C ABI (no torch headers): compiles in a few seconds and is called via ctypes,
// which releases the GIL. All arrays are the caller's contiguous tensors:
//   params   exactly the (K, ...) tensors of trainers/cells.py
//   x        (K, B, T, I)    each task gathers its batch chunk into (t, i, batch-lane) order
//   y        (K, B, T-1)
//   grads    same shapes as params; loss (K,) as double
// A member's numbers depend only on its own inputs: each (member, batch chunk) task runs
// alone in one thread and chunk partials are summed in a fixed order.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <thread>
#include <vector>
#if defined(__AVX512F__) || defined(__AVX__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define FP_VBYTES 64
#else
#define FP_VBYTES 32
#endif

typedef float vf __attribute__((vector_size(FP_VBYTES)));
typedef double vd __attribute__((vector_size(FP_VBYTES)));
typedef int32_t vi __attribute__((vector_size(FP_VBYTES)));

namespace {

enum Kind { RNN_TANH = 0, GRU = 1, LSTM = 2 };

// vectors of batch per task (2 x 16 floats = 32 sequences): small enough that a task's saved
// activations (~2.6 MB at T = 256, H = 16) stay near L2, and K = 1 still fills two cores
constexpr int MAX_CB = 2;
constexpr int TT = 8;      // time steps of gate gradients gathered before the weight-grad update

template <class S> struct VecOf;
template <> struct VecOf<float> { typedef vf type; };
template <> struct VecOf<double> { typedef vd type; };

template <class V, class S> inline V splat(S s) { return V{} + s; }

// ---- elementwise nonlinearities -------------------------------------------------------
// float: Cephes-style polynomials (about 1-2 ulp, like the SLEEF kernels PyTorch uses),
// written with vector extensions so they stay in SIMD registers.
inline vf vexp(vf x) {
    const vf hi = splat<vf>(88.0f), lo = splat<vf>(-87.0f);
    x = x > hi ? hi : x;
    x = x < lo ? lo : x;
    const vf magic = splat<vf>(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
    vf n = (x * 1.44269504088896341f + magic) - magic;
    vf r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    vf p = splat<vf>(1.9875691500E-4f);
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    vf y = p * (r * r) + r + 1.0f;
    vi e = (__builtin_convertvector(n, vi) + 127) << 23;
    return y * (vf)e;
}

// 1/a: hardware estimate + one Newton step (rcp14: 2^-28 relative error; rcp: ~2^-23),
// about twice as fast as a divide, which is the slowest op in the gates.
inline vf vrcp(vf a) {
#if FP_VBYTES == 64
    vf r = (vf)_mm512_rcp14_ps((__m512)a);
#elif defined(__AVX__)
    vf r = (vf)_mm256_rcp_ps((__m256)a);
#else
    return 1.0f / a;
#endif
#if FP_VBYTES == 64 || defined(__AVX__)
    return r * (2.0f - a * r);
#endif
}

inline vf vsigmoid(vf x) { return vrcp(1.0f + vexp(-x)); }

// tanh as Eigen's rational minimax approximation (odd 13 / even 6), clamped at +-7.9053:
// |error| < 3e-7 everywhere, no exp and no cancellation near 0, ~15 ops.
inline vf vtanh(vf x) {
    const vf hi = splat<vf>(7.90531110763549805f), lo = splat<vf>(-7.90531110763549805f);
    x = x > hi ? hi : x;
    x = x < lo ? lo : x;
    const vf x2 = x * x;
    vf p = x2 * -2.76076847742355e-16f + 2.00018790482477e-13f;
    p = p * x2 + -8.60467152213735e-11f;
    p = p * x2 + 5.12229709037114e-08f;
    p = p * x2 + 1.48572235717979e-05f;
    p = p * x2 + 6.37261928875436e-04f;
    p = p * x2 + 4.89352455891786e-03f;
    p = p * x;
    vf q = x2 * 1.19825839466702e-06f + 1.18534705686654e-04f;
    q = q * x2 + 2.26843463243900e-03f;
    q = q * x2 + 4.89352518554385e-03f;
    return p * vrcp(q);
}

// double: libm per lane (the float64 path exists for exact tests, not speed)
inline vd vexp(vd x) {
    for (unsigned i = 0; i < sizeof(vd) / sizeof(double); ++i) x[i] = std::exp(x[i]);
    return x;
}
inline vd vsigmoid(vd x) { return 1.0 / (1.0 + vexp(-x)); }
inline vd vtanh(vd x) {
    for (unsigned i = 0; i < sizeof(vd) / sizeof(double); ++i) x[i] = std::tanh(x[i]);
    return x;
}

// ---- small matrix kernels, register-blocked ---------------------------------------------
// out[r][c] = (acc ? out[r][c] : bias[r] or 0) + sum_q W[r*ldw + q] * in[q][c]
template <class V, class S, int RB, int CB>
inline void mv_rows(V* out, const S* W, int ldw, const V* in, int Q, const S* bias, bool acc, int r0) {
    V a[RB][CB];
    for (int rb = 0; rb < RB; ++rb)
        for (int cb = 0; cb < CB; ++cb)
            a[rb][cb] = acc ? out[(r0 + rb) * CB + cb] : splat<V>(bias ? bias[r0 + rb] : S(0));
    for (int q = 0; q < Q; ++q) {
        V xin[CB];
        for (int cb = 0; cb < CB; ++cb) xin[cb] = in[q * CB + cb];
        for (int rb = 0; rb < RB; ++rb) {
            const S w = W[(r0 + rb) * ldw + q];
            for (int cb = 0; cb < CB; ++cb) a[rb][cb] += w * xin[cb];
        }
    }
    for (int rb = 0; rb < RB; ++rb)
        for (int cb = 0; cb < CB; ++cb) out[(r0 + rb) * CB + cb] = a[rb][cb];
}

template <class V, class S, int CB>
inline void mv_cb(V* out, const S* W, int ldw, const V* in, int R, int Q, const S* bias, bool acc) {
    constexpr int RB = CB >= 3 ? 4 : 8;  // keep ~16 accumulators live
    int r = 0;
    for (; r + RB <= R; r += RB) mv_rows<V, S, RB, CB>(out, W, ldw, in, Q, bias, acc, r);
    for (; r < R; ++r) mv_rows<V, S, 1, CB>(out, W, ldw, in, Q, bias, acc, r);
}

template <class V, class S>
inline void mv(int cb, V* out, const S* W, int ldw, const V* in, int R, int Q, const S* bias, bool acc) {
    switch (cb) {
        case 1: mv_cb<V, S, 1>(out, W, ldw, in, R, Q, bias, acc); break;
        case 2: mv_cb<V, S, 2>(out, W, ldw, in, R, Q, bias, acc); break;
        case 3: mv_cb<V, S, 3>(out, W, ldw, in, R, Q, bias, acc); break;
        default: mv_cb<V, S, 4>(out, W, ldw, in, R, Q, bias, acc); break;
    }
}

// A[r*Q + q] += sum_s sum_c D_s[r][c] * X_s[q][c] over n saved time steps s, with
// D_s = D + s * dstride. Lane-wise (lanes are folded at the very end). Batching several
// steps keeps the accumulators in registers instead of re-reading A every step.
template <class V, int RB, int QB>
inline void outer_block(V* A, int Q, const V* D, size_t dstride, const V* const* X, int n, int cb,
                        int r0, int q0) {
    V a[RB][QB];
    for (int rb = 0; rb < RB; ++rb)
        for (int qb = 0; qb < QB; ++qb) a[rb][qb] = A[(r0 + rb) * Q + q0 + qb];
    for (int s = 0; s < n; ++s) {
        const V* Ds = D + s * dstride;
        const V* Xs = X[s];
        for (int c = 0; c < cb; ++c) {
            V d[RB], x[QB];
            for (int rb = 0; rb < RB; ++rb) d[rb] = Ds[(r0 + rb) * cb + c];
            for (int qb = 0; qb < QB; ++qb) x[qb] = Xs[(q0 + qb) * cb + c];
            for (int rb = 0; rb < RB; ++rb)
                for (int qb = 0; qb < QB; ++qb) a[rb][qb] += d[rb] * x[qb];
        }
    }
    for (int rb = 0; rb < RB; ++rb)
        for (int qb = 0; qb < QB; ++qb) A[(r0 + rb) * Q + q0 + qb] = a[rb][qb];
}

template <class V>
inline void outer(V* A, const V* D, size_t dstride, int R, const V* const* X, int Q, int n, int cb) {
    int r = 0;
    for (; r + 4 <= R; r += 4) {
        int q = 0;
        for (; q + 4 <= Q; q += 4) outer_block<V, 4, 4>(A, Q, D, dstride, X, n, cb, r, q);
        for (; q < Q; ++q) outer_block<V, 4, 1>(A, Q, D, dstride, X, n, cb, r, q);
    }
    for (; r < R; ++r) {
        int q = 0;
        for (; q + 4 <= Q; q += 4) outer_block<V, 1, 4>(A, Q, D, dstride, X, n, cb, r, q);
        for (; q < Q; ++q) outer_block<V, 1, 1>(A, Q, D, dstride, X, n, cb, r, q);
    }
}

// A[r] += sum_c D[r][c]
template <class V>
inline void rowsum(V* A, const V* D, int R, int cb) {
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < cb; ++c) A[r] += D[r * cb + c];
}

template <class V, class S> inline S hsum(V v) {
    S s = 0;
    for (unsigned i = 0; i < sizeof(V) / sizeof(S); ++i) s += v[i];
    return s;
}

// ---- workspace pool: reused across calls so big buffers are not re-faulted every step ----
struct Pool {
    std::mutex mu;
    std::vector<std::pair<size_t, void*>> free_list;
    void* get(size_t bytes, size_t* got) {
        {
            std::lock_guard<std::mutex> g(mu);
            for (size_t i = 0; i < free_list.size(); ++i)
                if (free_list[i].first >= bytes) {
                    auto e = free_list[i];
                    free_list.erase(free_list.begin() + i);
                    *got = e.first;
                    return e.second;
                }
        }
        size_t rounded = (bytes + 4095) / 4096 * 4096;
        void* p = std::aligned_alloc(64, rounded);
        *got = rounded;
        return p;
    }
    void put(void* p, size_t bytes) {
        std::lock_guard<std::mutex> g(mu);
        free_list.emplace_back(bytes, p);
        if (free_list.size() > 64) {  // bound what stays cached
            std::free(free_list.front().second);
            free_list.erase(free_list.begin());
        }
    }
};
Pool& pool() {
    static Pool* p = new Pool();  // never destroyed: safe at interpreter exit
    return *p;
}

struct Dims {
    int K, B, T, I, H, G, nthreads;
    bool need_core;
    double sigma;
};

template <class S> struct Member {
    const S *w_ih, *w_hh, *b_ih, *b_hh, *head_w, *head_b, *x, *y;
};

// Offsets of each parameter in a member's flat gradient vector.
struct Layout {
    int w_ih, w_hh, b_ih, b_hh, head_w, head_b, P;
    explicit Layout(const Dims& d) {
        const int GH = d.G * d.H;
        w_ih = 0;
        w_hh = w_ih + GH * d.I;
        b_ih = w_hh + GH * d.H;
        b_hh = b_ih + GH;
        head_w = b_hh + GH;
        head_b = head_w + d.H;
        P = head_b + 1;
    }
};

// Vectors of workspace one task needs (everything in units of V).
inline size_t work_vectors(const Dims& d, int cb) {
    const size_t H = d.H, GH = size_t(d.G) * d.H, I = d.I, T1 = d.T - 1;
    size_t store = (d.G == 3 ? 5 : d.G == 4 ? 7 : 1) * T1 * H * cb;  // saved activations
    size_t per_step = T1 * (I * cb + 2 * cb);                         // x, y, dyhat
    size_t temps = 2 * GH * cb + 2 * TT * GH * cb + 4 * H * cb + 2 * cb;  // gi, gh, rings, dh, ...
    size_t accs = GH * H + GH * I + 2 * GH + H + 2;                   // lane accumulators
    return store + per_step + temps + accs;
}

template <class S, int KIND>
void run_task(const Dims& d, const Member<S>& m, int b0, int cb, void* work, S* grad, double* loss_out) {
    typedef typename VecOf<S>::type V;
    constexpr int L = sizeof(V) / sizeof(S);
    const int H = d.H, G = d.G, GH = G * H, I = d.I, T = d.T, T1 = d.T - 1;
    const int HC = H * cb;
    const Layout lay(d);

    V* p = static_cast<V*>(work);
    auto take = [&p](size_t n) { V* q = p; p += n; return q; };
    const int nstore = KIND == GRU ? 5 : KIND == LSTM ? 7 : 1;
    V* hs = take(size_t(T1) * HC);  // h_t, t = 0..T-2
    V* st = take(size_t(T1) * HC * (nstore - 1));  // gru: r z n hn; lstm: i f g o c tanh(c)
    V* xs = take(size_t(T1) * I * cb);
    V* ys = take(size_t(T1) * cb);
    V* dys = take(size_t(T1) * cb);
    V* gi = take(size_t(GH) * cb);
    V* gh = take(size_t(GH) * cb);
    V* ring_gi = take(size_t(TT) * GH * cb);  // dL/d(input pre-activations), last TT steps
    V* ring_gh = take(size_t(TT) * GH * cb);  // dL/d(recurrent pre-activations)
    const V* ring_hp[TT];
    const V* ring_x[TT];
    int nring = 0;
    V* dh = take(HC);
    V* dhn = take(HC);
    V* dc = take(HC);
    V* zero = take(HC);
    V* mask = take(cb);
    V* lossv = take(1);
    V* A_ih = take(size_t(GH) * I);
    V* A_hh = take(size_t(GH) * H);
    V* A_bih = take(GH);
    V* A_bhh = take(GH);
    V* A_hw = take(H);
    V* A_hb = take(1);
    S* WT = reinterpret_cast<S*>(p);  // (H, GH) transpose of w_hh for dh = W^T dgh

    auto S_at = [&](V* base, int which, int t) { return base + (size_t(which) * T1 + t) * HC; };

    // gather this chunk of the batch into aligned (t, row, lane) order; padding lanes are 0
    {
        S* xl = reinterpret_cast<S*>(xs);
        S* yl = reinterpret_cast<S*>(ys);
        const int CL = cb * L;
        for (int l = 0; l < CL; ++l) {
            const int b = b0 + l;
            const S* xb = m.x + size_t(b) * T * I;
            const S* yb = m.y + size_t(b) * T1;
            for (int t = 0; t < T1; ++t) {
                for (int i = 0; i < I; ++i) xl[(size_t(t) * I + i) * CL + l] = b < d.B ? xb[t * I + i] : S(0);
                yl[size_t(t) * CL + l] = b < d.B ? yb[t] : S(0);
            }
        }
    }
    for (int c = 0; c < cb; ++c)
        for (int l = 0; l < L; ++l) mask[c][l] = (b0 + c * L + l) < d.B ? S(1) : S(0);
    for (int j = 0; j < HC; ++j) zero[j] = V{};
    lossv[0] = V{};
    for (int r = 0; r < GH * I; ++r) A_ih[r] = V{};
    for (int r = 0; r < GH * H; ++r) A_hh[r] = V{};
    for (int r = 0; r < GH; ++r) A_bih[r] = A_bhh[r] = V{};
    for (int j = 0; j < H; ++j) A_hw[j] = V{};
    A_hb[0] = V{};
    for (int g = 0; g < GH; ++g)
        for (int j = 0; j < H; ++j) WT[j * GH + g] = m.w_hh[g * H + j];

    const S inv_var = S(1.0 / (d.sigma * d.sigma));
    const S dscale = S(1.0 / (d.sigma * d.sigma * double(d.B) * double(T1)));
    const S hb = m.head_b[0];

    // ---------------- forward ----------------
    for (int t = 0; t < T1; ++t) {
        const V* hp = t ? hs + size_t(t - 1) * HC : zero;
        V* h = hs + size_t(t) * HC;
        mv<V, S>(cb, gi, m.w_ih, I, xs + size_t(t) * I * cb, GH, I, m.b_ih, false);
        if (KIND == GRU) {
            mv<V, S>(cb, gh, m.w_hh, H, hp, GH, H, m.b_hh, false);
            V *r = S_at(st, 0, t), *z = S_at(st, 1, t), *n = S_at(st, 2, t), *hn = S_at(st, 3, t);
            for (int j = 0; j < HC; ++j) {
                r[j] = vsigmoid(gi[j] + gh[j]);
                z[j] = vsigmoid(gi[HC + j] + gh[HC + j]);
                hn[j] = gh[2 * HC + j];
                n[j] = vtanh(gi[2 * HC + j] + r[j] * hn[j]);
                h[j] = (1.0f - z[j]) * n[j] + z[j] * hp[j];
            }
        } else if (KIND == LSTM) {
            mv<V, S>(cb, gi, m.w_hh, H, hp, GH, H, nullptr, true);  // gi += W_hh h; b_hh below
            const V* cp = t ? S_at(st, 4, t - 1) : zero;
            V *ig = S_at(st, 0, t), *fg = S_at(st, 1, t), *gg = S_at(st, 2, t), *og = S_at(st, 3, t);
            V *cc = S_at(st, 4, t), *tc = S_at(st, 5, t);
            for (int j = 0; j < HC; ++j) {
                const int row = j / cb;  // bias of w_hh was not added by the accumulate call
                ig[j] = vsigmoid(gi[j] + m.b_hh[row]);
                fg[j] = vsigmoid(gi[HC + j] + m.b_hh[H + row]);
                gg[j] = vtanh(gi[2 * HC + j] + m.b_hh[2 * H + row]);
                og[j] = vsigmoid(gi[3 * HC + j] + m.b_hh[3 * H + row]);
                cc[j] = fg[j] * cp[j] + ig[j] * gg[j];
                tc[j] = vtanh(cc[j]);
                h[j] = og[j] * tc[j];
            }
        } else {
            mv<V, S>(cb, gi, m.w_hh, H, hp, GH, H, nullptr, true);
            for (int j = 0; j < HC; ++j) h[j] = vtanh(gi[j] + m.b_hh[j / cb]);
        }
        // head, loss and d loss / d yhat
        V* dy = dys + size_t(t) * cb;
        for (int c = 0; c < cb; ++c) {
            V yh = splat<V>(hb);
            for (int j = 0; j < H; ++j) yh += m.head_w[j] * h[j * cb + c];
            V err = (yh - ys[size_t(t) * cb + c]) * mask[c];
            lossv[0] += err * err;
            dy[c] = err * dscale;
            A_hb[0] += dy[c];
        }
        for (int j = 0; j < H; ++j)
            for (int c = 0; c < cb; ++c) A_hw[j] += dy[c] * h[j * cb + c];
    }

    // ---------------- backward through time ----------------
    if (d.need_core) {
        for (int j = 0; j < HC; ++j) dhn[j] = V{}, dc[j] = V{};
        for (int t = T1 - 1; t >= 0; --t) {
            const V* hp = t ? hs + size_t(t - 1) * HC : zero;
            const V* dy = dys + size_t(t) * cb;
            V* dgh = ring_gh + size_t(nring) * GH * cb;
            V* dgi = KIND == GRU ? ring_gi + size_t(nring) * GH * cb : dgh;
            for (int j = 0; j < H; ++j)
                for (int c = 0; c < cb; ++c) dh[j * cb + c] = dhn[j * cb + c] + m.head_w[j] * dy[c];
            if (KIND == GRU) {
                const V *r = S_at(st, 0, t), *z = S_at(st, 1, t), *n = S_at(st, 2, t), *hn = S_at(st, 3, t);
                for (int j = 0; j < HC; ++j) {
                    V dn = dh[j] * (1.0f - z[j]);
                    V dz = dh[j] * (hp[j] - n[j]);
                    V dan = dn * (1.0f - n[j] * n[j]);
                    V dar = dan * hn[j] * r[j] * (1.0f - r[j]);
                    V daz = dz * z[j] * (1.0f - z[j]);
                    dgi[j] = dgh[j] = dar;
                    dgi[HC + j] = dgh[HC + j] = daz;
                    dgi[2 * HC + j] = dan;
                    dgh[2 * HC + j] = dan * r[j];
                    dhn[j] = dh[j] * z[j];
                }
            } else if (KIND == LSTM) {
                const V* cp = t ? S_at(st, 4, t - 1) : zero;
                const V *ig = S_at(st, 0, t), *fg = S_at(st, 1, t), *gg = S_at(st, 2, t), *og = S_at(st, 3, t);
                const V* tc = S_at(st, 5, t);
                for (int j = 0; j < HC; ++j) {
                    V dct = dc[j] + dh[j] * og[j] * (1.0f - tc[j] * tc[j]);
                    V dao = dh[j] * tc[j] * og[j] * (1.0f - og[j]);
                    V dai = dct * gg[j] * ig[j] * (1.0f - ig[j]);
                    V daf = dct * cp[j] * fg[j] * (1.0f - fg[j]);
                    V dag = dct * ig[j] * (1.0f - gg[j] * gg[j]);
                    dc[j] = dct * fg[j];
                    dgh[j] = dai;
                    dgh[HC + j] = daf;
                    dgh[2 * HC + j] = dag;
                    dgh[3 * HC + j] = dao;
                    dhn[j] = V{};
                }
            } else {
                const V* h = hs + size_t(t) * HC;
                for (int j = 0; j < HC; ++j) {
                    dgh[j] = dh[j] * (1.0f - h[j] * h[j]);
                    dhn[j] = V{};
                }
            }
            rowsum<V>(A_bih, dgi, GH, cb);
            rowsum<V>(A_bhh, dgh, GH, cb);
            if (t) mv<V, S>(cb, dhn, WT, GH, dgh, H, GH, nullptr, true);  // dh_{t-1} += W^T dgh
            ring_hp[nring] = hp;  // zeros at t = 0: contributes nothing
            ring_x[nring] = xs + size_t(t) * I * cb;
            if (++nring == TT || t == 0) {
                const size_t stride = size_t(GH) * cb;
                outer<V>(A_hh, ring_gh, stride, GH, ring_hp, H, nring, cb);
                outer<V>(A_ih, KIND == GRU ? ring_gi : ring_gh, stride, GH, ring_x, I, nring, cb);
                nring = 0;
            }
        }
    }

    // ---------------- fold lanes into this task's gradient vector ----------------
    for (int r = 0; r < GH * I; ++r) grad[lay.w_ih + r] = hsum<V, S>(A_ih[r]);
    for (int r = 0; r < GH * H; ++r) grad[lay.w_hh + r] = hsum<V, S>(A_hh[r]);
    for (int r = 0; r < GH; ++r) grad[lay.b_ih + r] = hsum<V, S>(A_bih[r]);
    for (int r = 0; r < GH; ++r) grad[lay.b_hh + r] = hsum<V, S>(A_bhh[r]);
    for (int j = 0; j < H; ++j) grad[lay.head_w + j] = hsum<V, S>(A_hw[j]);
    grad[lay.head_b] = hsum<V, S>(A_hb[0]);
    double sq = 0;
    for (int l = 0; l < L; ++l) sq += double(lossv[0][l]);
    *loss_out = sq * double(inv_var);
}

template <class S>
int run_all(int kind, const Dims& d, const S* w_ih, const S* w_hh, const S* b_ih, const S* b_hh,
            const S* head_w, const S* head_b, const S* x, const S* y, double* loss, S* g_w_ih,
            S* g_w_hh, S* g_b_ih, S* g_b_hh, S* g_head_w, S* g_head_b) {
    typedef typename VecOf<S>::type V;
    constexpr int L = sizeof(V) / sizeof(S);
    const int nvec = (d.B + L - 1) / L;
    const int nchunks = (nvec + MAX_CB - 1) / MAX_CB;
    const int GH = d.G * d.H, T1 = d.T - 1;
    const Layout lay(d);
    const int ntasks = d.K * nchunks;
    std::vector<S> partial(size_t(ntasks) * lay.P);
    std::vector<double> partial_loss(ntasks);
    const size_t wbytes = work_vectors(d, MAX_CB) * sizeof(V) + sizeof(S) * size_t(GH) * d.H + 64;

    std::atomic<int> next(0);
    std::atomic<int> failed(0);
    auto worker = [&]() {
        size_t got = 0;
        void* work = pool().get(wbytes, &got);
        if (!work) { failed = 1; return; }
        for (int task; (task = next.fetch_add(1)) < ntasks;) {
            const int k = task / nchunks, ch = task % nchunks;
            const int cb = std::min(MAX_CB, nvec - ch * MAX_CB);
            Member<S> m{w_ih + size_t(k) * GH * d.I, w_hh + size_t(k) * GH * d.H, b_ih + size_t(k) * GH,
                        b_hh + size_t(k) * GH, head_w + size_t(k) * d.H, head_b + k,
                        x + size_t(k) * d.B * d.T * d.I, y + size_t(k) * d.B * T1};
            S* gp = partial.data() + size_t(task) * lay.P;
            double* lp = partial_loss.data() + task;
            switch (kind) {
                case GRU: run_task<S, GRU>(d, m, ch * MAX_CB * L, cb, work, gp, lp); break;
                case LSTM: run_task<S, LSTM>(d, m, ch * MAX_CB * L, cb, work, gp, lp); break;
                default: run_task<S, RNN_TANH>(d, m, ch * MAX_CB * L, cb, work, gp, lp); break;
            }
        }
        pool().put(work, got);
    };
    const int nt = std::max(1, std::min(d.nthreads, ntasks));
    std::vector<std::thread> threads;
    for (int i = 1; i < nt; ++i) threads.emplace_back(worker);
    worker();
    for (auto& th : threads) th.join();
    if (failed) return 3;

    // chunk partials are summed in chunk order: deterministic, independent of thread timing
    const double c0 = 0.5 * std::log(2.0 * 3.14159265358979323846 * d.sigma * d.sigma);
    for (int k = 0; k < d.K; ++k) {
        double ls = 0;
        std::vector<S> g(lay.P, S(0));
        for (int ch = 0; ch < nchunks; ++ch) {
            const S* gp = partial.data() + size_t(k * nchunks + ch) * lay.P;
            for (int i = 0; i < lay.P; ++i) g[i] += gp[i];
            ls += partial_loss[k * nchunks + ch];
        }
        loss[k] = 0.5 * ls / (double(d.B) * T1) + c0;
        std::memcpy(g_w_ih + size_t(k) * GH * d.I, g.data() + lay.w_ih, sizeof(S) * GH * d.I);
        std::memcpy(g_w_hh + size_t(k) * GH * d.H, g.data() + lay.w_hh, sizeof(S) * GH * d.H);
        std::memcpy(g_b_ih + size_t(k) * GH, g.data() + lay.b_ih, sizeof(S) * GH);
        std::memcpy(g_b_hh + size_t(k) * GH, g.data() + lay.b_hh, sizeof(S) * GH);
        std::memcpy(g_head_w + size_t(k) * d.H, g.data() + lay.head_w, sizeof(S) * d.H);
        g_head_b[k] = g[lay.head_b];
    }
    return 0;
}

}  // namespace

extern "C" {

// Lanes per SIMD vector for an element size (4: float, 8: double).
int fp_lanes(int elem_size) { return FP_VBYTES / elem_size; }

int fp_abi_version() { return 2; }

// Returns 0 on success; 1 bad arguments, 3 out of memory.
int fp_loss_and_grads(int kind, int elem_size, int K, int B, int T, int I, int H, int nthreads,
                      int need_core, double sigma, const void* w_ih, const void* w_hh, const void* b_ih,
                      const void* b_hh, const void* head_w, const void* head_b, const void* x,
                      const void* y, double* loss, void* g_w_ih, void* g_w_hh, void* g_b_ih,
                      void* g_b_hh, void* g_head_w, void* g_head_b) {
    if (kind < 0 || kind > 2 || K < 1 || B < 1 || T < 2 || I < 1 || H < 1) return 1;
    Dims d{K, B, T, I, H, kind == GRU ? 3 : kind == LSTM ? 4 : 1, nthreads, need_core != 0, sigma};
    try {
        if (elem_size == 4)
            return run_all<float>(kind, d, (const float*)w_ih, (const float*)w_hh, (const float*)b_ih,
                                  (const float*)b_hh, (const float*)head_w, (const float*)head_b,
                                  (const float*)x, (const float*)y, loss, (float*)g_w_ih, (float*)g_w_hh,
                                  (float*)g_b_ih, (float*)g_b_hh, (float*)g_head_w, (float*)g_head_b);
        if (elem_size == 8)
            return run_all<double>(kind, d, (const double*)w_ih, (const double*)w_hh, (const double*)b_ih,
                                   (const double*)b_hh, (const double*)head_w, (const double*)head_b,
                                   (const double*)x, (const double*)y, loss, (double*)g_w_ih,
                                   (double*)g_w_hh, (double*)g_b_ih, (double*)g_b_hh, (double*)g_head_w,
                                   (double*)g_head_b);
    } catch (const std::bad_alloc&) {
        return 3;
    }
    return 1;
}

}  // extern "C"
