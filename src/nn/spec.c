/* spec.c — the text model spec: parsing, defaults, shape inference.
 * Host code only. See the grammar in include/mpcl.h. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const char *KIND_NAMES[] = {"conv2d",    "linear",    "relu",    "leaky_relu",
                                   "gelu",      "sigmoid",   "tanh",    "maxpool2d",
                                   "avgpool2d", "flatten",   "dropout", "batchnorm2d"};
#define KIND_COUNT ((int)(sizeof KIND_NAMES / sizeof KIND_NAMES[0]))

/* The options each layer accepts (a space-separated list, for messages too). */
static const char *KIND_OPTIONS[] = {
    "out kernel stride padding dilation bias", "in out bias", "", "slope", "", "", "",
    "kernel stride padding", "kernel stride padding", "", "p", "eps momentum"};

const char *mpcl_layer_kind_name(mpcl_layer_kind k)
{
    return ((int)k >= 0 && (int)k < KIND_COUNT) ? KIND_NAMES[k] : "unknown";
}

typedef struct {
    const char *name;
    char *err;
    size_t err_len;
    int line;
} parser;

#define FAIL(P, ...)                                                     \
    do {                                                                 \
        char msg_[512];                                                  \
        snprintf(msg_, sizeof msg_, __VA_ARGS__);                        \
        mpcl_strfmt((P)->err, (P)->err_len, "%s:%d: %s", (P)->name, (P)->line, msg_); \
        return MPCL_ERR_FORMAT;                                          \
    } while (0)

static int parse_uint(const char *s, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || v < 0 || v > max)
        return -1;
    *out = v;
    return (int)(end - s);
}

/* "5" or "3x5" into h, w. */
static int parse_pair(const char *v, long min, int *h, int *w)
{
    long a, b;
    int n = parse_uint(v, 1 << 20, &a);
    if (n <= 0)
        return -1;
    if (v[n] == '\0') {
        b = a;
    } else if (v[n] == 'x') {
        int m = parse_uint(v + n + 1, 1 << 20, &b);
        if (m <= 0 || v[n + 1 + m] != '\0')
            return -1;
    } else {
        return -1;
    }
    if (a < min || b < min)
        return -1;
    *h = (int)a;
    *w = (int)b;
    return 0;
}

static int parse_float(const char *v, float *out)
{
    char *end;
    errno = 0;
    float f = strtof(v, &end);
    if (errno || end == v || *end)
        return -1;
    *out = f;
    return 0;
}

static int option_allowed(mpcl_layer_kind k, const char *key)
{
    const char *list = KIND_OPTIONS[k];
    size_t n = strlen(key);
    for (const char *p = list; (p = strstr(p, key)) != NULL; p += n)
        if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
            return 1;
    return 0;
}

static void defaults(mpcl_layer_spec *l)
{
    memset(l, 0, sizeof *l);
    l->kernel_h = l->kernel_w = 0;
    l->stride_h = l->stride_w = 0; /* 0: 1 for conv, kernel for pools */
    l->dilation_h = l->dilation_w = 1;
    l->bias = 1;
    l->slope = 0.01f;
    l->p = 0.5f;
    l->eps = 1e-5f;
    l->momentum = 0.1f;
}

static mpcl_status set_option(parser *ps, mpcl_layer_spec *l, const char *key, const char *val)
{
    const char *kind = KIND_NAMES[l->kind];
    if (!option_allowed(l->kind, key)) {
        if (KIND_OPTIONS[l->kind][0])
            FAIL(ps, "unknown option '%s' for %s (it takes: %s)", key, kind, KIND_OPTIONS[l->kind]);
        FAIL(ps, "%s takes no options, found '%s'", kind, key);
    }
    long v;
    if (strcmp(key, "out") == 0 || strcmp(key, "in") == 0) {
        int n = parse_uint(val, 1 << 24, &v);
        if (n <= 0 || val[n] || v < 1)
            FAIL(ps, "%s=%s: expected a positive integer", key, val);
        if (key[0] == 'o')
            l->out = (size_t)v;
        else
            l->in = (size_t)v;
    } else if (strcmp(key, "kernel") == 0 || strcmp(key, "stride") == 0 ||
               strcmp(key, "dilation") == 0) {
        int *h = key[0] == 'k' ? &l->kernel_h : key[0] == 's' ? &l->stride_h : &l->dilation_h;
        int *w = key[0] == 'k' ? &l->kernel_w : key[0] == 's' ? &l->stride_w : &l->dilation_w;
        if (parse_pair(val, 1, h, w) != 0)
            FAIL(ps, "%s=%s: expected a positive integer N or HxW", key, val);
    } else if (strcmp(key, "padding") == 0) {
        if (parse_pair(val, 0, &l->pad_h, &l->pad_w) != 0)
            FAIL(ps, "padding=%s: expected an integer N >= 0 or HxW", val);
    } else if (strcmp(key, "bias") == 0) {
        if (strcmp(val, "1") == 0 || strcmp(val, "true") == 0 || strcmp(val, "yes") == 0)
            l->bias = 1;
        else if (strcmp(val, "0") == 0 || strcmp(val, "false") == 0 || strcmp(val, "no") == 0)
            l->bias = 0;
        else
            FAIL(ps, "bias=%s: expected true or false", val);
    } else {
        float f;
        if (parse_float(val, &f) != 0)
            FAIL(ps, "%s=%s: expected a number", key, val);
        if (strcmp(key, "slope") == 0) {
            l->slope = f;
        } else if (strcmp(key, "p") == 0) {
            if (!(f >= 0.0f && f < 1.0f))
                FAIL(ps, "p=%s: dropout probability must be in [0, 1)", val);
            l->p = f;
        } else if (strcmp(key, "eps") == 0) {
            if (!(f > 0.0f))
                FAIL(ps, "eps=%s: must be > 0", val);
            l->eps = f;
        } else {
            if (!(f >= 0.0f && f <= 1.0f))
                FAIL(ps, "momentum=%s: must be in [0, 1]", val);
            l->momentum = f;
        }
    }
    return MPCL_OK;
}

/* Output shape of l given its input; checks the layer fits. */
static mpcl_status infer(parser *ps, mpcl_layer_spec *l, int ndim, const size_t *in)
{
    char shape[64];
    if (ndim == 3)
        snprintf(shape, sizeof shape, "%zux%zux%zu", in[0], in[1], in[2]);
    else
        snprintf(shape, sizeof shape, "%zu features", in[0]);
    l->in_ndim = ndim;
    memcpy(l->in_shape, in, sizeof l->in_shape);
    l->out_ndim = ndim;
    memcpy(l->out_shape, in, sizeof l->out_shape);
    switch (l->kind) {
    case MPCL_LAYER_CONV2D:
    case MPCL_LAYER_MAXPOOL2D:
    case MPCL_LAYER_AVGPOOL2D: {
        const char *kind = KIND_NAMES[l->kind];
        if (ndim != 3)
            FAIL(ps, "%s needs an image input (C x H x W), but its input is %s", kind, shape);
        if (l->kernel_h == 0)
            FAIL(ps, "%s needs kernel=N (or kernel=HxW)", kind);
        if (l->kind == MPCL_LAYER_CONV2D && l->out == 0)
            FAIL(ps, "conv2d needs out=N (output channels)");
        if (l->stride_h == 0) {
            l->stride_h = l->kind == MPCL_LAYER_CONV2D ? 1 : l->kernel_h;
            l->stride_w = l->kind == MPCL_LAYER_CONV2D ? 1 : l->kernel_w;
        }
        if (l->kind != MPCL_LAYER_CONV2D && (2 * l->pad_h > l->kernel_h || 2 * l->pad_w > l->kernel_w))
            FAIL(ps, "%s padding %dx%d is more than half the kernel %dx%d", kind, l->pad_h, l->pad_w,
                 l->kernel_h, l->kernel_w);
        long eh = (long)l->dilation_h * (l->kernel_h - 1) + 1, ew = (long)l->dilation_w * (l->kernel_w - 1) + 1;
        long oh = ((long)in[1] + 2 * l->pad_h - eh), ow = ((long)in[2] + 2 * l->pad_w - ew);
        if (oh < 0 || ow < 0)
            FAIL(ps, "%s kernel %dx%d (dilation %dx%d, padding %dx%d) does not fit its %s input", kind,
                 l->kernel_h, l->kernel_w, l->dilation_h, l->dilation_w, l->pad_h, l->pad_w, shape);
        l->out_shape[0] = l->kind == MPCL_LAYER_CONV2D ? l->out : in[0];
        l->out_shape[1] = (size_t)(oh / l->stride_h + 1);
        l->out_shape[2] = (size_t)(ow / l->stride_w + 1);
        if (l->kind == MPCL_LAYER_CONV2D)
            l->params = l->out * in[0] * (size_t)l->kernel_h * (size_t)l->kernel_w + (l->bias ? l->out : 0);
        return MPCL_OK;
    }
    case MPCL_LAYER_LINEAR: {
        if (l->out == 0)
            FAIL(ps, "linear needs out=N (output features)");
        if (ndim != 1)
            FAIL(ps, "linear needs a flat input, but its input is %s: add a 'flatten' line before it",
                 shape);
        if (l->in && l->in != in[0])
            FAIL(ps, "linear in=%zu, but its input has %zu features", l->in, in[0]);
        l->in = in[0];
        l->out_shape[0] = l->out;
        l->params = l->out * l->in + (l->bias ? l->out : 0);
        return MPCL_OK;
    }
    case MPCL_LAYER_FLATTEN:
        l->out_ndim = 1;
        l->out_shape[0] = in[0] * (ndim == 3 ? in[1] * in[2] : 1);
        l->out_shape[1] = l->out_shape[2] = 0;
        return MPCL_OK;
    case MPCL_LAYER_BATCHNORM2D:
        if (ndim != 3)
            FAIL(ps, "batchnorm2d needs an image input (C x H x W), but its input is %s", shape);
        l->params = 2 * in[0];
        return MPCL_OK;
    default:
        return MPCL_OK;
    }
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

static mpcl_status parse_input(parser *ps, char *rest, mpcl_model_spec *m)
{
    long c, h, w;
    int a = parse_uint(rest, 1 << 16, &c);
    if (a > 0 && rest[a] == 'x') {
        int b = parse_uint(rest + a + 1, 1 << 16, &h);
        if (b > 0 && rest[a + 1 + b] == 'x') {
            int d = parse_uint(rest + a + 2 + b, 1 << 16, &w);
            if (d > 0 && rest[a + 2 + b + d] == '\0' && c > 0 && h > 0 && w > 0) {
                m->input[0] = (size_t)c;
                m->input[1] = (size_t)h;
                m->input[2] = (size_t)w;
                return MPCL_OK;
            }
        }
    }
    FAIL(ps, "input: expected CxHxW, e.g. 'input 1x28x28', found '%s'", rest);
}

mpcl_status mpcl_model_spec_parse(const char *text, const char *name, mpcl_model_spec *out, char *err,
                                  size_t err_len)
{
    char dummy[8];
    if (!err || !err_len) {
        err = dummy;
        err_len = sizeof dummy;
    }
    err[0] = '\0';
    if (!text || !out) {
        mpcl_strfmt(err, err_len, "mpcl_model_spec_parse: text and out must not be NULL");
        return MPCL_ERR_ARGUMENT;
    }
    parser ps = {.name = name ? name : "(spec)", .err = err, .err_len = err_len, .line = 0};
    memset(out, 0, sizeof *out);
    char *copy = strdup(text);
    if (!copy) {
        mpcl_strfmt(err, err_len, "%s: out of host memory", ps.name);
        return MPCL_ERR_NOMEM;
    }
    mpcl_status s = MPCL_OK;
    int have_input = 0, ndim = 3;
    size_t shape[3] = {0, 0, 0};
    char *save_line = NULL;
    for (char *line = copy; line && s == MPCL_OK; line = save_line) {
        ps.line++;
        save_line = strchr(line, '\n');
        if (save_line)
            *save_line++ = '\0';
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *l = trim(line);
        if (!*l)
            continue;
        char *word = l;
        while (*l && !isspace((unsigned char)*l))
            l++;
        if (*l)
            *l++ = '\0';
        char *rest = trim(l);
        if (strcmp(word, "input") == 0) {
            if (have_input) {
                mpcl_strfmt(err, err_len, "%s:%d: a second 'input' line", ps.name, ps.line);
                s = MPCL_ERR_FORMAT;
                break;
            }
            if ((s = parse_input(&ps, rest, out)) != MPCL_OK)
                break;
            have_input = 1;
            memcpy(shape, out->input, sizeof shape);
            continue;
        }
        int kind = -1;
        for (int k = 0; k < KIND_COUNT; k++)
            if (strcmp(word, KIND_NAMES[k]) == 0)
                kind = k;
        if (kind < 0) {
            mpcl_strfmt(err, err_len,
                        "%s:%d: unknown layer '%s' (expected input, conv2d, linear, relu, leaky_relu, "
                        "gelu, sigmoid, tanh, maxpool2d, avgpool2d, flatten, dropout or batchnorm2d)",
                        ps.name, ps.line, word);
            s = MPCL_ERR_FORMAT;
            break;
        }
        if (!have_input) {
            mpcl_strfmt(err, err_len, "%s:%d: '%s' before the 'input CxHxW' line", ps.name, ps.line, word);
            s = MPCL_ERR_FORMAT;
            break;
        }
        if (out->nlayers == MPCL_MAX_LAYERS) {
            mpcl_strfmt(err, err_len, "%s:%d: more than %d layers", ps.name, ps.line, MPCL_MAX_LAYERS);
            s = MPCL_ERR_FORMAT;
            break;
        }
        mpcl_layer_spec *ly = &out->layers[out->nlayers];
        defaults(ly);
        ly->kind = (mpcl_layer_kind)kind;
        ly->line = ps.line;
        /* key=value options */
        char *tok = rest;
        while (s == MPCL_OK && *tok) {
            char *end = tok;
            while (*end && !isspace((unsigned char)*end))
                end++;
            char saved = *end;
            *end = '\0';
            char *eq = strchr(tok, '=');
            if (!eq || eq == tok || !eq[1]) {
                mpcl_strfmt(err, err_len, "%s:%d: expected key=value, found '%s'", ps.name, ps.line, tok);
                s = MPCL_ERR_FORMAT;
                break;
            }
            *eq = '\0';
            s = set_option(&ps, ly, tok, eq + 1);
            *end = saved;
            tok = trim(end);
        }
        if (s == MPCL_OK)
            s = infer(&ps, ly, ndim, shape);
        if (s == MPCL_OK) {
            ndim = ly->out_ndim;
            memcpy(shape, ly->out_shape, sizeof shape);
            out->params += ly->params;
            out->nlayers++;
        }
    }
    free(copy);
    if (s == MPCL_OK && !have_input) {
        mpcl_strfmt(err, err_len, "%s: no 'input CxHxW' line", ps.name);
        s = MPCL_ERR_FORMAT;
    }
    if (s == MPCL_OK && out->nlayers == 0) {
        mpcl_strfmt(err, err_len, "%s: no layers", ps.name);
        s = MPCL_ERR_FORMAT;
    }
    if (s == MPCL_OK && ndim != 1) {
        mpcl_strfmt(err, err_len, "%s:%d: the model must end in flat outputs (class scores); it ends in %zux%zux%zu",
                    ps.name, out->layers[out->nlayers - 1].line, shape[0], shape[1], shape[2]);
        s = MPCL_ERR_FORMAT;
    }
    return s;
}

mpcl_status mpcl_model_spec_load(const char *path, mpcl_model_spec *out, char *err, size_t err_len)
{
    char dummy[8];
    if (!err || !err_len) {
        err = dummy;
        err_len = sizeof dummy;
    }
    if (!path || !out) {
        mpcl_strfmt(err, err_len, "mpcl_model_spec_load: path and out must not be NULL");
        return MPCL_ERR_ARGUMENT;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        mpcl_strfmt(err, err_len, "%s: cannot open: %s", path, strerror(errno));
        return MPCL_ERR_IO;
    }
    char *buf = malloc(1 << 20);
    size_t n = buf ? fread(buf, 1, (1 << 20) - 1, f) : 0;
    int too_big = buf && n == (1 << 20) - 1 && fgetc(f) != EOF;
    int rerr = ferror(f);
    fclose(f);
    if (!buf) {
        mpcl_strfmt(err, err_len, "%s: out of host memory", path);
        return MPCL_ERR_NOMEM;
    }
    if (rerr || too_big) {
        free(buf);
        mpcl_strfmt(err, err_len, "%s: %s", path, too_big ? "larger than 1 MiB: not a model spec" : "read error");
        return rerr ? MPCL_ERR_IO : MPCL_ERR_FORMAT;
    }
    buf[n] = '\0';
    if (memchr(buf, '\0', n)) {
        free(buf);
        mpcl_strfmt(err, err_len, "%s: contains NUL bytes: not a text model spec", path);
        return MPCL_ERR_FORMAT;
    }
    const char *base = strrchr(path, '/');
    mpcl_status s = mpcl_model_spec_parse(buf, base ? base + 1 : path, out, err, err_len);
    free(buf);
    return s;
}

/* ------------------------------------------------------------ formatting */

/* Appends to dst[*used..len); on overflow sets *used past len. */
static void put(char *dst, size_t len, size_t *used, const char *fmt, ...) MPCL_PRINTF(4, 5);
static void put(char *dst, size_t len, size_t *used, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(*used < len ? dst + *used : NULL, *used < len ? len - *used : 0, fmt, ap);
    va_end(ap);
    *used += w > 0 ? (size_t)w : 0;
}

size_t mpcl_model_spec_format(const mpcl_model_spec *s, char *dst, size_t len)
{
    size_t used = 0;
    if (dst && len)
        dst[0] = '\0';
    else
        len = 0;
    put(dst, len, &used, "input %zux%zux%zu\n", s->input[0], s->input[1], s->input[2]);
    for (int i = 0; i < s->nlayers; i++) {
        const mpcl_layer_spec *l = &s->layers[i];
        put(dst, len, &used, "%s", mpcl_layer_kind_name(l->kind));
        switch (l->kind) {
        case MPCL_LAYER_CONV2D:
            put(dst, len, &used, " out=%zu kernel=%dx%d stride=%dx%d padding=%dx%d dilation=%dx%d bias=%s",
                l->out, l->kernel_h, l->kernel_w, l->stride_h, l->stride_w, l->pad_h, l->pad_w,
                l->dilation_h, l->dilation_w, l->bias ? "true" : "false");
            break;
        case MPCL_LAYER_LINEAR:
            put(dst, len, &used, " in=%zu out=%zu bias=%s", l->in, l->out, l->bias ? "true" : "false");
            break;
        case MPCL_LAYER_LEAKY_RELU: put(dst, len, &used, " slope=%.9g", (double)l->slope); break;
        case MPCL_LAYER_MAXPOOL2D:
        case MPCL_LAYER_AVGPOOL2D:
            put(dst, len, &used, " kernel=%dx%d stride=%dx%d padding=%dx%d", l->kernel_h, l->kernel_w,
                l->stride_h, l->stride_w, l->pad_h, l->pad_w);
            break;
        case MPCL_LAYER_DROPOUT: put(dst, len, &used, " p=%.9g", (double)l->p); break;
        case MPCL_LAYER_BATCHNORM2D:
            put(dst, len, &used, " eps=%.9g momentum=%.9g", (double)l->eps, (double)l->momentum);
            break;
        default: break;
        }
        put(dst, len, &used, "\n");
    }
    return used;
}
