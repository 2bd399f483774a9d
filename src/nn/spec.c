/* spec.c — the text model spec: parsing, defaults, shape inference.
 * Host code only. See the grammar in include/mpcl.h. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const char *KIND_NAMES[] = {"conv2d",    "linear",  "relu",        "leaky_relu", "gelu",
                                   "sigmoid",   "tanh",    "maxpool2d",   "avgpool2d",  "flatten",
                                   "dropout",   "batchnorm2d", "add",     "concat",     "global_avgpool"};
#define KIND_COUNT ((int)(sizeof KIND_NAMES / sizeof KIND_NAMES[0]))

/* The options each layer accepts (a space-separated list, for messages too). */
static const char *KIND_OPTIONS[] = {
    "out kernel stride padding dilation bias", "in out bias", "", "slope", "", "", "",
    "kernel stride padding", "kernel stride padding", "", "p", "eps momentum", "", "", ""};

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
            FAIL(ps, "unknown option '%s' for %s (it takes: %s, from)", key, kind, KIND_OPTIONS[l->kind]);
        FAIL(ps, "%s takes no options but from=, found '%s'", kind, key);
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
    case MPCL_LAYER_GLOBAL_AVGPOOL:
        if (ndim != 3)
            FAIL(ps, "global_avgpool needs an image input (C x H x W), but its input is %s", shape);
        l->out_shape[1] = l->out_shape[2] = 1;
        l->kernel_h = l->stride_h = (int)in[1]; /* the pooling window: the whole image */
        l->kernel_w = l->stride_w = (int)in[2];
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

/* ------------------------------------------------------------ graphs */

/* A "NAME:" label of the spec, found before the layers are read so that a
 * reference to a later line can say so (it would make a cycle). */
typedef struct {
    char name[MPCL_LAYER_NAME_MAX];
    int line, layer;
} label;

static int valid_name(const char *n, size_t len)
{
    if (len == 0 || len >= MPCL_LAYER_NAME_MAX || !(isalpha((unsigned char)n[0]) || n[0] == '_'))
        return 0;
    for (size_t i = 1; i < len; i++)
        if (!(isalnum((unsigned char)n[i]) || n[i] == '_'))
            return 0;
    return 1;
}

/* The first word of a line (after trimming), up to a ':' or white space. */
static size_t label_len(const char *l)
{
    size_t n = 0;
    while (l[n] && l[n] != ':' && l[n] != '#' && !isspace((unsigned char)l[n]))
        n++;
    return l[n] == ':' ? n : 0;
}

/* Each referenced input in words, for messages: "'b1' (line 7)", "the line
 * before (line 9, batchnorm2d)", "the model's input". */
static void describe_ref(const mpcl_model_spec *m, int ref, int self, char *dst, size_t len)
{
    if (ref < 0) {
        snprintf(dst, len, "the model's input");
        return;
    }
    const mpcl_layer_spec *r = &m->layers[ref];
    if (r->name[0])
        snprintf(dst, len, "'%s' (line %d)", r->name, r->line);
    else
        snprintf(dst, len, "%s (line %d, %s)", ref == self - 1 ? "the line before" : "a line", r->line,
                 KIND_NAMES[r->kind]);
}

static void shape_text(int ndim, const size_t *sh, char *dst, size_t len)
{
    if (ndim == 3)
        snprintf(dst, len, "%zux%zux%zu", sh[0], sh[1], sh[2]);
    else
        snprintf(dst, len, "%zu features", sh[0]);
}

static void ref_shape(const mpcl_model_spec *m, int ref, int *ndim, size_t *shape)
{
    if (ref < 0) {
        *ndim = 3;
        memcpy(shape, m->input, 3 * sizeof *shape);
    } else {
        *ndim = m->layers[ref].out_ndim;
        memcpy(shape, m->layers[ref].out_shape, 3 * sizeof *shape);
    }
}

/* add: one shape for all inputs; concat: images of one H x W (channels
 * add up) or flat features (they add up). */
static mpcl_status infer_multi(parser *ps, const mpcl_model_spec *m, int self, mpcl_layer_spec *l)
{
    int nd0, nd;
    size_t s0[3], sh[3];
    ref_shape(m, l->inputs[0], &nd0, s0);
    l->in_ndim = l->out_ndim = nd0;
    memcpy(l->in_shape, s0, sizeof s0);
    memcpy(l->out_shape, s0, sizeof s0);
    for (int i = 1; i < l->ninputs; i++) {
        ref_shape(m, l->inputs[i], &nd, sh);
        int same = nd == nd0 && (l->kind == MPCL_LAYER_CONCAT
                                     ? (nd == 1 || (sh[1] == s0[1] && sh[2] == s0[2]))
                                     : (sh[0] == s0[0] && (nd == 1 || (sh[1] == s0[1] && sh[2] == s0[2]))));
        if (!same) {
            char a[96], b[96], as[64], bs[64];
            describe_ref(m, l->inputs[0], self, a, sizeof a);
            describe_ref(m, l->inputs[i], self, b, sizeof b);
            shape_text(nd0, s0, as, sizeof as);
            shape_text(nd, sh, bs, sizeof bs);
            if (l->kind == MPCL_LAYER_ADD)
                FAIL(ps, "add: %s is %s but %s is %s; add needs inputs of one shape (no broadcasting)", a,
                     as, b, bs);
            FAIL(ps, "concat: %s is %s but %s is %s; concat joins images of one height and width "
                     "along their channels, or flat features",
                 a, as, b, bs);
        }
        if (l->kind == MPCL_LAYER_CONCAT)
            l->out_shape[0] += sh[0];
    }
    return MPCL_OK;
}

/* from=A[,B...]: the layer's inputs (see the grammar in include/mpcl.h). */
static mpcl_status parse_from(parser *ps, const label *labels, int nlabels, int self, char *val,
                              mpcl_layer_spec *l)
{
    int refs[MPCL_MAX_INPUTS], n = 0;
    for (char *save = NULL, *r = strtok_r(val, ",", &save); r; r = strtok_r(NULL, ",", &save)) {
        if (n == MPCL_MAX_INPUTS)
            FAIL(ps, "from= lists more than %d inputs", MPCL_MAX_INPUTS);
        if (strcmp(r, "input") == 0) {
            refs[n++] = -1;
            continue;
        }
        int found = -1;
        for (int i = 0; i < nlabels; i++)
            if (strcmp(labels[i].name, r) == 0)
                found = i;
        if (found < 0)
            FAIL(ps, "from=%s: no layer is named '%s' (a line names its layer with 'NAME: layer ...'; "
                     "'input' is the model's input)",
                 r, r);
        if (labels[found].line == ps->line)
            FAIL(ps, "from=%s: the layer reads its own output, a cycle", r);
        if (labels[found].line > ps->line)
            FAIL(ps, "from=%s: '%s' is line %d, after this one; a layer reads only earlier lines, "
                     "so that the graph has no cycle",
                 r, r, labels[found].line);
        refs[n++] = labels[found].layer;
    }
    if (n == 0)
        FAIL(ps, "from=: expected a layer name, or names separated by commas");
    int multi = l->kind == MPCL_LAYER_ADD || l->kind == MPCL_LAYER_CONCAT;
    if (!multi && n > 1)
        FAIL(ps, "%s takes one input, but from= lists %d", KIND_NAMES[l->kind], n);
    l->ninputs = 0;
    if (multi && n == 1) {
        if (self == 0)
            FAIL(ps, "%s from=%s: the first layer has no line before it to %s to; list both inputs", KIND_NAMES[l->kind],
                 val, l->kind == MPCL_LAYER_ADD ? "add" : "join");
        l->inputs[l->ninputs++] = self - 1;
    }
    for (int i = 0; i < n; i++)
        l->inputs[l->ninputs++] = refs[i];
    return MPCL_OK;
}

/* Collects the labels and their lines; the layer each names is set when
 * the layers are read. */
static mpcl_status scan_labels(parser *ps, const char *text, label **out, int *count)
{
    *out = NULL;
    *count = 0;
    int cap = 0;
    ps->line = 0;
    for (const char *line = text; line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        ps->line++;
        while (*line == ' ' || *line == '\t' || *line == '\r')
            line++;
        if (*line == '\n' || *line == '\0' || *line == '#')
            continue;
        size_t n = label_len(line);
        if (n) {
            char name[64];
            snprintf(name, sizeof name, "%.*s", (int)(n < 60 ? n : 60), line);
            if (!valid_name(line, n)) {
                free(*out);
                FAIL(ps, "'%s%s:' is not a layer name: letters, digits and _, not starting with a digit, "
                         "up to %d characters",
                     name, n > 60 ? "..." : "", MPCL_LAYER_NAME_MAX - 1);
            }
            if (strcmp(name, "input") == 0) {
                free(*out);
                FAIL(ps, "'input' names the model's input; choose another layer name");
            }
            for (int i = 0; i < *count; i++)
                if (strcmp((*out)[i].name, name) == 0) {
                    int first = (*out)[i].line;
                    free(*out);
                    FAIL(ps, "'%s' already names line %d", name, first);
                }
            if (*count == cap) {
                cap = cap ? 2 * cap : 16;
                label *g = realloc(*out, (size_t)cap * sizeof *g);
                if (!g) {
                    free(*out);
                    FAIL(ps, "out of host memory");
                }
                *out = g;
            }
            label *lb = &(*out)[(*count)++];
            memcpy(lb->name, name, n + 1); /* valid_name: n < MPCL_LAYER_NAME_MAX */
            lb->line = ps->line;
            lb->layer = -1;
        }
    }
    return MPCL_OK;
}

/* ------------------------------------------------------------ gpt */

/* The first word of the first line with content, copied to dst. */
static void first_word(const char *text, char *dst, size_t len)
{
    dst[0] = '\0';
    const char *p = text;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
            p++;
        if (*p == '#') {
            while (*p && *p != '\n')
                p++;
            continue;
        }
        size_t n = 0;
        while (p[n] && !isspace((unsigned char)p[n]) && p[n] != '#')
            n++;
        snprintf(dst, len, "%.*s", (int)(n < len ? n : len - 1), p);
        return;
    }
}

size_t mpcl_gpt_param_count(const mpcl_gpt_spec *g)
{
    size_t C = g->width, F = g->hidden;
    size_t block = 2 * C                 /* ln_1 */
                   + 3 * C * C + 3 * C   /* attn.c_attn */
                   + C * C + C           /* attn.c_proj */
                   + 2 * C               /* ln_2 */
                   + F * C + F           /* mlp.c_fc */
                   + C * F + C;          /* mlp.c_proj */
    return g->vocab * C + g->context * C + g->layers * block + 2 * C;
}

/* The one 'gpt' line of a spec, checked. */
static mpcl_status parse_gpt(const char *text, const char *name, mpcl_model_spec *out, char *err,
                             size_t err_len)
{
    char *copy = strdup(text);
    if (!copy) {
        mpcl_strfmt(err, err_len, "%s: out of host memory", name);
        return MPCL_ERR_NOMEM;
    }
    mpcl_gpt_spec *g = &out->gpt;
    int line = 0, seen = 0;
    mpcl_status s = MPCL_OK;
    char *save = NULL;
    for (char *ln = copy; ln && s == MPCL_OK; ln = save) {
        line++;
        save = strchr(ln, '\n');
        if (save)
            *save++ = '\0';
        char *hash = strchr(ln, '#');
        if (hash)
            *hash = '\0';
        char *l = trim(ln);
        if (!*l)
            continue;
        if (seen) {
            mpcl_strfmt(err, err_len,
                        "%s:%d: a gpt spec is one 'gpt ...' line (line %d); found '%s' after it", name,
                        line, g->line, l);
            s = MPCL_ERR_FORMAT;
            break;
        }
        seen = 1;
        g->line = line;
        l += 3; /* "gpt" */
        static const char *keys[6] = {"vocab", "context", "layers", "heads", "width", "hidden"};
        static const long max[6] = {1L << 24, 1L << 16, 1024, 1024, 1L << 16, 1L << 20};
        size_t *dst[6] = {&g->vocab, &g->context, &g->layers, &g->heads, &g->width, &g->hidden};
        int have[6] = {0};
        char *tok, *tsave = NULL;
        for (tok = strtok_r(l, " \t\r", &tsave); tok && s == MPCL_OK; tok = strtok_r(NULL, " \t\r", &tsave)) {
            char *eq = strchr(tok, '=');
            int k = -1;
            if (eq) {
                *eq = '\0';
                for (int i = 0; i < 6; i++)
                    if (strcmp(tok, keys[i]) == 0)
                        k = i;
            }
            if (k < 0) {
                mpcl_strfmt(err, err_len,
                            "%s:%d: gpt: unknown option '%s' (expected vocab=, context=, layers=, "
                            "heads=, width= and optionally hidden=)",
                            name, line, tok);
                s = MPCL_ERR_FORMAT;
                break;
            }
            long v;
            if (have[k]) {
                mpcl_strfmt(err, err_len, "%s:%d: gpt: %s= given twice", name, line, keys[k]);
                s = MPCL_ERR_FORMAT;
                break;
            }
            int used = parse_uint(eq + 1, max[k], &v);
            if (used <= 0 || eq[1 + used] != '\0' || v < (k == 0 ? 2 : 1)) {
                mpcl_strfmt(err, err_len, "%s:%d: gpt: %s=%s must be an integer %d..%ld", name, line,
                            keys[k], eq + 1, k == 0 ? 2 : 1, max[k]);
                s = MPCL_ERR_FORMAT;
                break;
            }
            *dst[k] = (size_t)v;
            have[k] = 1;
        }
        for (int i = 0; i < 5 && s == MPCL_OK; i++)
            if (!have[i]) {
                mpcl_strfmt(err, err_len, "%s:%d: gpt: %s= is missing (e.g. 'gpt vocab=256 context=128 "
                            "layers=4 heads=4 width=128')",
                            name, line, keys[i]);
                s = MPCL_ERR_FORMAT;
            }
        if (s == MPCL_OK && !have[5])
            g->hidden = 4 * g->width;
        if (s == MPCL_OK && g->width % g->heads != 0) {
            mpcl_strfmt(err, err_len, "%s:%d: gpt: width=%zu is not a multiple of heads=%zu", name,
                        line, g->width, g->heads);
            s = MPCL_ERR_FORMAT;
        }
    }
    free(copy);
    if (s != MPCL_OK)
        return s;
    out->kind = MPCL_MODEL_GPT;
    out->input[0] = out->input[1] = 1;
    out->input[2] = g->context;
    out->params = mpcl_gpt_param_count(g);
    return MPCL_OK;
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
    char word0[8];
    first_word(text, word0, sizeof word0);
    if (strcmp(word0, "gpt") == 0)
        return parse_gpt(text, ps.name, out, err, err_len);
    label *labels = NULL;
    int nlabels = 0;
    mpcl_status s = scan_labels(&ps, text, &labels, &nlabels);
    if (s != MPCL_OK)
        return s;
    ps.line = 0;
    char *copy = strdup(text);
    if (!copy) {
        free(labels);
        mpcl_strfmt(err, err_len, "%s: out of host memory", ps.name);
        return MPCL_ERR_NOMEM;
    }
    int have_input = 0;
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
        char lname[MPCL_LAYER_NAME_MAX] = "";
        size_t ln = label_len(l);
        if (ln) { /* checked by scan_labels */
            snprintf(lname, sizeof lname, "%.*s", (int)ln, l);
            l = trim(l + ln + 1);
            if (!*l) {
                mpcl_strfmt(err, err_len, "%s:%d: '%s:' names no layer (expected 'NAME: layer ...')",
                            ps.name, ps.line, lname);
                s = MPCL_ERR_FORMAT;
                break;
            }
        }
        char *word = l;
        while (*l && !isspace((unsigned char)*l))
            l++;
        if (*l)
            *l++ = '\0';
        char *rest = trim(l);
        if (strcmp(word, "input") == 0 && !lname[0]) {
            if (have_input) {
                mpcl_strfmt(err, err_len, "%s:%d: a second 'input' line", ps.name, ps.line);
                s = MPCL_ERR_FORMAT;
                break;
            }
            if ((s = parse_input(&ps, rest, out)) != MPCL_OK)
                break;
            have_input = 1;
            continue;
        }
        int kind = -1;
        for (int k = 0; k < KIND_COUNT; k++)
            if (strcmp(word, KIND_NAMES[k]) == 0)
                kind = k;
        if (kind < 0) {
            mpcl_strfmt(err, err_len,
                        "%s:%d: unknown layer '%s' (expected input, conv2d, linear, relu, leaky_relu, "
                        "gelu, sigmoid, tanh, maxpool2d, avgpool2d, global_avgpool, flatten, dropout, "
                        "batchnorm2d, add or concat)",
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
        int self = out->nlayers;
        mpcl_layer_spec *ly = &out->layers[self];
        defaults(ly);
        ly->kind = (mpcl_layer_kind)kind;
        ly->line = ps.line;
        snprintf(ly->name, sizeof ly->name, "%s", lname);
        for (int i = 0; i < nlabels; i++)
            if (labels[i].line == ps.line)
                labels[i].layer = self;
        ly->ninputs = 1;
        ly->inputs[0] = self - 1; /* the line before; -1: the model's input */
        int have_from = 0;
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
            if (strcmp(tok, "from") == 0) {
                if (have_from) {
                    mpcl_strfmt(err, err_len, "%s:%d: from= given twice", ps.name, ps.line);
                    s = MPCL_ERR_FORMAT;
                    break;
                }
                have_from = 1;
                s = parse_from(&ps, labels, nlabels, self, eq + 1, ly);
            } else {
                s = set_option(&ps, ly, tok, eq + 1);
            }
            *end = saved;
            tok = trim(end);
        }
        if (s == MPCL_OK && !have_from && (kind == MPCL_LAYER_ADD || kind == MPCL_LAYER_CONCAT)) {
            mpcl_strfmt(err, err_len, "%s:%d: %s needs from=NAME (joined with the line before) or "
                        "from=A,B,...", ps.name, ps.line, word);
            s = MPCL_ERR_FORMAT;
        }
        if (s == MPCL_OK) {
            if (ly->ninputs > 1) {
                s = infer_multi(&ps, out, self, ly);
            } else {
                int nd;
                size_t shape[3];
                ref_shape(out, ly->inputs[0], &nd, shape);
                s = infer(&ps, ly, nd, shape);
            }
        }
        if (s == MPCL_OK) {
            out->params += ly->params;
            out->nlayers++;
        }
    }
    free(copy);
    free(labels);
    if (s == MPCL_OK && !have_input) {
        mpcl_strfmt(err, err_len, "%s: no 'input CxHxW' line", ps.name);
        s = MPCL_ERR_FORMAT;
    }
    if (s == MPCL_OK && out->nlayers == 0) {
        mpcl_strfmt(err, err_len, "%s: no layers", ps.name);
        s = MPCL_ERR_FORMAT;
    }
    /* every output but the last one's is read by a later layer */
    for (int i = 0; s == MPCL_OK && i + 1 < out->nlayers; i++) {
        int used = 0;
        for (int j = i + 1; j < out->nlayers && !used; j++)
            for (int k = 0; k < out->layers[j].ninputs; k++)
                used |= out->layers[j].inputs[k] == i;
        if (!used) {
            const mpcl_layer_spec *ly = &out->layers[i];
            mpcl_strfmt(err, err_len, "%s:%d: the output of this %s%s%s%s is never used: only the last "
                        "layer's output may go unused (read it with from=, or remove the line)",
                        ps.name, ly->line, KIND_NAMES[ly->kind], ly->name[0] ? " ('" : "", ly->name,
                        ly->name[0] ? "')" : "");
            s = MPCL_ERR_FORMAT;
        }
    }
    const mpcl_layer_spec *last = s == MPCL_OK ? &out->layers[out->nlayers - 1] : NULL;
    if (last && last->out_ndim != 1) {
        mpcl_strfmt(err, err_len, "%s:%d: the model must end in flat outputs (class scores); it ends in %zux%zux%zu",
                    ps.name, last->line, last->out_shape[0], last->out_shape[1], last->out_shape[2]);
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

/* Whether layer i needs a label in the text (it has a name, or a later
 * layer reads it other than as the line before), and the label: its name,
 * or "_L<i>" for a spec built in code without one. i < 0: no label. */
static int layer_label(const mpcl_model_spec *s, int i, char *dst, size_t len)
{
    if (i < 0)
        return 0;
    int needed = s->layers[i].name[0] != '\0';
    for (int j = i + 1; j < s->nlayers && !needed; j++) {
        const mpcl_layer_spec *l = &s->layers[j];
        int first = l->ninputs == 2 && l->inputs[0] == j - 1 ? 1 : 0;
        for (int k = l->ninputs > 1 ? first : 0; k < l->ninputs; k++)
            needed |= l->inputs[k] == i && (l->ninputs > 1 || j != i + 1);
    }
    if (needed && s->layers[i].name[0])
        snprintf(dst, len, "%s", s->layers[i].name);
    else if (needed)
        snprintf(dst, len, "_L%d", i);
    return needed;
}

size_t mpcl_model_spec_format(const mpcl_model_spec *s, char *dst, size_t len)
{
    size_t used = 0;
    if (dst && len)
        dst[0] = '\0';
    else
        len = 0;
    if (s->kind == MPCL_MODEL_GPT) {
        const mpcl_gpt_spec *g = &s->gpt;
        put(dst, len, &used, "gpt vocab=%zu context=%zu layers=%zu heads=%zu width=%zu hidden=%zu\n",
            g->vocab, g->context, g->layers, g->heads, g->width, g->hidden);
        return used;
    }
    put(dst, len, &used, "input %zux%zux%zu\n", s->input[0], s->input[1], s->input[2]);
    for (int i = 0; i < s->nlayers; i++) {
        const mpcl_layer_spec *l = &s->layers[i];
        char name[MPCL_LAYER_NAME_MAX + 8];
        if (layer_label(s, i, name, sizeof name))
            put(dst, len, &used, "%s: ", name);
        put(dst, len, &used, "%s", mpcl_layer_kind_name(l->kind));
        /* the inputs, where they are not the defaults */
        int multi = l->ninputs > 1, first = 0;
        if (multi && l->ninputs == 2 && l->inputs[0] == i - 1)
            first = 1; /* "add from=B": the line before + B */
        if (multi || l->inputs[0] != i - 1) {
            for (int k = first; k < l->ninputs; k++) {
                if (!layer_label(s, l->inputs[k], name, sizeof name))
                    snprintf(name, sizeof name, "input");
                put(dst, len, &used, "%s%s", k == first ? " from=" : ",", name);
            }
        }
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
