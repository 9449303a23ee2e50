/* Streaming softmax over candidate patches in the displacement form.
 *
 * docs/theory.md, "The score machines" and "How it computes". For a query pixel q and
 * a candidate pixel p = q + d of training image n, the logit is
 *
 *     -|P_q(x) - a P_p(Y_n)|^2 / (2 s^2) = -sum_{w in window} sum_c (x_c[q+w] - a Y_nc[q+d+w])^2 / (2 s^2).
 *
 * For a fixed displacement d, the image of squared differences D_d(r) = sum_c (x_c[r] - a Y_nc[r+d])^2
 * and two k-term box sums (down the columns, then along the rows) give this distance for every
 * q at once, so the work per (query, candidate) pair does not grow with the patch area. The
 * distance is summed from its own squared differences: rounding is relative to the distance,
 * not to the norms of the patches, so nothing cancels when s is small late in sampling.
 *
 * The training images are processed NB at a time, laid out with the image index fastest
 * ([block][row][col][channel][NB]): every inner loop is NB lanes long, with no remainder.
 * The softmax is streamed per query pixel: running max m, l = sum exp(logit - m),
 * acc_c = sum exp(logit - m) Y_nc[p], and for the trace u = sum exp(logit - m) (logit - m)
 * and the top candidate. The max is raised only when a block's max exceeds it by more than
 * LAZY, so terms stay below e^LAZY and rescaling is rare.
 *
 * Candidate sets are groups: a rectangle of query pixels, a rectangle of displacements and a
 * rectangle of allowed candidate pixels (coordinates of the candidate arrays); groups may share
 * query pixels as long as no (query, candidate) pair is in two of them. Zero-padded ELS: per
 * axis, displacement 0 over every index and nonzero displacements over the interior, so at
 * most 3 x 3 groups. Circular ELS: the candidate arrays are periodic extensions, every
 * displacement 0..H-1 x 0..W-1 taken once. LS: displacement 0 over the whole image.
 *
 * els_stream takes one patch size; els_stream_sizes takes several at once and computes each
 * product image once for all of them (calibration; see run_sizes).
 *
 * Compiled twice from this file: REAL = float, and REAL = double with -DELS_DOUBLE.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define NB 64

/* The arguments of els_stream_f32 / els_stream_f64, declared once: the Python side
 * (engines/native.py) reads this declaration to lay out its copy, so keep one field per line.
 * Real arrays are float or double as the function's suffix says. */
typedef struct {
    const void *x;          /* [B][C][HX][WX] query images, pixel (i, j) at (i + ox, j + ox) */
    int b;
    int hx;
    int wx;
    int ox;
    const void *y;          /* [ceil(N / NB)][HY][WY][C][NB] candidate images in blocks of NB */
    int n;                  /* images in y; lanes past n in the last block are ignored */
    int hy;
    int wy;
    int oy;                 /* pixel (i, j) of a candidate image at (i + oy, j + oy) */
    int c;
    int k;                  /* odd patch size */
    const void *a;          /* [B] signal scale a(t) per query image */
    const void *inv2s2;     /* [B] 1 / (2 s(t)^2) per query image */
    const int *groups;      /* [G][12] query, displacement and candidate rectangles (inclusive) */
    int g;
    int h;                  /* image height and width */
    int w;
    double *m;              /* state, updated in place: [B][H][W] running max */
    double *l;              /* [B][H][W] sum of weights relative to m */
    double *u;              /* [B][H][W] sum of weight * (logit - m) */
    double *tl;             /* [B][H][W] best logit */
    double *acc;            /* [B][C][H][W] weighted sum of candidate centre pixels */
    int64_t *tn;            /* [B][H][W] best candidate's image (+ n_offset), or NULL: no trace */
    int64_t *tp;            /* [B][H][W] best candidate's flat source pixel, or NULL */
    int64_t n_offset;       /* index of y's first image in the caller's stream */
    int nthreads;
    int nk;                 /* els_stream_sizes: number of patch sizes (k: the largest) */
    const int *ks;          /* [nk] the sizes, increasing */
    const int *gk;          /* [nk + 1] size j's groups are groups[gk[j] .. gk[j + 1]) */
} els_args;

/* At most this many sizes in one els_stream_sizes call: they sit in small arrays on the stack. */
#define MAX_SIZES 128
#ifndef ELS_DOUBLE
/* The block size, so the Python side lays out candidate blocks with the kernel's own. */
int els_block_size(void) { return NB; }
int els_max_sizes(void) { return MAX_SIZES; }
#endif
/* From this window size on, window sums go by segments (see run_item), a few operations a sum
 * instead of k. */
#ifndef SEG_MIN_K
#define SEG_MIN_K 7
#endif

#if defined(ELS_DOUBLE)
typedef double REAL;
#define SUFFIX _f64
#define EXP_FLOOR (-708.0)
#define SKIP EXP_FLOOR /* float64 is the reference path: skip only what underflows */
#define LAZY 20.0
#define WSCALE 1.0 /* lane_weight takes its argument in natural units */
/* Weight e^z of a lane with z = d c1 + c0 = logit - m, floored where exp underflows anyway;
 * *z_out gets z for the entropy. */
static inline double lane_weight(double d, double c1, double c0, double *z_out) {
    double z = d * c1 + c0;
    z = z > EXP_FLOOR ? z : EXP_FLOOR;
    *z_out = z;
    return exp(z);
}
#else
typedef float REAL;
#define SUFFIX _f32
/* A block whose best logit is 40 below the running max adds less than e^-40 = 4e-18 of it per
 * lane; even 10^7 such lanes change the sum by 4e-11 of itself, far below float32 rounding. */
#define SKIP (-40.0f)
#define LAZY 8.0f
/* 2^t = 2^n 2^f with n = t rounded to the nearest integer (by the 1.5 * 2^23 shift, whose low
 * mantissa bits then hold n) and f = t - n in [-1/2, 1/2] (exact); 2^f = 1 + f P(f), P of degree
 * 5 fitted for least relative error (0.93 ulp in float32 arithmetic), and 2^n is added to the
 * exponent bits. For t >= -125, where the result is a normal float. Written so the compiler
 * vectorises the loops that call it (a libm call would not be). */
static inline __attribute__((always_inline)) float exp2t(float t) {
    float tm = t + 12582912.0f;
    float f = t - (tm - 12582912.0f);
    float p = 1.5356125368271023e-4f;
    p = fmaf(p, f, 1.3398815644904971e-3f);
    p = fmaf(p, f, 9.618427604436874e-3f);
    p = fmaf(p, f, 5.5503327399492264e-2f);
    p = fmaf(p, f, 2.4022647738456726e-1f);
    p = fmaf(p, f, 6.931471824645996e-1f);
    p = fmaf(p, f, 1.0f);
    int32_t pb, nb;
    memcpy(&pb, &p, sizeof pb);
    memcpy(&nb, &tm, sizeof nb);
    pb += (int32_t)((uint32_t)nb << 23);
    memcpy(&p, &pb, sizeof p);
    return p;
}
#define WSCALE 1.44269504088896341f /* lane_weight takes its argument in base 2 */
/* Weight 2^t of a lane with t = d c1 + c0 = (logit - m) log2(e), one fma; floored at -125
 * (2^-125 ~ e^-86.6, nothing a sum of weights >= 1 can hold). *z_out gets logit - m for the
 * entropy. */
static inline __attribute__((always_inline)) float lane_weight(float d, float c1, float c0, float *z_out) {
    float t = fmaf(d, c1, c0);
    t = t > -125.0f ? t : -125.0f;
    *z_out = t * 0.693147180559945309f;
    return exp2t(t);
}
#endif

#define FN(name) CAT(name, SUFFIX)

typedef double ACC; /* running sums: see state_t */

/* exp for the rare scalar rescales and merges, whose arguments may lie below the floor. */
static inline ACC FN(exp_or_zero)(ACC x) { return x < -708.0 ? 0.0 : exp(x); }

/* Running softmax state of Q query pixels: planes m, l, u, top logit, C planes of acc, and
 * (trace) top image and top source pixel. Kept in double whatever REAL is: a query meets
 * up to millions of blocks, and float sums of that many terms drift by 1e-4. */
typedef struct {
    ACC *m, *l, *u, *tl, *acc;
    int64_t *tn, *tp;
} FN(state_t);

static void FN(state_view)(FN(state_t) *s, ACC *buf, int64_t *ibuf, size_t Q, int trace) {
    s->m = buf;
    s->l = buf + Q;
    s->u = buf + 2 * Q;
    s->tl = buf + 3 * Q;
    s->acc = buf + 4 * Q;
    s->tn = trace ? ibuf : NULL;
    s->tp = trace ? ibuf + Q : NULL;
}

static void FN(state_init)(FN(state_t) *s, size_t Q, int C, int trace) {
    for (size_t i = 0; i < Q; i++) {
        s->m[i] = -INFINITY;
        s->l[i] = 0;
        s->u[i] = 0;
        s->tl[i] = -INFINITY;
    }
    memset(s->acc, 0, sizeof(ACC) * Q * C);
    if (trace) {
        memset(s->tn, 0, sizeof(int64_t) * Q);
        memset(s->tp, 0, sizeof(int64_t) * Q);
    }
}

/* Merge entry ib of state b into entry ia of state a: the exact log-sum-exp merge. */
static inline void FN(merge_one)(FN(state_t) *a, size_t ia, size_t Qa, const FN(state_t) *b, size_t ib, size_t Qb,
                                 int C, int trace) {
    ACC mb = b->m[ib];
    if (mb == -INFINITY) return;
    ACC ma = a->m[ia];
    ACC m = ma > mb ? ma : mb;
    ACC fa = ma == -INFINITY ? 0 : FN(exp_or_zero)(ma - m);
    ACC fb = FN(exp_or_zero)(mb - m);
    ACC sa = ma == -INFINITY ? 0 : (ma - m), sb = mb - m;
    a->u[ia] = fa * (a->u[ia] + sa * a->l[ia]) + fb * (b->u[ib] + sb * b->l[ib]);
    a->l[ia] = fa * a->l[ia] + fb * b->l[ib];
    for (int c = 0; c < C; c++) a->acc[c * Qa + ia] = fa * a->acc[c * Qa + ia] + fb * b->acc[c * Qb + ib];
    a->m[ia] = m;
    if (trace && b->tl[ib] > a->tl[ia]) {
        a->tl[ia] = b->tl[ib];
        a->tn[ia] = b->tn[ib];
        a->tp[ia] = b->tp[ib];
    }
}

/* L <- exp(-L / (2 s^2) - m) lane by lane, L holding distance sums (with ``masked``, lanes past
 * ``valid`` get exactly 0), with the sum of the weights and, when ``with_u``, the sum of
 * weight * (logit - m) that the entropy needs. Both flags are constants at every call, so each
 * call compiles to its own loop. omp simd lets the reductions run in vector lanes (plain C fixes
 * their order). */
static inline void FN(exp_lanes)(REAL *L, REAL mn, REAL ninv2s2, REAL dm, int valid, const int masked,
                                 const int with_u, REAL *sum_out, REAL *u_out) {
    /* logit - m = (L - mn) ninv2s2 + dm. Lanes past N (infinite distance) land on the floor of
     * lane_weight; ``masked`` makes them exactly 0. */
    const REAL c1 = ninv2s2 * WSCALE, c0 = dm * WSCALE;
    REAL sum = 0, us = 0;
#pragma omp simd reduction(+ : sum, us)
    for (int v = 0; v < NB; v++) {
        REAL z;
        REAL e = lane_weight(L[v] - mn, c1, c0, &z);
        if (masked) e = v < valid ? e : (REAL)0;
        L[v] = e;
        sum += e;
        if (with_u) us += e * z;
    }
    *sum_out = sum;
    *u_out = us;
}

/* One query pixel's update with one block of NB candidate distance sums L (logit = L * ninv2s2;
 * values V: [C][NB]).
 * ``valid`` lanes (a prefix) are real images; the rest of a final block weigh exactly 0. */
static inline void FN(update)(FN(state_t) *st, size_t q, size_t Q, int C, REAL *L, REAL ninv2s2, const REAL *V,
                              int valid, int trace, int64_t n_base, int64_t pix) {
    /* omp simd lets the reductions run in vector lanes (plain C fixes their order). */
    REAL mn = INFINITY;
#pragma omp simd reduction(min : mn)
    for (int v = 0; v < NB; v++) mn = L[v] < mn ? L[v] : mn;
    const REAL mx = mn * ninv2s2; /* the best logit, rounded as each lane's own would be */
    REAL m = (REAL)st->m[q]; /* always a value some logit took, so exact in REAL */
    if (mx - m > LAZY || m == -INFINITY) {
        ACC f = m == -INFINITY ? 0 : FN(exp_or_zero)((ACC)m - mx);
        ACC sh = m == -INFINITY ? 0 : (ACC)m - mx;
        st->u[q] = f * (st->u[q] + sh * st->l[q]);
        st->l[q] *= f;
        for (int c = 0; c < C; c++) st->acc[c * Q + q] *= f;
        st->m[q] = m = mx;
    }
    /* A block whose best weight is below e^SKIP of the running max adds nothing a float can
     * hold (and m <= top logit, so it cannot hold the trace's top either). */
    if (mx - m < SKIP) return;
    if (trace && mx > st->tl[q]) {
        int best = 0;
        for (int v = 1; v < valid; v++)
            if (L[v] < L[best]) best = v;
        st->tl[q] = mx;
        st->tn[q] = n_base + best;
        st->tp[q] = pix;
    }
    /* logit - m = (L - mn) ninv2s2 + (mx - m): the distance is taken relative to the block's
     * nearest before scaling, so no large logit cancels against a large max. */
    const REAL dm = mx - m;
    REAL sum = 0, us = 0;
    /* Lanes past N exist in the last block only: every other block skips clearing them. */
    if (trace) {
        if (valid == NB) FN(exp_lanes)(L, mn, ninv2s2, dm, valid, 0, 1, &sum, &us);
        else FN(exp_lanes)(L, mn, ninv2s2, dm, valid, 1, 1, &sum, &us);
        st->u[q] += (ACC)us;
    } else {
        if (valid == NB) FN(exp_lanes)(L, mn, ninv2s2, dm, valid, 0, 0, &sum, &us);
        else FN(exp_lanes)(L, mn, ninv2s2, dm, valid, 1, 0, &sum, &us);
    }
    st->l[q] += (ACC)sum;
    for (int c = 0; c < C; c++) {
        const REAL *Vc = V + (size_t)c * NB;
        REAL w = 0;
#pragma omp simd reduction(+ : w)
        for (int v = 0; v < NB; v++) w += L[v] * Vc[v];
        st->acc[c * Q + q] += (ACC)w;
    }
}

/* Distance sums of one query pixel from its window sum S (+ S2) over NB lanes, and the update. */
static inline __attribute__((always_inline)) void FN(emit)(FN(state_t) *st, size_t q, size_t Q, int C, REAL *L,
                                                          const REAL *S, const REAL *S2, REAL inv2s2,
                                                          const REAL *vals, int valid, int trace, int64_t n_base,
                                                          int64_t pix) {
    if (S2)
        for (int v = 0; v < NB; v++) L[v] = S[v] + S2[v];
    else
        for (int v = 0; v < NB; v++) L[v] = S[v];
    for (int v = valid; v < NB; v++) L[v] = INFINITY; /* lanes past N */
    FN(update)(st, q, Q, C, L, -inv2s2, vals, valid, trace, n_base, pix);
}

/* Suffix sums, in place, of rows [0, n) of ``seg`` (each ``len`` long): seg[i] <- sum_{i' >= i} seg[i']. */
static inline void FN(suffix_sums)(REAL *seg, int n, size_t len) {
    for (int i = n - 2; i >= 0; i--) {
        REAL *a = seg + (size_t)i * len;
        const REAL *b = a + len;
        for (size_t t = 0; t < len; t++) a[t] += b[t];
    }
}

/* Elementwise arithmetic on rows of n entries, kept out of line: inlined into the kernel's loop
 * nests, these loops lose their pointers to the stack and reload them at every iteration. The
 * rows never overlap. */
static __attribute__((noinline)) void FN(rows_add)(REAL *restrict a, const REAL *restrict b, size_t n) {
    for (size_t t = 0; t < n; t++) a[t] += b[t];
}

static __attribute__((noinline)) void FN(rows_sum2)(REAL *restrict o, const REAL *restrict a, const REAL *restrict b,
                                                    size_t n) {
    for (size_t t = 0; t < n; t++) o[t] = a[t] + b[t];
}

static __attribute__((noinline)) void FN(rows_sum3)(REAL *restrict o, const REAL *restrict a, const REAL *restrict b,
                                                    const REAL *restrict c, size_t n) {
    for (size_t t = 0; t < n; t++) o[t] = (a[t] + b[t]) + c[t];
}

static __attribute__((noinline)) void FN(rows_sum5)(REAL *restrict o, const REAL *restrict a, const REAL *restrict b,
                                                    const REAL *restrict c, const REAL *restrict d,
                                                    const REAL *restrict e, size_t n) {
    for (size_t t = 0; t < n; t++) o[t] = ((a[t] + b[t]) + (c[t] + d[t])) + e[t];
}

/* a += b + c (a size's column sums grown by the two rows entering its window). */
static __attribute__((noinline)) void FN(rows_grow)(REAL *restrict a, const REAL *restrict b, const REAL *restrict c,
                                                    size_t n) {
    for (size_t t = 0; t < n; t++) a[t] += b[t] + c[t];
}

/* suffix_sums of whole rows of the column pass. */
static __attribute__((noinline)) void FN(suffix_rows)(REAL *seg, int n, size_t len) {
    for (int i = n - 2; i >= 0; i--) FN(rows_add)(seg + (size_t)i * len, seg + (size_t)(i + 1) * len, len);
}

/* One row of the squared-difference image: D[j][v] = sum_c (x_c[j] - a y_vc[j])^2 for j < nc,
 * x the query row (channel planes planeX apart), y the candidate row ([j][C][NB]). */
static inline __attribute__((always_inline)) void FN(product_row)(REAL *D, const REAL *xr, const REAL *yr, int nc,
                                                                 int C, REAL a, size_t planeX, size_t pixY) {
    for (int j = 0; j < nc; j++) {
        REAL *Dj = D + (size_t)j * NB;
        const REAL *y = yr + (size_t)j * pixY;
        const REAL x0 = xr[j];
        for (int v = 0; v < NB; v++) {
            REAL e = x0 - a * y[v];
            Dj[v] = e * e;
        }
        for (int c = 1; c < C; c++) {
            const REAL xc = xr[j + c * planeX];
            const REAL *yc = y + (size_t)c * NB;
            for (int v = 0; v < NB; v++) {
                REAL e = xc - a * yc[v];
                Dj[v] += e * e;
            }
        }
    }
}

/* Along one row of column sums Vw [nc][NB] (nc = outputs + 2h): the window sums of k columns
 * and the update of each output's query pixel. Output j is state entry q0 + j, its candidate's
 * values vals0 + j * pixY and its (trace) source pixel prow + (pc0 + j) mod W. For
 * k >= SEG_MIN_K, by segments of k columns, and Vw is rewritten into suffix sums one segment
 * ahead of the prefix that reads its original values; L and T are [NB] scratch. */
static inline __attribute__((always_inline)) void FN(row_pass)(FN(state_t) *st, size_t Q, int C, REAL *Vw, int nc,
                                                              int k, REAL *L, REAL *T, REAL inv2s2, size_t q0,
                                                              const REAL *vals0, size_t pixY, int valid, int trace,
                                                              int64_t n_base, int64_t prow, int pc0, int W) {
#define EMIT(j, S, S2)                                                                                     \
    FN(emit)(st, q0 + (j), Q, C, L, (S), (S2), inv2s2, vals0 + (size_t)(j) * pixY, valid, trace, n_base,  \
             trace ? prow + (((pc0 + (j)) % W) + W) % W : 0)
    const int nout = nc - 2 * (k / 2);
    if (k >= SEG_MIN_K) {
        FN(suffix_sums)(Vw, k < nc ? k : nc, NB);
        for (int j0 = 0; j0 < nout; j0 += k) {
            EMIT(j0, Vw + (size_t)j0 * NB, NULL);
            for (int v = 0; v < NB; v++) T[v] = 0;
            for (int o = 1; o < k && j0 + o < nout; o++) {
                const REAL *Vn = Vw + (size_t)(j0 + k + o - 1) * NB;
                for (int v = 0; v < NB; v++) T[v] += Vn[v];
                EMIT(j0 + o, Vw + (size_t)(j0 + o) * NB, T);
            }
            const int n1 = nc - (j0 + k) < k ? nc - (j0 + k) : k;
            if (n1 > 0) FN(suffix_sums)(Vw + (size_t)(j0 + k) * NB, n1, NB);
        }
        return;
    }
    for (int j = 0; j < nout; j++) {
        const REAL *V0 = Vw + (size_t)j * NB;
        if (k == 1) {
            EMIT(j, V0, NULL);
        } else if (k == 5) {
            const REAL *V1 = V0 + NB, *V2 = V0 + 2 * NB, *V3 = V0 + 3 * NB;
            for (int v = 0; v < NB; v++) T[v] = (V0[v] + V1[v]) + (V2[v] + V3[v]);
            EMIT(j, T, V0 + 4 * NB);
        } else if (k == 3) {
            const REAL *V1 = V0 + NB, *V2 = V0 + 2 * NB;
            for (int v = 0; v < NB; v++) T[v] = V0[v] + V1[v];
            EMIT(j, T, V2);
        } else {
            for (int v = 0; v < NB; v++) T[v] = V0[v];
            for (int w = 1; w < k - 1; w++) {
                const REAL *Vx = V0 + (size_t)w * NB;
                for (int v = 0; v < NB; v++) T[v] += Vx[v];
            }
            EMIT(j, T, V0 + (size_t)(k - 1) * NB);
        }
    }
#undef EMIT
}

/* How many parts each query image's candidate blocks are cut into, so all threads have work even
 * at batch 1, as flash-decoding splits the keys; the partial softmaxes are merged after. */
static int split_count(int nthreads, int B, int nblocks) {
    int nsplit = (int)((4L * nthreads + B - 1) / B);
    if (nsplit > nblocks) nsplit = nblocks;
    return nsplit < 1 ? 1 : nsplit;
}

/* The caller's state (els_args m, l, u, tl, acc, tn, tp) at slot ``at`` of HW query pixels. */
static void FN(caller_state)(FN(state_t) *s, const els_args *p, size_t at, size_t HW, int C, int trace) {
    s->m = p->m + HW * at;
    s->l = p->l + HW * at;
    s->u = p->u + HW * at;
    s->tl = p->tl + HW * at;
    s->acc = p->acc + HW * C * at;
    s->tn = trace ? p->tn + HW * at : NULL;
    s->tp = trace ? p->tp + HW * at : NULL;
}

/* One group, one query image, candidate blocks [blk0, blk1), into a local state over the query
 * rectangle. Y: [nblocks][HY][WY][C][NB]; X: [C][HX][WX].
 *
 * Window sums of k terms, down the columns and then along the rows: for k < SEG_MIN_K summed
 * afresh; for larger k by segments of k (van Herk / Gil-Werman): a window starting at offset
 * o of a segment is the suffix sum of that segment from o plus the prefix sum of the next
 * segment up to o - 1, so each sum costs a few additions whatever k, and, unlike running sums
 * (add the newest, subtract the oldest), adds only non-negative terms: its rounding stays
 * relative to the distance itself, however large the terms that came and went before. */
static void FN(run_item)(const REAL *X, int HX, int WX, int ox, const REAL *Y, int HY, int WY, int oy, int C, int k,
                         REAL a, REAL inv2s2, const int *g, int H, int W, int N, int blk0, int blk1,
                         FN(state_t) *st, int trace, REAL *work) {
    const int h = k / 2;
    const int qr0 = g[0], qr1 = g[1], qc0 = g[2], qc1 = g[3];
    const int dr0 = g[4], dr1 = g[5], dc0 = g[6], dc1 = g[7];
    const int pr0 = g[8], pr1 = g[9], pc0 = g[10], pc1 = g[11];
    const int QW = qc1 - qc0 + 1;
    const size_t Q = (size_t)(qr1 - qr0 + 1) * QW;
    const int RW = QW + 2 * h;              /* widest product row */
    const int seg = k >= SEG_MIN_K;
    REAL *D = work;                         /* [k][RW][NB] squared-difference rows (slot i % k) */
    REAL *P = D + (size_t)k * RW * NB;      /* [RW][NB] prefix over the current segment of rows */
    REAL *Vs = P + (size_t)RW * NB;         /* [RW][NB] column sums of one output row */
    REAL *L = Vs + (size_t)RW * NB;         /* [NB] logits of one query pixel */
    REAL *Prow = L + NB;                    /* [NB] prefix along a row */
    const size_t planeX = (size_t)HX * WX;
    const size_t pixY = (size_t)C * NB, blockY = (size_t)HY * WY * pixY;

    for (int blk = blk0; blk < blk1; blk++) {
        const REAL *Yb = Y + (size_t)blk * blockY;
        const int valid = N - blk * NB < NB ? N - blk * NB : NB;
        const int64_t n_base = (int64_t)blk * NB;
        for (int dr = dr0; dr <= dr1; dr++) {
            const int r_lo = qr0 > pr0 - dr ? qr0 : pr0 - dr;
            const int r_hi = qr1 < pr1 - dr ? qr1 : pr1 - dr;
            if (r_lo > r_hi) continue;
            const int nr = r_hi - r_lo + 1 + 2 * h;
            for (int dc = dc0; dc <= dc1; dc++) {
                const int c_lo = qc0 > pc0 - dc ? qc0 : pc0 - dc;
                const int c_hi = qc1 < pc1 - dc ? qc1 : pc1 - dc;
                if (c_lo > c_hi) continue;
                const int nc = c_hi - c_lo + 1 + 2 * h;
                const size_t rowlen = (size_t)nc * NB;
                for (int i = 0; i < nr; i++) {
                    const int r = r_lo - h + i, p = i % k;
                    const REAL *xr = X + (size_t)(r + ox) * WX + (c_lo - h + ox);
                    const REAL *yr = Yb + ((size_t)(r + dr + oy) * WY + (c_lo - h + dc + oy)) * pixY;
                    REAL *Di = D + (size_t)p * rowlen;
                    FN(product_row)(Di, xr, yr, nc, C, a, planeX, pixY);
                    if (seg) {
                        /* P: the rows of this segment so far. The slots past p hold the suffix
                         * sums of the previous segment, slot p its row that no window needs now. */
                        if (p == 0) memcpy(P, Di, sizeof(REAL) * rowlen);
                        else FN(rows_add)(P, Di, rowlen);
                    }
                    if (i < 2 * h) continue;
                    /* Output row r_out = r - h: column sums of rows i - 2h .. i into Vs. */
                    const REAL *Vc = Vs;
                    if (seg) {
                        if (p == k - 1) Vc = P; /* the window is this whole segment */
                        else {
                            FN(rows_sum2)(Vs, D + (size_t)(p + 1) * rowlen, P, rowlen);
                        }
                    } else if (k == 1) {
                        Vc = Di;
                    } else if (k == 3) {
                        FN(rows_sum3)(Vs, D, D + rowlen, D + 2 * rowlen, rowlen);
                    } else if (k == 5) {
                        FN(rows_sum5)(Vs, D, D + rowlen, D + 2 * rowlen, D + 3 * rowlen, D + 4 * rowlen, rowlen);
                    } else {
                        memcpy(Vs, D, sizeof(REAL) * rowlen);
                        for (int w = 1; w < k; w++) FN(rows_add)(Vs, D + (size_t)w * rowlen, rowlen);
                    }
                    /* Turn this segment's rows into its suffix sums for the next segment's windows. */
                    if (seg && p == k - 1) FN(suffix_rows)(D, k, rowlen);

                    const int r_out = r - h, pr = r_out + dr;
                    const int64_t prow = (int64_t)(((pr % H) + H) % H) * W;
                    const REAL *vrow = Yb + ((size_t)(pr + oy) * WY + oy) * pixY;
                    FN(row_pass)(st, Q, C, (REAL *)Vc, nc, k, L, Prow, inv2s2, (size_t)(r_out - qr0) * QW + (c_lo - qc0),
                                 vrow + (size_t)(c_lo + dc) * pixY, pixY, valid, trace, n_base, prow, c_lo + dc, W);
                }
            }
        }
    }
}

/* Work of a group, for ordering only: query pixels times displacements. */
static double group_cost(const int *gg) {
    return (double)(gg[1] - gg[0] + 1) * (gg[3] - gg[2] + 1) * (gg[5] - gg[4] + 1) * (gg[7] - gg[6] + 1);
}

/* Stream the training images of Y into the per-pixel softmax state of every query image
 * (the fields of els_args say what each array holds). Returns 0, or -1 where the per-thread
 * state could not be allocated. */
int FN(els_stream)(const els_args *p) {
    const REAL *X = (const REAL *)p->x, *Y = (const REAL *)p->y;
    const REAL *a = (const REAL *)p->a, *inv2s2 = (const REAL *)p->inv2s2;
    const int B = p->b, HX = p->hx, WX = p->wx, ox = p->ox, N = p->n, HY = p->hy, WY = p->wy, oy = p->oy;
    const int C = p->c, k = p->k, G = p->g, H = p->h, W = p->w;
    const int *groups = p->groups;
    const int64_t n_offset = p->n_offset;
    int nthreads = p->nthreads;
    const int trace = p->tn != NULL;
    if (nthreads < 1) nthreads = 1;
    const int nblocks = (N + NB - 1) / NB;
    size_t maxQ = 0, maxWork = 0;
    for (int g = 0; g < G; g++) {
        const int *gg = groups + 12 * g;
        size_t qh = gg[1] - gg[0] + 1, qw = gg[3] - gg[2] + 1;
        if (qh * qw > maxQ) maxQ = qh * qw;
        size_t w = ((size_t)k + 2) * (qw + 2 * (k / 2)) * NB + 2 * NB;
        (void)qh;
        if (w > maxWork) maxWork = w;
    }
    const int nsplit = split_count(nthreads, B, nblocks);
    const long items = (long)B * G * nsplit;
    const size_t per_state = maxQ * (4 + (size_t)C);
    ACC *sbuf = (ACC *)malloc(sizeof(ACC) * per_state * items);
    int64_t *ibuf = trace ? (int64_t *)malloc(sizeof(int64_t) * 2 * maxQ * items) : NULL;
    REAL *wbuf = (REAL *)malloc(sizeof(REAL) * maxWork * nthreads);
    if (!sbuf || !wbuf || (trace && !ibuf)) {
        free(sbuf);
        free(ibuf);
        free(wbuf);
        return -1;
    }
    const size_t planeX = (size_t)HX * WX * C;
    const size_t HWs = (size_t)H * W;

    /* Hand out the items largest group first (query pixels times displacements), so no thread
     * is left alone with a large one at the end; the merge below fixes its own order. Groups are
     * few: sort them, then list each group's items (image, then split). */
    long *order = (long *)malloc(sizeof(long) * items);
    int *gorder = (int *)malloc(sizeof(int) * G);
    if (!order || !gorder) {
        free(order);
        free(gorder);
        free(sbuf);
        free(ibuf);
        free(wbuf);
        return -1;
    }
    for (int i = 0; i < G; i++) { /* insertion sort, stable */
        int j = i;
        while (j > 0 && group_cost(groups + 12 * gorder[j - 1]) < group_cost(groups + 12 * i)) {
            gorder[j] = gorder[j - 1];
            j--;
        }
        gorder[j] = i;
    }
    long n_it = 0;
    for (int i = 0; i < G; i++)
        for (int b = 0; b < B; b++)
            for (int s = 0; s < nsplit; s++) order[n_it++] = ((long)b * G + gorder[i]) * nsplit + s;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads)
    for (long io = 0; io < items; io++) {
        const long it = order[io];
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        const int split = (int)(it % nsplit);
        const int g = (int)((it / nsplit) % G);
        const int b = (int)(it / ((long)nsplit * G));
        const int *gg = groups + 12 * g;
        const size_t Q = (size_t)(gg[1] - gg[0] + 1) * (gg[3] - gg[2] + 1);
        FN(state_t) st;
        FN(state_view)(&st, sbuf + per_state * it, trace ? ibuf + 2 * maxQ * it : NULL, Q, trace);
        FN(state_init)(&st, Q, C, trace);
        const int blk0 = (int)((long)nblocks * split / nsplit), blk1 = (int)((long)nblocks * (split + 1) / nsplit);
        FN(run_item)(X + planeX * b, HX, WX, ox, Y, HY, WY, oy, C, k, a[b], inv2s2[b], gg, H, W, N, blk0, blk1, &st,
                     trace, wbuf + maxWork * tid);
        if (trace)
            for (size_t i = 0; i < Q; i++) st.tn[i] += n_offset;
    }

    /* Merge the partial states into the caller's state in a fixed order (group, then split), so
     * results do not depend on the threads. Groups may share query pixels (each takes its own
     * displacements), so the images, not the groups, are what run in parallel. */
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int b = 0; b < B; b++) {
        FN(state_t) glob;
        FN(caller_state)(&glob, p, b, HWs, C, trace);
        for (int g = 0; g < G; g++) {
            const int *gg = groups + 12 * g;
            const int QW = gg[3] - gg[2] + 1;
            const size_t Q = (size_t)(gg[1] - gg[0] + 1) * QW;
            for (int s = 0; s < nsplit; s++) {
                const long it = ((long)b * G + g) * nsplit + s;
                FN(state_t) st;
                FN(state_view)(&st, sbuf + per_state * it, trace ? ibuf + 2 * maxQ * it : NULL, Q, trace);
                for (size_t q = 0; q < Q; q++) {
                    const size_t pix = (size_t)(gg[0] + q / QW) * W + (gg[2] + q % QW);
                    FN(merge_one)(&glob, pix, HWs, &st, q, Q, C, trace);
                }
            }
        }
    }
    free(order);
    free(gorder);
    free(sbuf);
    free(ibuf);
    free(wbuf);
    return 0;
}

/* Several patch sizes in one pass over the candidates (calibration: docs/theory.md, "Patch
 * schedules"). Per block of training images and displacement d, the squared-difference image is
 * computed once, over the union of what the sizes need. Size j takes its query rectangle for d
 * from its own group containing d, cut to the queries whose candidate q + d is allowed. Along
 * each query row the sizes run in increasing order, and the row's column sums grow from one size
 * to the next by the rows that enter the window; each size's row sums and update are its own,
 * into its own state. Sums of non-negative terms only, as in run_item: each size's distances round
 * relative to themselves, in another order than a single-size call, so the two agree to
 * rounding. No trace. */
static void FN(run_sizes)(const REAL *X, int HX, int WX, int ox, const REAL *Y, int HY, int WY, int oy, int C, int nk,
                          const int *ks, const int *gk, const int *groups, const int *drange, REAL a, REAL inv2s2,
                          int H, int W, int N, int blk0, int blk1, FN(state_t) *st, REAL *work, int UH, int UW) {
    const size_t Q = (size_t)H * W;
    REAL *D = work;                         /* [UH][UW][NB] squared differences over the union */
    REAL *V = D + (size_t)UH * UW * NB;     /* [UW][NB] column sums along one row */
    REAL *R = V + (size_t)UW * NB;          /* [UW][NB] a copy of V's row, for the segment sums */
    REAL *L = R + (size_t)UW * NB;          /* [NB] */
    REAL *T = L + NB;                       /* [NB] */
    const size_t planeX = (size_t)HX * WX;
    const size_t pixY = (size_t)C * NB, blockY = (size_t)HY * WY * pixY;
    int rect[MAX_SIZES][4];
    for (int blk = blk0; blk < blk1; blk++) {
        const REAL *Yb = Y + (size_t)blk * blockY;
        const int valid = N - blk * NB < NB ? N - blk * NB : NB;
        const int64_t n_base = (int64_t)blk * NB;
        for (int dr = drange[0]; dr <= drange[1]; dr++) {
            for (int dc = drange[2]; dc <= drange[3]; dc++) {
                int ur0 = H + UH, ur1 = -UH, uc0 = W + UW, uc1 = -UW, any = 0;
                for (int j = 0; j < nk; j++) {
                    rect[j][0] = 1;
                    rect[j][1] = 0; /* empty unless a group of size j takes d */
                    for (int g = gk[j]; g < gk[j + 1]; g++) {
                        const int *gg = groups + 12 * g;
                        if (dr < gg[4] || dr > gg[5] || dc < gg[6] || dc > gg[7]) continue;
                        rect[j][0] = gg[0] > gg[8] - dr ? gg[0] : gg[8] - dr;
                        rect[j][1] = gg[1] < gg[9] - dr ? gg[1] : gg[9] - dr;
                        rect[j][2] = gg[2] > gg[10] - dc ? gg[2] : gg[10] - dc;
                        rect[j][3] = gg[3] < gg[11] - dc ? gg[3] : gg[11] - dc;
                        break; /* the groups of one size take each (query, candidate) pair once */
                    }
                    if (rect[j][0] > rect[j][1] || rect[j][2] > rect[j][3]) {
                        rect[j][0] = 1;
                        rect[j][1] = 0;
                        continue;
                    }
                    const int h = ks[j] / 2;
                    any = 1;
                    if (rect[j][0] - h < ur0) ur0 = rect[j][0] - h;
                    if (rect[j][1] + h > ur1) ur1 = rect[j][1] + h;
                    if (rect[j][2] - h < uc0) uc0 = rect[j][2] - h;
                    if (rect[j][3] + h > uc1) uc1 = rect[j][3] + h;
                }
                if (!any) continue;
                const int nc = uc1 - uc0 + 1;
                const size_t rowlen = (size_t)nc * NB;
                for (int r = ur0; r <= ur1; r++)
                    FN(product_row)(D + (size_t)(r - ur0) * rowlen, X + (size_t)(r + ox) * WX + (uc0 + ox),
                                    Yb + ((size_t)(r + dr + oy) * WY + (uc0 + dc + oy)) * pixY, nc, C, a, planeX, pixY);
                int rlo = ur1, rhi = ur0;
                for (int j = 0; j < nk; j++) {
                    if (rect[j][0] > rect[j][1]) continue;
                    if (rect[j][0] < rlo) rlo = rect[j][0];
                    if (rect[j][1] > rhi) rhi = rect[j][1];
                }
                /* Row by row, so one row of column sums serves every size while it sits in cache:
                 * V holds the column sums of size vh at row r and grows to each larger size. */
                for (int r = rlo; r <= rhi; r++) {
                    int vh = -1;
                    for (int j = 0; j < nk; j++) {
                        const int c0 = rect[j][2], c1 = rect[j][3];
                        if (r < rect[j][0] || r > rect[j][1]) continue;
                        const int k = ks[j], h = k / 2;
                        const REAL *Dr = D + (size_t)(r - ur0) * rowlen;
                        if (vh < 0) {
                            memcpy(V, Dr, sizeof(REAL) * rowlen);
                            vh = 0;
                        }
                        for (int i = vh + 1; i <= h; i++)
                            FN(rows_grow)(V, Dr - (size_t)i * rowlen, Dr + (size_t)i * rowlen, rowlen);
                        vh = h;
                        const int ncj = c1 - c0 + 1 + 2 * h;
                        REAL *Vr = V + (size_t)(c0 - h - uc0) * NB;
                        if (k >= SEG_MIN_K) { /* the segment sums rewrite their row: keep V */
                            memcpy(R, Vr, sizeof(REAL) * ncj * NB);
                            Vr = R;
                        }
                        const int pr = r + dr;
                        const REAL *vrow = Yb + ((size_t)(pr + oy) * WY + oy) * pixY;
                        FN(row_pass)(&st[j], Q, C, Vr, ncj, k, L, T, inv2s2, (size_t)r * W + c0,
                                     vrow + (size_t)(c0 + dc) * pixY, pixY, valid, 0, n_base, 0, 0, W);
                    }
                }
            }
        }
    }
}

/* Stream the training images of Y into the states of nk patch sizes at once (els_args: nk, ks,
 * gk; k is the largest size, which X and Y are padded for). The caller's state arrays hold the
 * sizes one after another: m [nk][B][H][W], acc [nk][B][C][H][W]. Returns 0, or -1 where the
 * per-thread state could not be allocated or there are more than MAX_SIZES sizes. */
int FN(els_stream_sizes)(const els_args *p) {
    const REAL *X = (const REAL *)p->x, *Y = (const REAL *)p->y;
    const REAL *a = (const REAL *)p->a, *inv2s2 = (const REAL *)p->inv2s2;
    const int B = p->b, HX = p->hx, WX = p->wx, ox = p->ox, N = p->n, HY = p->hy, WY = p->wy, oy = p->oy;
    const int C = p->c, H = p->h, W = p->w, nk = p->nk;
    const int *groups = p->groups, *ks = p->ks, *gk = p->gk;
    int nthreads = p->nthreads < 1 ? 1 : p->nthreads;
    if (nk < 1 || nk > MAX_SIZES) return -1;
    const int hmax = ks[nk - 1] / 2;
    int drange[4] = {1 << 30, -(1 << 30), 1 << 30, -(1 << 30)};
    for (int g = 0; g < gk[nk]; g++) {
        const int *gg = groups + 12 * g;
        if (gg[4] < drange[0]) drange[0] = gg[4];
        if (gg[5] > drange[1]) drange[1] = gg[5];
        if (gg[6] < drange[2]) drange[2] = gg[6];
        if (gg[7] > drange[3]) drange[3] = gg[7];
    }
    const int UH = H + 2 * hmax, UW = W + 2 * hmax;
    const size_t Q = (size_t)H * W;
    const size_t maxWork = (size_t)UH * UW * NB + 2 * (size_t)UW * NB + 2 * NB;
    const int nblocks = (N + NB - 1) / NB;
    const int nsplit = split_count(nthreads, B, nblocks);
    const long items = (long)B * nsplit;
    const size_t per_state = Q * (4 + (size_t)C);
    ACC *sbuf = (ACC *)malloc(sizeof(ACC) * per_state * nk * items);
    REAL *wbuf = (REAL *)malloc(sizeof(REAL) * maxWork * nthreads);
    if (!sbuf || !wbuf) {
        free(sbuf);
        free(wbuf);
        return -1;
    }
    const size_t planeX = (size_t)HX * WX * C;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads)
    for (long it = 0; it < items; it++) {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        const int split = (int)(it % nsplit), b = (int)(it / nsplit);
        FN(state_t) st[MAX_SIZES];
        for (int j = 0; j < nk; j++) {
            FN(state_view)(&st[j], sbuf + per_state * (it * nk + j), NULL, Q, 0);
            FN(state_init)(&st[j], Q, C, 0);
        }
        const int blk0 = (int)((long)nblocks * split / nsplit), blk1 = (int)((long)nblocks * (split + 1) / nsplit);
        FN(run_sizes)(X + planeX * b, HX, WX, ox, Y, HY, WY, oy, C, nk, ks, gk, groups, drange, a[b], inv2s2[b], H, W,
                      N, blk0, blk1, st, wbuf + maxWork * tid, UH, UW);
    }
    /* Merge in a fixed order (split, then size), so results do not depend on the threads. */
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int b = 0; b < B; b++) {
        for (int j = 0; j < nk; j++) {
            FN(state_t) glob;
            FN(caller_state)(&glob, p, (size_t)j * B + b, Q, C, 0);
            for (int s = 0; s < nsplit; s++) {
                FN(state_t) part;
                FN(state_view)(&part, sbuf + per_state * (((long)b * nsplit + s) * nk + j), NULL, Q, 0);
                for (size_t q = 0; q < Q; q++) FN(merge_one)(&glob, q, Q, &part, q, Q, C, 0);
            }
        }
    }
    free(sbuf);
    free(wbuf);
    return 0;
}
