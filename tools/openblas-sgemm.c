/* openblas-sgemm.c — a CPU reference for `mpcl bench gemm`: OpenBLAS's
 * cblas_sgemm timed the same way (row-major C = op(A) op(B), alpha 1,
 * beta 0; small-integer inputs, the product checked exactly against a host
 * loop first; a warm-up call, calls per repetition raised until one lasts
 * --min-repeat-ms, the median of --repeats repetitions; GFLOP/s =
 * 2 M N K / seconds per call). Prints one JSON object. A reference tool
 * only: built when Meson finds OpenBLAS, and never linked into libmpcl.
 *
 *   openblas-sgemm [--threads N] [--repeats N] [--min-repeat-ms N] [SHAPE...]
 *
 * SHAPE is N (square) or MxNxK, optionally followed by :nn, :nt, :tn or :tt;
 * the default is 256 512 1024. OpenBLAS picks its kernels by the CPU it
 * detects; OPENBLAS_CORETYPE (e.g. SkylakeX) overrides a wrong detection,
 * and the JSON records both the core OpenBLAS used and the variable. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>
#include <cjson/cJSON.h>

#define MAX_SHAPES 64
#define MAX_DIM 65536ul
#define MAX_CALLS 10000u
#define CHECK_ROWS 32

typedef struct {
    size_t m, n, k;
    int ta, tb;
} shape;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "openblas-sgemm: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nusage: openblas-sgemm [--threads N] [--repeats N] [--min-repeat-ms N] "
                    "[N | MxNxK[:nn|:nt|:tn|:tt] ...]\n");
    return 2;
}

static int parse_ul(const char *s, unsigned long lo, unsigned long hi, unsigned long *out)
{
    if (!s || !*s || *s == '-' || *s == '+')
        return 0;
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return 0;
    *out = v;
    return 1;
}

static int parse_shape(const char *arg, shape *s)
{
    char buf[128];
    if (strlen(arg) >= sizeof buf)
        return 0;
    snprintf(buf, sizeof buf, "%s", arg);
    memset(s, 0, sizeof *s);
    char *colon = strchr(buf, ':');
    if (colon) {
        *colon = '\0';
        const char *t = colon + 1;
        if (strlen(t) != 2 || (t[0] != 'n' && t[0] != 't') || (t[1] != 'n' && t[1] != 't'))
            return 0;
        s->ta = t[0] == 't';
        s->tb = t[1] == 't';
    }
    unsigned long v[3];
    char *x1 = strchr(buf, 'x');
    if (!x1) {
        if (!parse_ul(buf, 1, MAX_DIM, &v[0]))
            return 0;
        s->m = s->n = s->k = v[0];
        return 1;
    }
    char *x2 = strchr(x1 + 1, 'x');
    if (!x2 || strchr(x2 + 1, 'x'))
        return 0;
    *x1 = *x2 = '\0';
    if (!parse_ul(buf, 1, MAX_DIM, &v[0]) || !parse_ul(x1 + 1, 1, MAX_DIM, &v[1]) ||
        !parse_ul(x2 + 1, 1, MAX_DIM, &v[2]))
        return 0;
    s->m = v[0];
    s->n = v[1];
    s->k = v[2];
    return 1;
}

static void call(const shape *s, const float *a, const float *b, float *c)
{
    cblas_sgemm(CblasRowMajor, s->ta ? CblasTrans : CblasNoTrans, s->tb ? CblasTrans : CblasNoTrans,
                (int)s->m, (int)s->n, (int)s->k, 1.0f, a, s->ta ? (int)s->m : (int)s->k, b,
                s->tb ? (int)s->k : (int)s->n, 0.0f, c, (int)s->n);
}

/* Rows spread over C (all of them for small shapes), exactly: the inputs are
 * integers in -4..4, so every partial sum is exact in float. */
static int check(const shape *s, const float *a, const float *b, const float *c, size_t *checked)
{
    size_t rows = s->m <= CHECK_ROWS ? s->m : CHECK_ROWS;
    for (size_t r = 0; r < rows; r++) {
        size_t i = rows == s->m ? r : r * (s->m - 1) / (CHECK_ROWS - 1);
        for (size_t j = 0; j < s->n; j++) {
            double sum = 0;
            for (size_t p = 0; p < s->k; p++)
                sum += (double)(s->ta ? a[p * s->m + i] : a[i * s->k + p]) *
                       (double)(s->tb ? b[j * s->k + p] : b[p * s->n + j]);
            (*checked)++;
            if ((double)c[i * s->n + j] != sum) {
                fprintf(stderr, "openblas-sgemm: %zux%zux%zu: C[%zu][%zu] = %g, exactly %g\n", s->m,
                        s->n, s->k, i, j, (double)c[i * s->n + j], sum);
                return 0;
            }
        }
    }
    return 1;
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

int main(int argc, char **argv)
{
    unsigned long threads = 0, repeats = 5, min_ms = 50;
    shape shapes[MAX_SHAPES];
    int nshapes = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        unsigned long *dst = NULL, lo = 1, hi = 0;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            printf("usage: openblas-sgemm [--threads N] [--repeats N] [--min-repeat-ms N] "
                   "[N | MxNxK[:nn|:nt|:tn|:tt] ...]\n(default: OpenBLAS's thread count, 5 "
                   "repeats, 50 ms, shapes 256 512 1024)\n");
            return 0;
        }
        if (strcmp(a, "--threads") == 0)
            dst = &threads, hi = 1024;
        else if (strcmp(a, "--repeats") == 0)
            dst = &repeats, hi = 1000;
        else if (strcmp(a, "--min-repeat-ms") == 0)
            dst = &min_ms, lo = 0, hi = 60000;
        if (dst) {
            if (i + 1 >= argc)
                return usage("%s needs a value", a);
            if (!parse_ul(argv[++i], lo, hi, dst))
                return usage("%s: not a valid count", a);
            continue;
        }
        if (a[0] == '-')
            return usage("unknown option '%s'", a);
        if (nshapes == MAX_SHAPES)
            return usage("at most 64 shapes (at '%s')", a);
        if (!parse_shape(a, &shapes[nshapes]))
            return usage("'%s' is not a shape: N or MxNxK (1..65536), optionally :nn, :nt, :tn or :tt", a);
        nshapes++;
    }
    if (!nshapes) {
        static const size_t sq[] = {256, 512, 1024};
        for (size_t i = 0; i < 3; i++)
            shapes[nshapes++] = (shape){sq[i], sq[i], sq[i], 0, 0};
    }
    if (threads)
        openblas_set_num_threads((int)threads);

    cJSON *root = cJSON_CreateObject(), *arr = cJSON_CreateArray();
    if (!root || !arr) {
        fprintf(stderr, "openblas-sgemm: out of memory\n");
        return 1;
    }
    const char *coretype = getenv("OPENBLAS_CORETYPE");
    cJSON_AddStringToObject(root, "bench", "openblas-sgemm");
    cJSON_AddStringToObject(root, "corename", openblas_get_corename());
    cJSON_AddStringToObject(root, "config", openblas_get_config());
    if (coretype)
        cJSON_AddStringToObject(root, "OPENBLAS_CORETYPE", coretype);
    else
        cJSON_AddNullToObject(root, "OPENBLAS_CORETYPE");
    cJSON_AddNumberToObject(root, "threads", openblas_get_num_threads());
    cJSON_AddNumberToObject(root, "repeats", (double)repeats);
    cJSON_AddNumberToObject(root, "min_repeat_ms", (double)min_ms);
    int rc = 0;
    for (int si = 0; si < nshapes && rc == 0; si++) {
        const shape *s = &shapes[si];
        size_t na = s->m * s->k, nb = s->k * s->n, nc = s->m * s->n;
        float *a = malloc(na * sizeof *a), *b = malloc(nb * sizeof *b), *c = malloc(nc * sizeof *c);
        double *t = malloc(repeats * sizeof *t);
        if (!a || !b || !c || !t) {
            fprintf(stderr, "openblas-sgemm: out of memory for %zux%zux%zu\n", s->m, s->n, s->k);
            rc = 1;
        }
        unsigned long long st = 0x9e3779b97f4a7c15ULL;
        for (size_t i = 0; rc == 0 && i < na + nb; i++) {
            st = st * 6364136223846793005ULL + 1442695040888963407ULL;
            float v = (float)((int)((st >> 40) % 9) - 4);
            if (i < na)
                a[i] = v;
            else
                b[i - na] = v;
        }
        size_t checked = 0;
        if (rc == 0) {
            call(s, a, b, c); /* warm-up: thread start, page faults */
            if (!check(s, a, b, c, &checked))
                rc = 1;
        }
        if (rc == 0) {
            double t0 = now_s();
            call(s, a, b, c);
            double one = now_s() - t0, want = (double)min_ms * 1e-3;
            unsigned calls = 1;
            if (one <= 0)
                calls = MAX_CALLS;
            else if (want > one)
                calls = want / one >= MAX_CALLS ? MAX_CALLS : (unsigned)ceil(want / one);
            for (unsigned long r = 0; r < repeats; r++) {
                t0 = now_s();
                for (unsigned k = 0; k < calls; k++)
                    call(s, a, b, c);
                t[r] = (now_s() - t0) / calls;
            }
            qsort(t, repeats, sizeof *t, cmp_double);
            double med = repeats % 2 ? t[repeats / 2] : 0.5 * (t[repeats / 2 - 1] + t[repeats / 2]);
            cJSON *e = cJSON_CreateObject();
            char name[96];
            snprintf(name, sizeof name, "%zux%zux%zu:%c%c", s->m, s->n, s->k, s->ta ? 't' : 'n',
                     s->tb ? 't' : 'n');
            cJSON_AddStringToObject(e, "shape", name);
            cJSON_AddNumberToObject(e, "gflops",
                                    med > 0 ? 2.0 * (double)s->m * (double)s->n * (double)s->k / med * 1e-9 : 0);
            cJSON_AddNumberToObject(e, "median_ms", med * 1e3);
            cJSON_AddNumberToObject(e, "min_ms", t[0] * 1e3);
            cJSON_AddNumberToObject(e, "max_ms", t[repeats - 1] * 1e3);
            cJSON_AddNumberToObject(e, "calls_per_repeat", calls);
            cJSON_AddNumberToObject(e, "checked", (double)checked);
            cJSON_AddItemToArray(arr, e);
        }
        free(a);
        free(b);
        free(c);
        free(t);
    }
    cJSON_AddItemToObject(root, "shapes", arr);
    char *text = rc == 0 ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (rc == 0 && !text) {
        fprintf(stderr, "openblas-sgemm: out of memory for the JSON output\n");
        return 1;
    }
    if (text) {
        puts(text);
        cJSON_free(text);
    }
    return rc;
}
