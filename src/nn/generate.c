/* nn/generate.c — text generation with a language model (a "gpt" spec):
 * the prompt in one mpcl_lm_decode call, then one token per call through
 * the key / value cache, each token drawn on the host from the logits of
 * the last position.
 *
 * Sampling, in double: p_j = exp((l_j - max l) / temperature), the top_k
 * most likely tokens kept (ties: the lower index first), then the token
 * where the running sum over the kept tokens, in index order, first
 * exceeds u * sum p. u in [0, 1) is the top 53 bits of
 * mpcl_mix64(mpcl_mix64(seed) + (i + 1) * 0x9e3779b97f4a7c15), i the index
 * of the generated token in the call: a generation is repeatable, and
 * token i's draw depends on nothing else. Temperature 0 is the argmax (the
 * lowest index on ties).
 *
 * The window: the cache holds the tokens the model sees. When it is full
 * (the context) and a token is made, the last max(1, context / 2) tokens,
 * the new one included, are read again in one call from position 0. A
 * prompt longer than the context keeps its last `context` tokens. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nn/model.h"

#define GOLDEN 0x9e3779b97f4a7c15ULL

void mpcl_sample_options_init(mpcl_sample_options *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->temperature = 0.8f;
    o->top_k = 40;
    o->seed = 1;
}

typedef struct {
    double p;
    int32_t idx;
} ranked;

/* Larger p first; on equal p, the lower index first. */
static int ranked_cmp(const void *a, const void *b)
{
    const ranked *x = a, *y = b;
    if (x->p != y->p)
        return x->p > y->p ? -1 : 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

/* Token i from the logits l (V); p and r are V scratch entries. A NaN
 * logit is never drawn; -1 when every logit is NaN or -inf. */
static int32_t sample(const float *l, size_t V, const mpcl_sample_options *o, size_t i, double *p,
                      ranked *r)
{
    size_t best = V;
    for (size_t j = 0; j < V; j++)
        if (!isnan(l[j]) && (best == V || l[j] > l[best]))
            best = j;
    if (best == V || l[best] == -INFINITY)
        return -1;
    if (o->temperature == 0.0f)
        return (int32_t)best;
    double max = l[best], t = o->temperature, sum = 0;
    for (size_t j = 0; j < V; j++) {
        double x = isnan(l[j]) ? -INFINITY : (double)l[j];
        /* +inf logits (an overflow): all of them equally likely */
        p[j] = isinf(max) ? (x == max ? 1.0 : 0.0) : exp((x - max) / t);
    }
    if (o->top_k > 0 && o->top_k < V) {
        for (size_t j = 0; j < V; j++)
            r[j] = (ranked){p[j], (int32_t)j};
        qsort(r, V, sizeof *r, ranked_cmp);
        for (size_t j = o->top_k; j < V; j++)
            p[r[j].idx] = 0.0;
    }
    for (size_t j = 0; j < V; j++)
        sum += p[j];
    uint64_t z = mpcl_mix64(mpcl_mix64(o->seed) + (uint64_t)(i + 1) * GOLDEN);
    double u = (double)(z >> 11) * 0x1p-53, target = u * sum, acc = 0;
    size_t last = best;
    for (size_t j = 0; j < V; j++) {
        if (p[j] <= 0.0)
            continue;
        acc += p[j];
        last = j;
        if (acc > target)
            return (int32_t)j;
    }
    return (int32_t)last; /* rounding: the last kept token */
}

mpcl_status mpcl_lm_generate(mpcl_model *m, const int32_t *prompt, size_t n, size_t count,
                             const mpcl_sample_options *o, int32_t *out, size_t *made,
                             int (*on_token)(void *user, int32_t token), void *user)
{
    const char *op = "mpcl_lm_generate";
    if (made)
        *made = 0;
    if (!m)
        return MPCL_ERR_ARGUMENT;
    mpcl_context *ctx = m->ctx;
    if (m->spec.kind != MPCL_MODEL_GPT || !m->gpt)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "%s: the model is not a language model (its spec is not a 'gpt' line)",
                              op);
    mpcl_sample_options defaults;
    if (!o) {
        mpcl_sample_options_init(&defaults);
        o = &defaults;
    }
    const size_t V = m->spec.gpt.vocab, Tc = m->spec.gpt.context;
    if (n == 0 || !prompt)
        return mpcl_set_error(ctx, MPCL_ERR_SHAPE, "%s: a prompt of %zu tokens%s; it needs at least 1",
                              op, n, prompt ? "" : " (NULL)");
    for (size_t j = 0; j < n; j++)
        if (prompt[j] < 0 || (size_t)prompt[j] >= V)
            return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                                  "%s: prompt token %ld (at position %zu) is outside the vocabulary "
                                  "0..%zu",
                                  op, (long)prompt[j], j, V - 1);
    if (!isfinite(o->temperature) || o->temperature < 0.0f)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "%s: temperature %g; it must be finite and >= 0 (0: greedy)", op,
                              (double)o->temperature);
    if (count == 0)
        return MPCL_OK;

    const size_t keep = Tc / 2 > 0 ? Tc / 2 : 1;
    int32_t *win = malloc(Tc * sizeof *win);
    float *logits = malloc(Tc * V * sizeof *logits);
    double *p = malloc(V * sizeof *p);
    ranked *r = malloc(V * sizeof *r);
    size_t len = n < Tc ? n : Tc, fed = len; /* window length; tokens of the last call */
    mpcl_tensor *lt = NULL;
    mpcl_status s;
    if (!win || !logits || !p || !r) {
        s = mpcl_set_error(ctx, MPCL_ERR_NOMEM, "%s: out of host memory", op);
    } else {
        memcpy(win, prompt + (n - len), len * sizeof *win);
        s = mpcl_lm_decode(m, win, 1, len, 0, &lt);
    }
    for (size_t i = 0; s == MPCL_OK && i < count; i++) {
        if ((s = mpcl_tensor_download(lt, logits, fed * V)) != MPCL_OK)
            break;
        int32_t tok = sample(logits + (fed - 1) * V, V, o, i, p, r);
        if (tok < 0) {
            s = mpcl_set_error(ctx, MPCL_ERR_STATE,
                               "%s: the logits of generated token %zu are all NaN or -inf", op, i);
            break;
        }
        if (out)
            out[i] = tok;
        if (made)
            *made = i + 1;
        if ((on_token && on_token(user, tok)) || i + 1 == count)
            break;
        if (len == Tc) { /* the cache is full: read the last `keep` tokens again */
            memmove(win, win + (Tc - keep + 1), (keep - 1) * sizeof *win);
            win[keep - 1] = tok;
            len = fed = keep;
            s = mpcl_lm_decode(m, win, 1, len, 0, &lt);
        } else {
            win[len] = tok;
            fed = 1;
            s = mpcl_lm_decode(m, &tok, 1, 1, len++, &lt);
        }
    }
    free(win);
    free(logits);
    free(p);
    free(r);
    return s;
}
