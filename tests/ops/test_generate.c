/* test_generate.c — generation with a language model (src/nn/generate.c):
 * greedy decoding through the key / value cache against an independent
 * reference that runs the whole forward pass (no cache) over the tokens the
 * model sees at every step, across several re-reads of a full context;
 * repeatable draws (the same seed, the same tokens; another seed, others);
 * top_k 1 is greedy; the sampled distribution of the first token against
 * the softmax of the downloaded logits; stopping from the token callback;
 * and the errors. Runs in every precision mode of the device. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optest.h"

#define V 11
#define CTX 8
static const char *SPEC = "gpt vocab=11 context=8 layers=2 heads=2 width=8\n";

static mpcl_model *ready_model(int mi)
{
    mpcl_model *m = optest_model(optest_modes[mi].ctx, SPEC, "tiny", 1, 1);
    optest_set_weights(m, 10, 1.0f);
    return m;
}

static void generate_ok(mpcl_model *m, const int32_t *prompt, size_t n, size_t count,
                        const mpcl_sample_options *o, int32_t *out)
{
    size_t made = 0;
    mpcl_status s = mpcl_lm_generate(m, prompt, n, count, o, out, &made, NULL, NULL);
    ck_assert_msg(s == MPCL_OK, "generate: %s", mpcl_last_error(mpcl_model_context(m)));
    ck_assert_uint_eq(made, count);
    for (size_t i = 0; i < count; i++)
        ck_assert_msg(out[i] >= 0 && out[i] < V, "token %zu is %d", i, out[i]);
}

static mpcl_sample_options sampling(float temperature, size_t top_k, uint64_t seed)
{
    mpcl_sample_options o;
    mpcl_sample_options_init(&o);
    o.temperature = temperature;
    o.top_k = top_k;
    o.seed = seed;
    return o;
}

static const int32_t PROMPT[11] = {1, 4, 4, 0, 6, 2, 2, 5, 3, 10, 9};

/* Greedy generation of count tokens after the first n of PROMPT against
 * the reference: at every step, mpcl_lm_forward over the window the model
 * sees (the last CTX tokens of the prompt; after a token that overfills
 * the context, its last CTX / 2 tokens) and the argmax of the last
 * position. The reference follows the generated tokens; a step whose
 * token is not the reference's argmax must be a near tie within the
 * mode's tolerance (cache and full pass round differently in 16 bits). */
static void greedy_case(int mi, size_t n, size_t count)
{
    mpcl_context *ctx = optest_modes[mi].ctx;
    mpcl_model *m = ready_model(mi);
    mpcl_sample_options o = sampling(0.0f, 40, 1);
    int32_t gen[64], seq[80];
    ck_assert_uint_le(count, 64);
    generate_ok(m, PROMPT, n, count, &o, gen);
    memcpy(seq, PROMPT, n * sizeof *seq);
    memcpy(seq + n, gen, count * sizeof *seq);
    double u = optest_unit_roundoff(optest_modes[mi].mode);
    double tol = optest_modes[mi].mode == MPCL_PRECISION_FP32 ? 1e-5 : 60 * u;
    size_t ws = n > CTX ? n - CTX : 0, end = n, rereads = 0, exact = 0, seen[V] = {0};
    for (size_t i = 0; i < count; i++) {
        size_t T = end - ws;
        ck_assert_uint_le(T, CTX);
        mpcl_tensor *logits;
        mpcl_status s = mpcl_lm_forward(m, seq + ws, 1, T, 0, &logits);
        ck_assert_msg(s == MPCL_OK, "forward: %s", mpcl_last_error(ctx));
        float *all = optest_download(logits), *row = all + (T - 1) * V;
        size_t arg = 0;
        for (size_t v = 1; v < V; v++)
            if (row[v] > row[arg])
                arg = v;
        double max = row[arg];
        ck_assert_msg(row[gen[i]] >= max - tol * (1 + fabs(max)),
                      "[%s] n %zu, token %zu (window %zu..%zu): generated %d (logit %.7g), the "
                      "argmax of the full pass is %zu (%.7g)",
                      optest_modes[mi].name, n, i, ws, end - 1, gen[i], (double)row[gen[i]], arg,
                      max);
        exact += (size_t)gen[i] == arg;
        seen[gen[i]] = 1;
        free(all);
        end++;
        if (end - ws > CTX) {
            ws = end - CTX / 2;
            rereads++;
        }
    }
    ck_assert_uint_ge(rereads, 2);
    size_t distinct = 0;
    for (size_t v = 0; v < V; v++)
        distinct += seen[v];
    ck_assert_msg(distinct >= 3, "[%s] greedy generation uses %zu tokens only: a degenerate model",
                  optest_modes[mi].name, distinct);
    if (optest_modes[mi].mode == MPCL_PRECISION_FP32)
        ck_assert_uint_eq(exact, count);
    else
        ck_assert_msg(exact + count / 8 >= count, "[%s] %zu of %zu tokens are near ties",
                      optest_modes[mi].name, count - exact, count);
    mpcl_model_destroy(m);
}

START_TEST(greedy_matches_full_forward)
{
    size_t count = optest_small() ? 12 : 30;
    greedy_case(_i, 3, count);
    if (!optest_small())
        greedy_case(_i, 11, count); /* a prompt longer than the context */
}
END_TEST

/* The same seed twice: the same tokens; another seed: others. top_k 1 at
 * temperature 1: greedy's tokens. The options NULL: the defaults. */
START_TEST(seeds_and_top_k)
{
    mpcl_model *m = ready_model(_i);
    size_t count = optest_small() ? 6 : 40; /* oclgrind: the calls, not the statistics */
    int32_t a[40], b[40], c[40], g[40];
    mpcl_sample_options o = sampling(1.0f, 0, 7);
    generate_ok(m, PROMPT, 3, count, &o, a);
    generate_ok(m, PROMPT, 3, count, &o, b);
    ck_assert_msg(memcmp(a, b, count * sizeof *a) == 0, "seed 7 twice gave different tokens");
    o.seed = 8;
    generate_ok(m, PROMPT, 3, count, &o, c);
    ck_assert_msg(memcmp(a, c, count * sizeof *a) != 0, "seeds 7 and 8 gave the same tokens");
    mpcl_sample_options greedy = sampling(0.0f, 0, 1), top1 = sampling(1.0f, 1, 99);
    generate_ok(m, PROMPT, 3, count, &greedy, g);
    generate_ok(m, PROMPT, 3, count, &top1, a);
    ck_assert_msg(memcmp(a, g, count * sizeof *a) == 0, "top_k 1 is not greedy");
    if (optest_small()) {
        mpcl_model_destroy(m);
        return;
    }
    mpcl_sample_options d;
    mpcl_sample_options_init(&d);
    ck_assert(d.temperature == 0.8f && d.top_k == 40 && d.seed == 1);
    generate_ok(m, PROMPT, 3, count, NULL, a);
    generate_ok(m, PROMPT, 3, count, &d, b);
    ck_assert_msg(memcmp(a, b, count * sizeof *a) == 0, "NULL options are not the defaults");
    mpcl_model_destroy(m);
}
END_TEST

/* The first sampled token over many seeds against the softmax of the
 * logits (temperature t, the top_k most likely kept) computed here from
 * the downloaded logits of the prompt. */
static void distribution_case(int mi, mpcl_model *m, float t, size_t top_k, size_t calls)
{
    mpcl_context *ctx = mpcl_model_context(m);
    mpcl_tensor *logits;
    mpcl_status s = mpcl_lm_decode(m, PROMPT, 1, 3, 0, &logits);
    ck_assert_msg(s == MPCL_OK, "decode: %s", mpcl_last_error(ctx));
    float *all = optest_download(logits), *row = all + 2 * V;
    double p[V], max = row[0], sum = 0;
    for (size_t v = 1; v < V; v++)
        max = fmax(max, row[v]);
    for (size_t v = 0; v < V; v++) {
        p[v] = exp((row[v] - max) / t);
        /* kept: fewer than top_k tokens rank above it (ties: lower index first) */
        size_t above = 0;
        for (size_t w = 0; w < V; w++)
            above += row[w] > row[v] || (row[w] == row[v] && w < v);
        if (top_k && above >= top_k)
            p[v] = 0;
        sum += p[v];
    }
    double pmax = 0;
    for (size_t v = 0; v < V; v++)
        pmax = fmax(pmax, p[v] /= sum);
    ck_assert_msg(pmax < 0.8, "[%s] the most likely token has p %.3f: too easy a test",
                  optest_modes[mi].name, pmax);
    size_t hits[V] = {0};
    for (size_t k = 0; k < calls; k++) {
        mpcl_sample_options o = sampling(t, top_k, 1000 + k);
        int32_t tok;
        generate_ok(m, PROMPT, 3, 1, &o, &tok);
        hits[tok]++;
    }
    for (size_t v = 0; v < V; v++) {
        double f = (double)hits[v] / (double)calls, se = sqrt(p[v] * (1 - p[v]) / (double)calls);
        if (p[v] == 0)
            ck_assert_msg(hits[v] == 0, "[%s] token %zu is outside the top %zu, drawn %zu times",
                          optest_modes[mi].name, v, top_k, hits[v]);
        else if (!optest_small())
            ck_assert_msg(fabs(f - p[v]) <= 4 * se + 1.0 / (double)calls,
                          "[%s] t %g top_k %zu: token %zu drawn %.4f of %zu times, p %.4f (se %.4f)",
                          optest_modes[mi].name, (double)t, top_k, v, f, calls, p[v], se);
    }
    free(all);
}

START_TEST(sampling_distribution)
{
    mpcl_model *m = ready_model(_i);
    size_t calls = optest_small() ? 2 : 2000; /* oclgrind: the calls, not the statistics */
    distribution_case(_i, m, 1.0f, 0, calls);
    if (!optest_small())
        distribution_case(_i, m, 0.7f, 3, calls);
    mpcl_model_destroy(m);
}
END_TEST

typedef struct {
    size_t calls, stop_at;
    int32_t seen[64];
} stopper;

static int on_token(void *user, int32_t token)
{
    stopper *st = user;
    st->seen[st->calls++] = token;
    return st->calls == st->stop_at;
}

/* on_token sees each token as it is made; its non-zero return stops the
 * generation, and *made counts the tokens made. */
START_TEST(callback_stops)
{
    mpcl_model *m = ready_model(_i);
    mpcl_sample_options o = sampling(0.0f, 0, 1);
    /* the stop after a re-read of the context (oclgrind: before) */
    size_t count = optest_small() ? 6 : 20, stop = optest_small() ? 4 : 11;
    int32_t full[20], out[20];
    generate_ok(m, PROMPT, 3, count, &o, full);
    for (size_t i = 0; i < 20; i++)
        out[i] = -7;
    stopper st = {.stop_at = stop};
    size_t made = 0;
    mpcl_status s = mpcl_lm_generate(m, PROMPT, 3, count, &o, out, &made, on_token, &st);
    ck_assert_msg(s == MPCL_OK, "generate: %s", mpcl_last_error(mpcl_model_context(m)));
    ck_assert_uint_eq(made, stop);
    ck_assert_uint_eq(st.calls, stop);
    ck_assert(memcmp(out, full, stop * sizeof *out) == 0);
    ck_assert(memcmp(st.seen, full, stop * sizeof *out) == 0);
    ck_assert_int_eq(out[stop], -7);
    /* without a stop: every token through the callback, out may be NULL */
    stopper all = {.stop_at = 0};
    s = mpcl_lm_generate(m, PROMPT, 3, count, &o, NULL, NULL, on_token, &all);
    ck_assert_int_eq(s, MPCL_OK);
    ck_assert_uint_eq(all.calls, count);
    ck_assert(memcmp(all.seen, full, count * sizeof *full) == 0);
    /* count 0: nothing made */
    made = 5;
    ck_assert_int_eq(mpcl_lm_generate(m, PROMPT, 3, 0, &o, out, &made, NULL, NULL), MPCL_OK);
    ck_assert_uint_eq(made, 0);
    mpcl_model_destroy(m);
}
END_TEST

static void expect_error(mpcl_model *m, mpcl_status want, const int32_t *prompt, size_t n, float t,
                         const char *needle)
{
    mpcl_context *ctx = mpcl_model_context(m);
    mpcl_sample_options o = sampling(t, 0, 1);
    int32_t out[4];
    size_t made = 9;
    ck_assert_int_eq(mpcl_lm_generate(m, prompt, n, 4, &o, out, &made, NULL, NULL), want);
    ck_assert_uint_eq(made, 0);
    const char *msg = mpcl_last_error(ctx);
    ck_assert_msg(strstr(msg, "mpcl_lm_generate") && strstr(msg, needle), "'%s' lacks '%s'", msg,
                  needle);
}

START_TEST(errors)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    mpcl_model *m = ready_model(_i);
    int32_t bad[3] = {1, 11, 2}, neg[2] = {3, -1};
    expect_error(m, MPCL_ERR_SHAPE, PROMPT, 0, 0.0f, "0 tokens");
    expect_error(m, MPCL_ERR_ARGUMENT, bad, 3, 0.0f, "token 11");
    expect_error(m, MPCL_ERR_ARGUMENT, neg, 2, 0.0f, "token -1");
    expect_error(m, MPCL_ERR_ARGUMENT, PROMPT, 3, -0.5f, "temperature -0.5");
    expect_error(m, MPCL_ERR_ARGUMENT, PROMPT, 3, NAN, "temperature nan");
    expect_error(m, MPCL_ERR_ARGUMENT, PROMPT, 3, INFINITY, "temperature inf");
    ck_assert_int_eq(mpcl_lm_generate(NULL, PROMPT, 3, 4, NULL, NULL, NULL, NULL, NULL),
                     MPCL_ERR_ARGUMENT);
    mpcl_model_destroy(m);
    /* an image model */
    mpcl_model_spec spec;
    char err[256];
    ck_assert_int_eq(mpcl_model_spec_parse("input 1x4x4\nflatten\nlinear out=3\n", "img", &spec, err,
                                           sizeof err),
                     MPCL_OK);
    ck_assert_int_eq(mpcl_model_create(ctx, &spec, 1, 1, &m), MPCL_OK);
    expect_error(m, MPCL_ERR_ARGUMENT, PROMPT, 3, 0.0f, "not a language model");
    mpcl_model_destroy(m);
}
END_TEST

int main(void)
{
    optest_init();
    Suite *s = suite_create("generate");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"greedy_matches_full_forward", greedy_matches_full_forward},
        {"seeds_and_top_k", seeds_and_top_k},
        {"sampling_distribution", sampling_distribution},
        {"callback_stops", callback_stops},
        {"errors", errors},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_set_timeout(tc, 600);
        tcase_add_loop_test(tc, cases[i].fn, 0, optest_nmodes);
        suite_add_tcase(s, tc);
    }
    return optest_run(s);
}
