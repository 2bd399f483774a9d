/* infer.c — a model's inference: evaluation, prediction and
 * classification of byte images in batches, with the normalisation the
 * model owns. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nn/model.h"

mpcl_status mpcl_model_set_normalization(mpcl_model *m, const mpcl_normalization *n)
{
    const char *op = "mpcl_model_set_normalization";
    if (!m)
        return MPCL_ERR_ARGUMENT;
    if (!n)
        return mpcl_set_error(m->ctx, MPCL_ERR_ARGUMENT, "%s: no normalisation", op);
    if (n->channels != 1 && n->channels != m->spec.input[0])
        return mpcl_set_error(m->ctx, MPCL_ERR_ARGUMENT,
                              "%s: %zu values, but the model's input has %zu channels (give 1 or %zu)", op,
                              n->channels, m->spec.input[0], m->spec.input[0]);
    if (n->channels > MPCL_MAX_NORM_CHANNELS)
        return mpcl_set_error(m->ctx, MPCL_ERR_ARGUMENT, "%s: at most %d channels (one value for all of "
                              "more)", op, MPCL_MAX_NORM_CHANNELS);
    for (size_t c = 0; c < n->channels; c++)
        if (!isfinite(n->mean[c]) || !isfinite(n->std[c]) || !(n->std[c] > 0.0f))
            return mpcl_set_error(m->ctx, MPCL_ERR_ARGUMENT,
                                  "%s: channel %zu has mean %g and std %g (a finite mean and a std > 0)",
                                  op, c, (double)n->mean[c], (double)n->std[c]);
    mpcl_normalization_init(&m->norm);
    m->norm.channels = n->channels;
    for (size_t c = 0; c < n->channels; c++) {
        m->norm.mean[c] = n->mean[c];
        m->norm.std[c] = n->std[c];
    }
    return MPCL_OK;
}

void mpcl_model_normalization(const mpcl_model *m, mpcl_normalization *out)
{
    if (!out)
        return;
    if (m)
        *out = m->norm;
    else
        mpcl_normalization_init(out);
}

/* Runs forward on n samples in batches, calling back with the host logits. */
typedef void (*logits_fn)(void *user, size_t first, size_t b, size_t classes, const float *logits);

static mpcl_status run_batches(mpcl_model *m, const uint8_t *images, size_t n, size_t batch, logits_fn fn,
                               void *user)
{
    mpcl_context *ctx = m->ctx;
    const mpcl_model_spec *sp = &m->spec;
    size_t sample = sp->input[0] * sp->input[1] * sp->input[2];
    size_t classes = sp->layers[sp->nlayers - 1].out_shape[0];
    if (batch == 0 || batch > m->max_batch)
        batch = m->max_batch;
    size_t xs[4] = {batch, sp->input[0], sp->input[1], sp->input[2]};
    mpcl_tensor *xu = NULL, *x = NULL;
    float *host = malloc(batch * classes * sizeof *host);
    mpcl_status s = host ? MPCL_OK : mpcl_set_error(ctx, MPCL_ERR_NOMEM, "evaluation: out of host memory");
    if (s == MPCL_OK)
        s = mpcl_tensor_create(ctx, MPCL_U8, 4, xs, MPCL_MEM_SCRATCH, &xu);
    if (s == MPCL_OK)
        s = mpcl_tensor_create(ctx, mpcl_storage_dtype(ctx), 4, xs, MPCL_MEM_SCRATCH, &x);
    for (size_t first = 0; s == MPCL_OK && first < n; first += batch) {
        size_t b = n - first < batch ? n - first : batch;
        mpcl_tensor *vu = NULL, *vx = NULL, *logits = NULL;
        xs[0] = b;
        s = mpcl_tensor_view(xu, 0, 4, xs, &vu);
        if (s == MPCL_OK)
            s = mpcl_tensor_view(x, 0, 4, xs, &vx);
        if (s == MPCL_OK)
            s = mpcl_tensor_write(vu, images + first * sample, b * sample);
        if (s == MPCL_OK)
            s = mpcl_normalize_u8(ctx, vx, vu, &m->norm);
        if (s == MPCL_OK)
            s = mpcl_model_forward(m, vx, 0, 0, &logits);
        if (s == MPCL_OK)
            s = mpcl_tensor_download(logits, host, b * classes);
        if (s == MPCL_OK)
            fn(user, first, b, classes, host);
        mpcl_tensor_destroy(vu);
        mpcl_tensor_destroy(vx);
    }
    mpcl_tensor_destroy(xu);
    mpcl_tensor_destroy(x);
    free(host);
    return s;
}

typedef struct {
    const uint8_t *labels;
    double loss_sum;
    size_t correct;
    uint64_t *confusion;
    float *probs;
    int *argmax;
} eval_acc;

/* log-softmax in double on the host, per row */
static void eval_rows(void *user, size_t first, size_t b, size_t classes, const float *logits)
{
    eval_acc *e = user;
    for (size_t i = 0; i < b; i++) {
        const float *row = logits + i * classes;
        size_t best = 0;
        for (size_t c = 1; c < classes; c++)
            if (row[c] > row[best])
                best = c;
        double mx = row[best], sum = 0;
        for (size_t c = 0; c < classes; c++)
            sum += exp((double)row[c] - mx);
        if (e->argmax)
            e->argmax[first + i] = (int)best;
        if (e->probs)
            for (size_t c = 0; c < classes; c++)
                e->probs[(first + i) * classes + c] = (float)(exp((double)row[c] - mx) / sum);
        if (e->labels) {
            unsigned y = e->labels[first + i];
            e->loss_sum += (log(sum) + mx) - (y < classes ? (double)row[y] : NAN);
            e->correct += best == y;
            if (e->confusion && y < classes)
                e->confusion[y * classes + best]++;
        }
    }
}

mpcl_status mpcl_model_evaluate(mpcl_model *m, const uint8_t *images, const uint8_t *labels, size_t n,
                                size_t batch, double *loss, double *accuracy, uint64_t *confusion)
{
    if (!m || !images || !labels || n == 0)
        return m ? mpcl_set_error(m->ctx, MPCL_ERR_ARGUMENT, "mpcl_model_evaluate: no samples") : MPCL_ERR_ARGUMENT;
    const mpcl_model_spec *sp = &m->spec;
    size_t classes = sp->layers[sp->nlayers - 1].out_shape[0];
    if (confusion)
        memset(confusion, 0, classes * classes * sizeof *confusion);
    eval_acc e = {.labels = labels, .confusion = confusion};
    mpcl_status s = run_batches(m, images, n, batch, eval_rows, &e);
    if (s != MPCL_OK)
        return s;
    if (loss)
        *loss = e.loss_sum / (double)n;
    if (accuracy)
        *accuracy = (double)e.correct / (double)n;
    return MPCL_OK;
}

mpcl_status mpcl_model_predict(mpcl_model *m, const uint8_t *images, size_t n, size_t batch, float *probs)
{
    if (!m || !images || !probs || n == 0)
        return m ? mpcl_set_error(m->ctx, MPCL_ERR_ARGUMENT, "mpcl_model_predict: no samples") : MPCL_ERR_ARGUMENT;
    eval_acc e = {.probs = probs};
    return run_batches(m, images, n, batch, eval_rows, &e);
}

mpcl_status mpcl_model_classify(mpcl_model *m, const uint8_t *images, size_t n, float *probs, int *labels)
{
    if (!m)
        return MPCL_ERR_ARGUMENT;
    if (!images || n == 0)
        return mpcl_set_error(m->ctx, MPCL_ERR_ARGUMENT, "mpcl_model_classify: no samples");
    eval_acc e = {.probs = probs, .argmax = labels};
    return run_batches(m, images, n, m->max_batch, eval_rows, &e);
}
