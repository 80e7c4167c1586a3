/* kernel_softcap.h: the softcap of one logit, x' = softcap tanh(x / softcap), and its slope, in
 * plain arithmetic (the AVX-512 and AVX2 loops: vector_softcap*.h);
 * part of kernel_template.h, which includes the parts in order. */

/* The logit as the loss sees it, x' = softcap tanh(x / softcap), and its slope dx'/dx = 1 - tanh^2.
 * From e = exp(-2 |u|), u = x / softcap, and m = e - 1 = expm1(-2 |u|): tanh |u| = -m / (2 + m) and
 * 1 - tanh^2 = 4 e / (2 + m)^2, both free of cancellation (also near saturation, where e is tiny),
 * and in plain arithmetic the compiler can vectorise. */
typedef struct {
    double value, slope;
} capped_logit;

SPECIALISED capped_logit softcapped(double x, double softcap) {
    const double u = x / softcap;
    const vexp_pair e = exp_and_expm1_of_nonpositive(-2.0 * fabs(u));
    const double inverse = 1.0 / (2.0 + e.expm1); /* one division: they are slow */
    return (capped_logit){softcap * copysign(-e.expm1 * inverse, u), 4.0 * e.exp * inverse * inverse};
}

/* tanh(u) / u = 1 + sum_j TANH_DOUBLE_Pj s^j, s = u^2 <= 1: a minimax polynomial for the relative
 * error (Remez at 60 digits, the constant term fixed at 1), 2.2e-17 (2^-55.4) with its coefficients
 * rounded; the float vector paths fit the same function to degree 11 (TANH_P, vector_softcap.h) */
#define TANH_DOUBLE_P1 -0.33333333333332943
#define TANH_DOUBLE_P2 0.13333333333292868
#define TANH_DOUBLE_P3 -0.0539682539534263
#define TANH_DOUBLE_P4 0.02186948825982455
#define TANH_DOUBLE_P5 -0.00886323245172253
#define TANH_DOUBLE_P6 0.0035921056065366963
#define TANH_DOUBLE_P7 -0.0014557213277444844
#define TANH_DOUBLE_P8 0.0005896186877134715
#define TANH_DOUBLE_P9 -0.00023804386607898702
#define TANH_DOUBLE_P10 9.476817102603895e-05
#define TANH_DOUBLE_P11 -3.6086621816495795e-05
#define TANH_DOUBLE_P12 1.234132959725971e-05
#define TANH_DOUBLE_P13 -3.4196804262498946e-06
#define TANH_DOUBLE_P14 6.544959589797327e-07
#define TANH_DOUBLE_P15 -6.269327632012473e-08

/* softcapped for |x| <= softcap (inverse = 1 / softcap): x' = x P(u^2) and 1 - tanh^2 = 1 - u^2
 * P^2, P as above; x' is all but insensitive to the rounding of u (d log P / d log s >= -0.23) */
SPECIALISED capped_logit softcapped_near(double x, double inverse) {
    const double u = x * inverse, s = u * u;
    double q = TANH_DOUBLE_P15;
    q = VEXP_FMA(q, s, TANH_DOUBLE_P14);
    q = VEXP_FMA(q, s, TANH_DOUBLE_P13);
    q = VEXP_FMA(q, s, TANH_DOUBLE_P12);
    q = VEXP_FMA(q, s, TANH_DOUBLE_P11);
    q = VEXP_FMA(q, s, TANH_DOUBLE_P10);
    q = VEXP_FMA(q, s, TANH_DOUBLE_P9);
    q = VEXP_FMA(q, s, TANH_DOUBLE_P8);
    q = VEXP_FMA(q, s, TANH_DOUBLE_P7);
    q = VEXP_FMA(q, s, TANH_DOUBLE_P6);
    q = VEXP_FMA(q, s, TANH_DOUBLE_P5);
    q = VEXP_FMA(q, s, TANH_DOUBLE_P4);
    q = VEXP_FMA(q, s, TANH_DOUBLE_P3);
    q = VEXP_FMA(q, s, TANH_DOUBLE_P2);
    q = VEXP_FMA(q, s, TANH_DOUBLE_P1);
    const double ratio = VEXP_FMA(s, q, 1.0); /* tanh(u) / u */
    return (capped_logit){x * ratio, 1.0 - (s * ratio) * ratio};
}

/* Slopes are kept in scratch times SLOPE_SCALE: a float keeps slopes down to 2^-252 to its full
 * precision (a subnormal float slope would lose digits, and the gradient it scales several of its
 * own subnormal units: fuzz seed 116935), and a double keeps them exactly either way. */
#define SLOPE_SCALE 0x1p126

/* x' (x itself when softcap is 0), in the vector loops */
SPECIALISED double capped(double x, double softcap) {
    return softcap > 0 ? softcapped(x, softcap).value : x;
}

/* the same for one value of a row (its max, its target's logit): the softcap a call, because GCC
 * computed it inline for every row, softcap or not, and selected (a division and an exp chain per
 * use, 5% of the plain pass's samples at K = 1000) */
static __attribute__((noinline)) double softcapped_value(double x, double softcap) {
    return softcapped(x, softcap).value;
}

static inline double capped_value(double x, double softcap) {
    return softcap > 0 ? softcapped_value(x, softcap) : x;
}
