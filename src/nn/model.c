/* model.c — a sequential model of the op library's layers.
 *
 * Parameters: one flat buffer each for the FP32 master weights (P), the
 * working copy and the gradients (storage dtype, P); a layer's weight and
 * bias are views at offsets aligned for sub-buffers. Activations: one tensor
 * per layer output, for max_batch samples, with views for smaller batches;
 * flatten is a view of its input (no copy), and so is its gradient.
 *
 * Letters: B batch, C channels, H W height and width, F features. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nn/model.h"

/* ------------------------------------------------------------ creation */

static size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

/* splitmix64: the model's initialisation stream from its seed. */
static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static float uniform(uint64_t *s, float bound)
{
    double u = (double)(splitmix(s) >> 11) * 0x1p-53; /* [0, 1) */
    return (float)((2.0 * u - 1.0) * bound);
}

/* Layer l's weight and bias shapes. */
static int weight_shape(const mpcl_layer_spec *s, size_t *shape)
{
    if (s->kind == MPCL_LAYER_CONV2D) {
        shape[0] = s->out;
        shape[1] = s->in_shape[0];
        shape[2] = (size_t)s->kernel_h;
        shape[3] = (size_t)s->kernel_w;
        return 4;
    }
    if (s->kind == MPCL_LAYER_LINEAR) {
        shape[0] = s->out;
        shape[1] = s->in;
        return 2;
    }
    shape[0] = s->in_shape[0]; /* batchnorm2d gamma (C) */
    return 1;
}

static int has_params(const mpcl_layer_spec *s)
{
    return s->kind == MPCL_LAYER_CONV2D || s->kind == MPCL_LAYER_LINEAR || s->kind == MPCL_LAYER_BATCHNORM2D;
}

static int has_bias(const mpcl_layer_spec *s)
{
    return s->kind == MPCL_LAYER_BATCHNORM2D || (has_params(s) && s->bias);
}

static mpcl_status init_params(mpcl_model *m, uint64_t seed)
{
    float *host = calloc(m->padded, sizeof *host);
    if (!host)
        return mpcl_set_error(m->ctx, MPCL_ERR_NOMEM, "mpcl_model_create: out of host memory");
    uint64_t s = seed ^ 0x6d70636c6d6f646cULL;
    for (int l = 0; l < m->spec.nlayers; l++) {
        mpcl_layer *ly = &m->layers[l];
        if (!has_params(&ly->spec))
            continue;
        if (ly->spec.kind == MPCL_LAYER_BATCHNORM2D) {
            for (size_t i = 0; i < ly->w_numel; i++)
                host[ly->w_off + i] = 1.0f; /* gamma 1, beta 0 */
            continue;
        }
        /* kaiming_uniform_(a = sqrt(5)): bound = sqrt(6 / ((1 + a^2) fan_in)) = 1 / sqrt(fan_in);
         * the bias: uniform(-1 / sqrt(fan_in), 1 / sqrt(fan_in)) */
        size_t fan_in = ly->w_numel / ly->spec.out;
        float bound = (float)(1.0 / sqrt((double)fan_in));
        for (size_t i = 0; i < ly->w_numel; i++)
            host[ly->w_off + i] = uniform(&s, bound);
        for (size_t i = 0; i < ly->b_numel; i++)
            host[ly->b_off + i] = uniform(&s, bound);
    }
    mpcl_status st = mpcl_tensor_upload(m->master, host, m->padded);
    free(host);
    if (st == MPCL_OK && m->working != m->master)
        st = mpcl_refresh_working(m->ctx, m->working, m->master);
    for (int l = 0; st == MPCL_OK && l < m->spec.nlayers; l++) {
        mpcl_layer *ly = &m->layers[l];
        if (ly->running_mean)
            st = mpcl_tensor_fill(ly->running_mean, 0.0f);
        if (st == MPCL_OK && ly->running_var)
            st = mpcl_tensor_fill(ly->running_var, 1.0f);
    }
    return st;
}

/* The activation tensors of layer l for `b` samples (views of the full ones). */
static mpcl_status make_views(mpcl_model *m, size_t b)
{
    for (int l = 0; l < m->spec.nlayers; l++) {
        mpcl_layer *ly = &m->layers[l];
        mpcl_tensor_destroy(ly->act);
        mpcl_tensor_destroy(ly->dact);
        mpcl_tensor_destroy(ly->argmax);
        ly->act = ly->dact = ly->argmax = NULL;
    }
    size_t shape[4];
    for (int l = 0; l < m->spec.nlayers; l++) {
        mpcl_layer *ly = &m->layers[l];
        memcpy(shape, ly->out_shape, sizeof shape);
        shape[0] = b;
        mpcl_status s;
        if (ly->spec.kind == MPCL_LAYER_FLATTEN) {
            if (l == 0)
                continue; /* a view of the input, made at forward time; no gradient */
            mpcl_layer *prev = &m->layers[l - 1];
            s = mpcl_tensor_view(prev->act, 0, 2, shape, &ly->act);
            if (s == MPCL_OK)
                s = mpcl_tensor_view(prev->dact, 0, 2, shape, &ly->dact);
        } else {
            s = mpcl_tensor_view(ly->act_full, 0, ly->out_ndim, shape, &ly->act);
            if (s == MPCL_OK)
                s = mpcl_tensor_view(ly->dact_full, 0, ly->out_ndim, shape, &ly->dact);
            if (s == MPCL_OK && ly->argmax_full)
                s = mpcl_tensor_view(ly->argmax_full, 0, ly->out_ndim, shape, &ly->argmax);
        }
        if (s != MPCL_OK)
            return s;
    }
    m->batch = b;
    return MPCL_OK;
}

static mpcl_status build(mpcl_model *m)
{
    mpcl_context *ctx = m->ctx;
    mpcl_dtype sd = mpcl_storage_dtype(ctx);
    size_t align = mpcl_view_alignment(ctx, MPCL_F16); /* also aligned for f32 */
    size_t off = 0;
    for (int l = 0; l < m->spec.nlayers; l++) {
        mpcl_layer *ly = &m->layers[l];
        ly->spec = m->spec.layers[l];
        if (has_params(&ly->spec)) {
            size_t ws[4];
            int wn = weight_shape(&ly->spec, ws);
            ly->w_numel = 1;
            for (int i = 0; i < wn; i++)
                ly->w_numel *= ws[i];
            ly->w_off = off;
            off = round_up(off + ly->w_numel, align);
            if (has_bias(&ly->spec)) {
                ly->b_numel = ly->spec.kind == MPCL_LAYER_BATCHNORM2D ? ly->w_numel : ly->spec.out;
                ly->b_off = off;
                off = round_up(off + ly->b_numel, align);
            }
        }
    }
    m->padded = off ? off : align;
    size_t p[1] = {m->padded};
    mpcl_status s = mpcl_tensor_create(ctx, MPCL_F32, 1, p, MPCL_MEM_WEIGHTS, &m->master);
    if (s == MPCL_OK && sd != MPCL_F32)
        s = mpcl_tensor_create(ctx, sd, 1, p, MPCL_MEM_WEIGHTS, &m->working);
    else if (s == MPCL_OK)
        m->working = m->master;
    if (s == MPCL_OK)
        s = mpcl_tensor_create(ctx, sd, 1, p, MPCL_MEM_GRADIENTS, &m->grad);
    if (s == MPCL_OK)
        s = mpcl_tensor_fill(m->grad, 0.0f); /* padding stays zero */
    for (int l = 0; s == MPCL_OK && l < m->spec.nlayers; l++) {
        mpcl_layer *ly = &m->layers[l];
        const mpcl_layer_spec *sp = &ly->spec;
        if (has_params(sp)) {
            size_t ws[4], bs[1] = {ly->b_numel};
            int wn = weight_shape(sp, ws);
            s = mpcl_tensor_view(m->working, ly->w_off, wn, ws, &ly->w);
            if (s == MPCL_OK)
                s = mpcl_tensor_view(m->grad, ly->w_off, wn, ws, &ly->gw);
            if (s == MPCL_OK && ly->b_numel)
                s = mpcl_tensor_view(m->working, ly->b_off, 1, bs, &ly->b);
            if (s == MPCL_OK && ly->b_numel)
                s = mpcl_tensor_view(m->grad, ly->b_off, 1, bs, &ly->gb);
        }
        if (s == MPCL_OK && sp->kind == MPCL_LAYER_BATCHNORM2D) {
            size_t c[1] = {sp->in_shape[0]};
            s = mpcl_tensor_create(ctx, MPCL_F32, 1, c, MPCL_MEM_WEIGHTS, &ly->running_mean);
            if (s == MPCL_OK)
                s = mpcl_tensor_create(ctx, MPCL_F32, 1, c, MPCL_MEM_WEIGHTS, &ly->running_var);
            if (s == MPCL_OK)
                s = mpcl_tensor_create(ctx, MPCL_F32, 1, c, MPCL_MEM_ACTIVATIONS, &ly->save_mean);
            if (s == MPCL_OK)
                s = mpcl_tensor_create(ctx, MPCL_F32, 1, c, MPCL_MEM_ACTIVATIONS, &ly->save_invstd);
        }
        /* output tensors */
        ly->out_ndim = sp->out_ndim == 3 ? 4 : 2;
        ly->out_shape[0] = m->max_batch;
        for (int i = 0; i < 3; i++)
            ly->out_shape[i + 1] = sp->out_shape[i];
        if (s == MPCL_OK && sp->kind != MPCL_LAYER_FLATTEN) {
            s = mpcl_tensor_create(ctx, sd, ly->out_ndim, ly->out_shape, MPCL_MEM_ACTIVATIONS, &ly->act_full);
            if (s == MPCL_OK)
                s = mpcl_tensor_create(ctx, sd, ly->out_ndim, ly->out_shape, MPCL_MEM_GRADIENTS, &ly->dact_full);
            if (s == MPCL_OK && sp->kind == MPCL_LAYER_MAXPOOL2D)
                s = mpcl_tensor_create(ctx, MPCL_I32, ly->out_ndim, ly->out_shape, MPCL_MEM_ACTIVATIONS, &ly->argmax_full);
        }
    }
    return s;
}

mpcl_status mpcl_model_create(mpcl_context *ctx, const mpcl_model_spec *spec, size_t max_batch,
                              uint64_t seed, mpcl_model **out)
{
    const char *op = "mpcl_model_create";
    mpcl_status s = mpcl_check_ctx(ctx, op);
    if (s != MPCL_OK)
        return s;
    if (!spec || !out || spec->nlayers < 1 || max_batch < 1)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: spec and out must be set, with layers and max_batch >= 1", op);
    *out = NULL;
    mpcl_model *m = calloc(1, sizeof *m);
    if (m)
        m->layers = calloc((size_t)spec->nlayers, sizeof *m->layers);
    if (!m || !m->layers) {
        free(m);
        return mpcl_set_error(ctx, MPCL_ERR_NOMEM, "%s: out of host memory", op);
    }
    m->ctx = ctx;
    m->spec = *spec;
    m->max_batch = max_batch;
    m->seed = seed;
    m->input_mean = 0.0f;
    m->input_std = 1.0f;
    s = build(m);
    /* batchnorm2d + relu run as one pass (MPCL_FUSE=0: as two, for
     * comparing; the results are the same bits) */
    const char *fuse = getenv("MPCL_FUSE");
    for (int l = 0; l + 1 < spec->nlayers && !(fuse && strcmp(fuse, "0") == 0); l++)
        m->layers[l].fused_relu = spec->layers[l].kind == MPCL_LAYER_BATCHNORM2D &&
                                  spec->layers[l + 1].kind == MPCL_LAYER_RELU;
    if (s == MPCL_OK)
        s = init_params(m, seed);
    if (s == MPCL_OK)
        s = make_views(m, max_batch);
    if (s != MPCL_OK) {
        mpcl_model_destroy(m);
        return s;
    }
    *out = m;
    return MPCL_OK;
}

void mpcl_model_destroy(mpcl_model *m)
{
    if (!m)
        return;
    for (int l = 0; m->layers && l < m->spec.nlayers; l++) {
        mpcl_layer *ly = &m->layers[l];
        mpcl_tensor *all[] = {ly->act, ly->dact, ly->argmax, ly->act_full, ly->dact_full, ly->argmax_full,
                              ly->w, ly->b, ly->gw, ly->gb, ly->running_mean, ly->running_var,
                              ly->save_mean, ly->save_invstd};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            mpcl_tensor_destroy(all[i]);
    }
    free(m->layers);
    if (m->working != m->master)
        mpcl_tensor_destroy(m->working);
    mpcl_tensor_destroy(m->master);
    mpcl_tensor_destroy(m->grad);
    free(m);
}

const mpcl_model_spec *mpcl_model_get_spec(const mpcl_model *m) { return m ? &m->spec : NULL; }
size_t mpcl_model_param_count(const mpcl_model *m) { return m ? m->spec.params : 0; }
mpcl_tensor *mpcl_model_master(mpcl_model *m) { return m ? m->master : NULL; }
mpcl_tensor *mpcl_model_working(mpcl_model *m) { return m ? m->working : NULL; }
mpcl_tensor *mpcl_model_grad(mpcl_model *m) { return m ? m->grad : NULL; }

mpcl_status mpcl_model_zero_grad(mpcl_model *m)
{
    if (!m)
        return MPCL_ERR_ARGUMENT;
    return mpcl_tensor_fill(m->grad, 0.0f);
}

/* --------------------------------------------------------- forward/back */

static mpcl_conv2d_params conv_params(const mpcl_layer_spec *s)
{
    mpcl_conv2d_params p = {s->stride_h, s->stride_w, s->pad_h, s->pad_w, s->dilation_h, s->dilation_w};
    return p;
}

static mpcl_pool2d_params pool_params(const mpcl_layer_spec *s)
{
    mpcl_pool2d_params p = {s->kernel_h, s->kernel_w, s->stride_h, s->stride_w, s->pad_h, s->pad_w};
    return p;
}

static int activation_of(mpcl_layer_kind k, mpcl_activation *f)
{
    switch (k) {
    case MPCL_LAYER_RELU: *f = MPCL_ACT_RELU; return 1;
    case MPCL_LAYER_LEAKY_RELU: *f = MPCL_ACT_LEAKY_RELU; return 1;
    case MPCL_LAYER_GELU: *f = MPCL_ACT_GELU; return 1;
    case MPCL_LAYER_SIGMOID: *f = MPCL_ACT_SIGMOID; return 1;
    case MPCL_LAYER_TANH: *f = MPCL_ACT_TANH; return 1;
    default: return 0;
    }
}

/* Dropout masks differ per layer and per step: the layer index is mixed
 * into the seed. */
static uint64_t dropout_seed(const mpcl_model *m, int l)
{
    return m->seed * 0x9e3779b97f4a7c15ULL + (uint64_t)(l + 1) * 0xd1b54a32d192ed03ULL;
}

mpcl_status mpcl_model_forward(mpcl_model *m, const mpcl_tensor *x, int training, uint64_t step,
                               mpcl_tensor **logits)
{
    const char *op = "mpcl_model_forward";
    if (!m || !logits)
        return MPCL_ERR_ARGUMENT;
    mpcl_context *ctx = m->ctx;
    size_t in[4] = {0, m->spec.input[0], m->spec.input[1], m->spec.input[2]};
    mpcl_status s = mpcl_check_tensor(ctx, op, "x", x, mpcl_storage_dtype(ctx), 4, in);
    if (s != MPCL_OK)
        return s;
    size_t b = x->shape[0];
    if (b > m->max_batch)
        return mpcl_set_error(ctx, MPCL_ERR_SHAPE, "%s: batch %zu is larger than the model's max_batch %zu", op,
                              b, m->max_batch);
    if (b != m->batch && (s = make_views(m, b)) != MPCL_OK)
        return s;
    m->input = x;
    m->training = training;
    m->step = step;
    const mpcl_tensor *cur = x;
    for (int l = 0; l < m->spec.nlayers && s == MPCL_OK; l++) {
        mpcl_layer *ly = &m->layers[l];
        const mpcl_layer_spec *sp = &ly->spec;
        mpcl_activation f;
        switch (sp->kind) {
        case MPCL_LAYER_CONV2D: {
            mpcl_conv2d_params p = conv_params(sp);
            s = mpcl_conv2d_forward(ctx, ly->act, cur, ly->w, ly->b, &p);
            break;
        }
        case MPCL_LAYER_LINEAR:
            s = mpcl_linear_forward(ctx, ly->act, cur, ly->w, ly->b);
            break;
        case MPCL_LAYER_MAXPOOL2D: {
            mpcl_pool2d_params p = pool_params(sp);
            s = mpcl_maxpool2d_forward(ctx, ly->act, ly->argmax, cur, &p);
            break;
        }
        case MPCL_LAYER_AVGPOOL2D: {
            mpcl_pool2d_params p = pool_params(sp);
            s = mpcl_avgpool2d_forward(ctx, ly->act, cur, &p);
            break;
        }
        case MPCL_LAYER_FLATTEN:
            if (l == 0) { /* a view of this call's input */
                size_t shape[2] = {b, ly->out_shape[1]};
                mpcl_tensor_destroy(ly->act);
                ly->act = NULL;
                s = mpcl_tensor_view((mpcl_tensor *)x, 0, 2, shape, &ly->act);
            }
            break; /* otherwise a view of the previous output */
        case MPCL_LAYER_DROPOUT:
            if (training && sp->p > 0.0f)
                s = mpcl_dropout_forward(ctx, ly->act, cur, sp->p, dropout_seed(m, l), step);
            else
                s = mpcl_scale(ctx, ly->act, cur, 1.0f);
            break;
        case MPCL_LAYER_BATCHNORM2D:
            if (ly->fused_relu) /* into the relu layer's output */
                s = mpcl_batchnorm2d_relu_forward(ctx, m->layers[l + 1].act, cur, ly->w, ly->b,
                                                  ly->running_mean, ly->running_var, ly->save_mean,
                                                  ly->save_invstd, sp->momentum, sp->eps, training);
            else
                s = mpcl_batchnorm2d_forward(ctx, ly->act, cur, ly->w, ly->b, ly->running_mean,
                                             ly->running_var, ly->save_mean, ly->save_invstd,
                                             sp->momentum, sp->eps, training);
            break;
        default:
            if (l > 0 && m->layers[l - 1].fused_relu)
                break; /* done with the batch norm before it */
            if (activation_of(sp->kind, &f))
                s = mpcl_activation_forward(ctx, f, sp->slope, ly->act, cur);
            break;
        }
        cur = ly->act;
    }
    if (s != MPCL_OK)
        return s;
    *logits = m->layers[m->spec.nlayers - 1].act;
    return MPCL_OK;
}

mpcl_status mpcl_model_backward(mpcl_model *m, const mpcl_tensor *dlogits)
{
    const char *op = "mpcl_model_backward";
    if (!m)
        return MPCL_ERR_ARGUMENT;
    mpcl_context *ctx = m->ctx;
    if (!m->input)
        return mpcl_set_error(ctx, MPCL_ERR_STATE, "%s: no forward pass to go back through", op);
    mpcl_layer *last = &m->layers[m->spec.nlayers - 1];
    mpcl_status s = mpcl_check_same(ctx, op, "dlogits", dlogits, "logits", last->act);
    if (s != MPCL_OK)
        return s;
    /* the gradient enters the last layer's output-gradient buffer */
    if (dlogits != last->dact && (s = mpcl_scale(ctx, last->dact, dlogits, 1.0f)) != MPCL_OK)
        return s;
    for (int l = m->spec.nlayers - 1; l >= 0 && s == MPCL_OK; l--) {
        mpcl_layer *ly = &m->layers[l];
        const mpcl_layer_spec *sp = &ly->spec;
        const mpcl_tensor *x = l ? m->layers[l - 1].act : m->input;
        /* no input gradient for the first layer, nor below a leading flatten */
        mpcl_tensor *dx = l ? m->layers[l - 1].dact : NULL;
        mpcl_activation f;
        switch (sp->kind) {
        case MPCL_LAYER_CONV2D: {
            mpcl_conv2d_params p = conv_params(sp);
            s = mpcl_conv2d_backward(ctx, dx, ly->gw, ly->gb, ly->dact, x, ly->w, &p);
            break;
        }
        case MPCL_LAYER_LINEAR:
            s = mpcl_linear_backward(ctx, dx, ly->gw, ly->gb, ly->dact, x, ly->w);
            break;
        case MPCL_LAYER_MAXPOOL2D:
            if (dx) {
                mpcl_pool2d_params p = pool_params(sp);
                s = mpcl_maxpool2d_backward(ctx, dx, ly->dact, ly->argmax, &p);
            }
            break;
        case MPCL_LAYER_AVGPOOL2D:
            if (dx) {
                mpcl_pool2d_params p = pool_params(sp);
                s = mpcl_avgpool2d_backward(ctx, dx, ly->dact, &p);
            }
            break;
        case MPCL_LAYER_FLATTEN:
            break; /* its gradient is a view of the previous layer's */
        case MPCL_LAYER_DROPOUT:
            if (dx) {
                if (m->training && sp->p > 0.0f)
                    s = mpcl_dropout_backward(ctx, dx, ly->dact, sp->p, dropout_seed(m, l), m->step);
                else
                    s = mpcl_scale(ctx, dx, ly->dact, 1.0f);
            }
            break;
        case MPCL_LAYER_BATCHNORM2D:
            if (ly->fused_relu) /* from the relu layer's output gradient */
                s = mpcl_batchnorm2d_relu_backward(ctx, dx, ly->gw, ly->gb, m->layers[l + 1].dact,
                                                   m->layers[l + 1].act, x, ly->w, ly->save_mean,
                                                   ly->save_invstd);
            else
                s = mpcl_batchnorm2d_backward(ctx, dx, ly->gw, ly->gb, ly->dact, x, ly->w,
                                              ly->save_mean, ly->save_invstd);
            break;
        default:
            if (l > 0 && m->layers[l - 1].fused_relu)
                break; /* the batch norm before it takes its gradient */
            if (dx && activation_of(sp->kind, &f))
                s = mpcl_activation_backward(ctx, f, sp->slope, dx, ly->dact, x, ly->act);
            break;
        }
    }
    return s;
}

/* ------------------------------------------------------------ parameters */

mpcl_status mpcl_model_param(const mpcl_model *m, size_t i, mpcl_param_info *out)
{
    if (!m || !out)
        return MPCL_ERR_ARGUMENT;
    size_t k = 0;
    for (int l = 0; l < m->spec.nlayers; l++) {
        const mpcl_layer *ly = &m->layers[l];
        if (!has_params(&ly->spec))
            continue;
        int bn = ly->spec.kind == MPCL_LAYER_BATCHNORM2D;
        for (int part = 0; part < (bn ? 4 : 2); part++) {
            if (part == 1 && !ly->b_numel)
                continue;
            if (k++ != i)
                continue;
            memset(out, 0, sizeof *out);
            static const char *names[4] = {"weight", "bias", "running_mean", "running_var"};
            snprintf(out->name, sizeof out->name, "%d.%s", l, names[part]);
            if (part == 0) {
                out->ndim = weight_shape(&ly->spec, out->shape);
                out->numel = ly->w_numel;
                out->offset = ly->w_off;
            } else if (part == 1) {
                out->ndim = 1;
                out->shape[0] = out->numel = ly->b_numel;
                out->offset = ly->b_off;
            } else {
                out->ndim = 1;
                out->shape[0] = out->numel = ly->spec.in_shape[0];
                out->offset = (size_t)-1;
                out->buffer = part == 2 ? ly->running_mean : ly->running_var;
            }
            return MPCL_OK;
        }
    }
    return MPCL_ERR_ARGUMENT; /* past the end */
}
