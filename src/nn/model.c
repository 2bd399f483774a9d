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

static float uniform(uint64_t *s, float bound)
{
    double u = (double)(mpcl_splitmix64(s) >> 11) * 0x1p-53; /* [0, 1) */
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

/* ------------------------------------------------------ memory plan */

static int is_activation(mpcl_layer_kind k)
{
    return k == MPCL_LAYER_RELU || k == MPCL_LAYER_LEAKY_RELU || k == MPCL_LAYER_GELU ||
           k == MPCL_LAYER_SIGMOID || k == MPCL_LAYER_TANH;
}

/* Whether layer kind k's backward pass reads its input x (the weight
 * gradient of a convolution or linear layer, batch norm, the activations
 * whose derivative is taken at x) or its output y (sigmoid, tanh). */
static int backward_reads_x(mpcl_layer_kind k)
{
    return k == MPCL_LAYER_CONV2D || k == MPCL_LAYER_LINEAR || k == MPCL_LAYER_BATCHNORM2D ||
           k == MPCL_LAYER_RELU || k == MPCL_LAYER_LEAKY_RELU || k == MPCL_LAYER_GELU;
}

static int backward_reads_y(mpcl_layer_kind k) { return k == MPCL_LAYER_SIGMOID || k == MPCL_LAYER_TANH; }

static size_t sample_numel(const mpcl_layer_spec *s)
{
    return s->out_ndim == 3 ? s->out_shape[0] * s->out_shape[1] * s->out_shape[2] : s->out_shape[0];
}

static int new_planned(mpcl_model *m, size_t numel, int start, int end)
{
    mpcl_planned *p = &m->plan[m->nplanned];
    p->numel = numel;
    p->start = start;
    p->end = end;
    p->offset = 0;
    return m->nplanned++;
}

static void extend(mpcl_model *m, int t, int start, int end)
{
    if (t < 0)
        return;
    if (start < m->plan[t].start)
        m->plan[t].start = start;
    if (end > m->plan[t].end)
        m->plan[t].end = end;
}

/* Offsets in the arena: largest first, each at the lowest aligned offset
 * clear of every placed tensor whose life overlaps its own (both ends
 * count: an op reads its inputs while it writes its output). */
static size_t place(mpcl_planned *p, int n, size_t align, int reuse)
{
    int *order = malloc((size_t)(n ? n : 1) * sizeof *order);
    size_t *lo = malloc((size_t)(n ? n : 1) * 2 * sizeof *lo);
    size_t total = 0;
    if (!order || !lo) {
        free(order);
        free(lo);
        return 0;
    }
    for (int i = 0; i < n; i++)
        order[i] = i;
    for (int i = 1; i < n; i++) /* insertion sort: by size, descending; stable */
        for (int j = i; j > 0 && p[order[j]].numel > p[order[j - 1]].numel; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    for (int i = 0; i < n; i++) {
        mpcl_planned *t = &p[order[i]];
        size_t size = mpcl_round_up(t->numel, align), off = 0;
        if (!reuse) {
            t->offset = total;
            total += size;
            continue;
        }
        /* the busy ranges, sorted by start */
        int nb = 0;
        for (int j = 0; j < i; j++) {
            const mpcl_planned *u = &p[order[j]];
            if (u->start <= t->end && t->start <= u->end) {
                int k = nb++;
                for (; k > 0 && lo[2 * (k - 1)] > u->offset; k--) {
                    lo[2 * k] = lo[2 * (k - 1)];
                    lo[2 * k + 1] = lo[2 * (k - 1) + 1];
                }
                lo[2 * k] = u->offset;
                lo[2 * k + 1] = u->offset + mpcl_round_up(u->numel, align);
            }
        }
        for (int k = 0; k < nb; k++) {
            if (off + size <= lo[2 * k])
                break;
            if (lo[2 * k + 1] > off)
                off = lo[2 * k + 1];
        }
        t->offset = off;
        if (off + size > total)
            total = off + size;
    }
    free(order);
    free(lo);
    return total;
}

/* Which tensors a step needs and how long each lives (see
 * mpcl_model_create_with), then their offsets. */
static mpcl_status plan(mpcl_model *m)
{
    const int L = m->spec.nlayers, END = 2 * L, train = !m->opt.inference;
    m->plan = calloc((size_t)(2 * L + 1), sizeof *m->plan);
    m->grad_started = calloc((size_t)(2 * L + 1), 1);
    if (!m->plan || !m->grad_started)
        return mpcl_set_error(m->ctx, MPCL_ERR_NOMEM, "mpcl_model_create: out of host memory");
    m->scratch_tensor = -1;
    size_t scratch = 0;
    /* which outputs need a gradient, and from how many readers */
    for (int l = 0; l < L; l++) {
        mpcl_layer *ly = &m->layers[l];
        ly->needs_grad = train && has_params(&ly->spec);
        for (int k = 0; k < ly->spec.ninputs; k++) {
            int in = ly->spec.inputs[k];
            ly->needs_grad |= in >= 0 && m->layers[in].needs_grad;
        }
    }
    for (int l = 0; l < L; l++) {
        const mpcl_layer_spec *sp = &m->layers[l].spec;
        for (int k = 0; k < sp->ninputs; k++)
            if (sp->inputs[k] >= 0 && m->layers[sp->inputs[k]].needs_grad)
                m->layers[sp->inputs[k]].grad_writers++;
    }
    for (int l = 0; l < L; l++) {
        mpcl_layer *ly = &m->layers[l];
        const mpcl_layer_spec *sp = &ly->spec;
        int in0 = sp->inputs[0], F = l, B = END - 1 - l;
        size_t numel = m->max_batch * sample_numel(sp);
        ly->act_tensor = ly->dact_tensor = -1;
        /* the output */
        if (sp->kind == MPCL_LAYER_FLATTEN)
            ly->act_tensor = in0 >= 0 ? m->layers[in0].act_tensor : -1; /* a view */
        else if (!ly->fused_relu)
            ly->act_tensor = new_planned(m, numel, l > 0 && m->layers[l - 1].fused_relu ? F - 1 : F, F);
        if (l == L - 1)
            extend(m, ly->act_tensor, F, END); /* the logits: read after the pass */
        if (train && backward_reads_y(sp->kind))
            extend(m, ly->act_tensor, F, B);
        if (train && is_activation(sp->kind) && l > 0 && m->layers[l - 1].fused_relu)
            extend(m, ly->act_tensor, F, B + 1); /* the batch norm's backward reads it */
        for (int k = 0; k < sp->ninputs; k++) {
            int in = sp->inputs[k];
            if (in < 0)
                continue;
            /* (a relu fused with the batch norm before it reads nothing: the
             * batch norm's act_tensor is -1, and the pair reads its input) */
            extend(m, m->layers[in].act_tensor, F, train && backward_reads_x(sp->kind) ? B : F);
        }
        /* the output gradient */
        if (!ly->needs_grad)
            continue;
        int alias = sp->kind == MPCL_LAYER_FLATTEN && in0 >= 0 && m->layers[in0].needs_grad;
        for (int j = l + 1; alias && j < L; j++) /* the flatten must be its input's last reader */
            for (int k = 0; k < m->layers[j].spec.ninputs; k++)
                alias &= m->layers[j].spec.inputs[k] != in0;
        if (alias)
            ly->dact_tensor = m->layers[in0].dact_tensor;
        else if (!ly->fused_relu)
            ly->dact_tensor = new_planned(m, numel, B, B);
        if (ly->grad_writers > 1 && numel > scratch)
            scratch = numel;
    }
    /* a second pass: the output gradients' lives (flatten aliases made above
     * point at regions created earlier; extend them now) */
    for (int l = 0; l < L; l++) {
        mpcl_layer *ly = &m->layers[l];
        const mpcl_layer_spec *sp = &ly->spec;
        int B = END - 1 - l;
        if (ly->dact_tensor >= 0)
            extend(m, ly->dact_tensor, B, B);
        if (l == L - 1)
            extend(m, ly->dact_tensor, L, B); /* dlogits come in first */
        if (ly->fused_relu) /* reads the relu's gradient */
            extend(m, m->layers[l + 1].dact_tensor, B, B);
        for (int k = 0; k < sp->ninputs; k++)
            if (sp->inputs[k] >= 0)
                extend(m, m->layers[sp->inputs[k]].dact_tensor, B, B);
    }
    if (scratch)
        m->scratch_tensor = new_planned(m, scratch, L, END);
    size_t align = mpcl_view_alignment(m->ctx, mpcl_storage_dtype(m->ctx));
    m->unshared_numel = 0;
    for (int i = 0; i < m->nplanned; i++)
        m->unshared_numel += mpcl_round_up(m->plan[i].numel, align);
    m->arena_numel = place(m->plan, m->nplanned, align, m->opt.reuse_memory);
    if (m->nplanned && !m->arena_numel)
        return mpcl_set_error(m->ctx, MPCL_ERR_NOMEM, "mpcl_model_create: out of host memory");
    if (!m->arena_numel)
        m->arena_numel = align;
    return MPCL_OK;
}

/* Layer outputs, gradients and scratch for `b` samples: views of the arena. */
static mpcl_status make_views(mpcl_model *m, size_t b)
{
    for (int l = 0; l < m->spec.nlayers; l++) {
        mpcl_layer *ly = &m->layers[l];
        mpcl_tensor **v[] = {&ly->act, &ly->dact, &ly->argmax, &ly->dscratch, &ly->dact_in};
        for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
            mpcl_tensor_destroy(*v[i]);
            *v[i] = NULL;
        }
    }
    size_t shape[4];
    mpcl_status s = MPCL_OK;
    for (int l = 0; l < m->spec.nlayers && s == MPCL_OK; l++) {
        mpcl_layer *ly = &m->layers[l];
        memcpy(shape, ly->out_shape, sizeof shape);
        shape[0] = b;
        if (ly->act_tensor >= 0)
            s = mpcl_tensor_view(m->arena, m->plan[ly->act_tensor].offset, ly->out_ndim, shape, &ly->act);
        if (s == MPCL_OK && ly->dact_tensor >= 0)
            s = mpcl_tensor_view(m->arena, m->plan[ly->dact_tensor].offset, ly->out_ndim, shape, &ly->dact);
        if (s == MPCL_OK && ly->argmax_full)
            s = mpcl_tensor_view(ly->argmax_full, 0, ly->out_ndim, shape, &ly->argmax);
        if (s == MPCL_OK && ly->grad_writers > 1 && m->scratch_tensor >= 0)
            s = mpcl_tensor_view(m->arena, m->plan[m->scratch_tensor].offset, ly->out_ndim, shape,
                                 &ly->dscratch);
        int in0 = ly->spec.inputs[0];
        if (s == MPCL_OK && ly->spec.kind == MPCL_LAYER_FLATTEN && ly->dact && in0 >= 0 &&
            ly->dact_tensor != m->layers[in0].dact_tensor) {
            const mpcl_layer *src = &m->layers[in0];
            size_t ish[4];
            memcpy(ish, src->out_shape, sizeof ish);
            ish[0] = b;
            s = mpcl_tensor_view(ly->dact, 0, src->out_ndim, ish, &ly->dact_in);
        }
    }
    if (s == MPCL_OK)
        m->batch = b;
    return s;
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
            off = mpcl_round_up(off + ly->w_numel, align);
            if (has_bias(&ly->spec)) {
                ly->b_numel = ly->spec.kind == MPCL_LAYER_BATCHNORM2D ? ly->w_numel : ly->spec.out;
                ly->b_off = off;
                off = mpcl_round_up(off + ly->b_numel, align);
            }
        }
        ly->out_ndim = ly->spec.out_ndim == 3 ? 4 : 2;
        ly->out_shape[0] = m->max_batch;
        for (int i = 0; i < 3; i++)
            ly->out_shape[i + 1] = ly->spec.out_shape[i];
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
    /* batchnorm2d + relu run as one pass where the relu is the batch
     * norm's only reader */
    for (int l = 0; m->opt.fuse && l + 1 < m->spec.nlayers; l++) {
        const mpcl_layer_spec *a = &m->spec.layers[l], *r = &m->spec.layers[l + 1];
        int readers = 0;
        for (int j = l + 1; j < m->spec.nlayers; j++)
            for (int k = 0; k < m->spec.layers[j].ninputs; k++)
                readers += m->spec.layers[j].inputs[k] == l;
        m->layers[l].fused_relu = a->kind == MPCL_LAYER_BATCHNORM2D && r->kind == MPCL_LAYER_RELU &&
                                  r->ninputs == 1 && r->inputs[0] == l && readers == 1;
    }
    if (s == MPCL_OK)
        s = plan(m);
    if (s == MPCL_OK) {
        size_t an[1] = {m->arena_numel};
        s = mpcl_tensor_create(ctx, sd, 1, an, MPCL_MEM_ACTIVATIONS, &m->arena);
    }
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
        if (s == MPCL_OK && sp->kind == MPCL_LAYER_MAXPOOL2D)
            s = mpcl_tensor_create(ctx, MPCL_I32, ly->out_ndim, ly->out_shape, MPCL_MEM_ACTIVATIONS,
                                   &ly->argmax_full);
    }
    return s;
}

void mpcl_model_options_init(mpcl_model_options *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->max_batch = 1;
    o->reuse_memory = 1;
    o->fuse = 1;
}

mpcl_status mpcl_model_create_with(mpcl_context *ctx, const mpcl_model_spec *spec,
                                   const mpcl_model_options *o, mpcl_model **out)
{
    const char *op = "mpcl_model_create";
    mpcl_status s = mpcl_check_ctx(ctx, op);
    if (s != MPCL_OK)
        return s;
    if (spec && o && out && spec->kind == MPCL_MODEL_GPT && o->max_batch >= 1) {
        *out = NULL;
        mpcl_model *m = calloc(1, sizeof *m);
        if (!m)
            return mpcl_set_error(ctx, MPCL_ERR_NOMEM, "%s: out of host memory", op);
        m->ctx = ctx;
        m->spec = *spec;
        m->opt = *o;
        m->max_batch = o->max_batch;
        m->seed = o->seed;
        mpcl_normalization_init(&m->norm);
        s = mpcl_gpt_build(m);
        if (s != MPCL_OK) {
            mpcl_model_destroy(m);
            return s;
        }
        *out = m;
        return MPCL_OK;
    }
    if (!spec || !o || !out || spec->nlayers < 1 || spec->nlayers > MPCL_MAX_LAYERS || o->max_batch < 1)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "%s: spec, options and out must be set, with 1..%d layers and max_batch >= 1",
                              op, MPCL_MAX_LAYERS);
    for (int l = 0; l < spec->nlayers; l++) {
        const mpcl_layer_spec *sp = &spec->layers[l];
        int ok = sp->ninputs >= 1 && sp->ninputs <= MPCL_MAX_INPUTS;
        for (int k = 0; ok && k < sp->ninputs; k++)
            ok = sp->inputs[k] >= -1 && sp->inputs[k] < l;
        if (!ok)
            return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                                  "%s: layer %d (%s) has %d inputs; each must be an earlier layer or -1 "
                                  "(the input): a spec from mpcl_model_spec_parse has them right",
                                  op, l, mpcl_layer_kind_name(sp->kind), sp->ninputs);
    }
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
    m->opt = *o;
    m->max_batch = o->max_batch;
    m->seed = o->seed;
    mpcl_normalization_init(&m->norm);
    s = build(m);
    m->decay_numel = m->padded; /* every parameter, as PyTorch's optimizers over model.parameters() */
    if (s == MPCL_OK)
        s = init_params(m, o->seed);
    if (s == MPCL_OK)
        s = make_views(m, o->max_batch);
    if (s != MPCL_OK) {
        mpcl_model_destroy(m);
        return s;
    }
    *out = m;
    return MPCL_OK;
}

mpcl_status mpcl_model_create(mpcl_context *ctx, const mpcl_model_spec *spec, size_t max_batch,
                              uint64_t seed, mpcl_model **out)
{
    mpcl_model_options o;
    mpcl_model_options_init(&o);
    o.max_batch = max_batch;
    o.seed = seed;
    return mpcl_model_create_with(ctx, spec, &o, out);
}

void mpcl_model_destroy(mpcl_model *m)
{
    if (!m)
        return;
    for (int l = 0; m->layers && l < m->spec.nlayers; l++) {
        mpcl_layer *ly = &m->layers[l];
        mpcl_tensor *all[] = {ly->act, ly->dact, ly->argmax, ly->dscratch, ly->dact_in, ly->argmax_full,
                              ly->w, ly->b, ly->gw, ly->gb, ly->running_mean, ly->running_var,
                              ly->save_mean, ly->save_invstd};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            mpcl_tensor_destroy(all[i]);
    }
    mpcl_gpt_destroy(m->gpt);
    free(m->layers);
    free(m->plan);
    free(m->grad_started);
    mpcl_tensor_destroy(m->arena);
    if (m->working != m->master)
        mpcl_tensor_destroy(m->working);
    mpcl_tensor_destroy(m->master);
    mpcl_tensor_destroy(m->grad);
    free(m);
}

void mpcl_model_memory_info(const mpcl_model *m, mpcl_model_memory *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!m)
        return;
    if (m->gpt) {
        mpcl_gpt_memory(m, out);
        return;
    }
    size_t sd = mpcl_dtype_size(mpcl_storage_dtype(m->ctx));
    out->parameters = (uint64_t)m->padded * (4 + (m->working != m->master ? sd : 0) + sd);
    out->activations = (uint64_t)m->arena_numel * sd;
    out->activations_unshared = (uint64_t)m->unshared_numel * sd;
    for (int l = 0; l < m->spec.nlayers; l++) {
        const mpcl_layer *ly = &m->layers[l];
        if (ly->argmax_full)
            out->activations_other += (uint64_t)ly->argmax_full->numel * 4;
        if (ly->save_mean)
            out->activations_other += (uint64_t)2 * ly->save_mean->numel * 4;
    }
    out->activations += out->activations_other;
    out->activations_unshared += out->activations_other;
    out->tensors = m->nplanned;
}

const mpcl_model_spec *mpcl_model_get_spec(const mpcl_model *m) { return m ? &m->spec : NULL; }
size_t mpcl_model_param_count(const mpcl_model *m) { return m ? m->spec.params : 0; }
mpcl_context *mpcl_model_context(const mpcl_model *m) { return m ? m->ctx : NULL; }
uint64_t mpcl_model_seed(const mpcl_model *m) { return m ? m->seed : 0; }
void mpcl_model_set_seed(mpcl_model *m, uint64_t seed)
{
    if (m)
        m->seed = seed;
}
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
    return m->seed * 0x9e3779b97f4a7c15ULL + (uint64_t)(l + 1) * 0xd1b54a32d192ed03ULL +
           m->dropout_stream * 0x8cb92ba72f3d8dd7ULL;
}

static const mpcl_tensor *input_of(const mpcl_model *m, const mpcl_layer_spec *sp, int k)
{
    int in = sp->inputs[k];
    return in < 0 ? m->input : m->layers[in].act;
}

mpcl_status mpcl_model_forward(mpcl_model *m, const mpcl_tensor *x, int training, uint64_t step,
                               mpcl_tensor **logits)
{
    const char *op = "mpcl_model_forward";
    if (!m || !logits)
        return MPCL_ERR_ARGUMENT;
    mpcl_context *ctx = m->ctx;
    if (m->gpt)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "%s: a language model (gpt) takes tokens: use mpcl_lm_forward", op);
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
    for (int l = 0; l < m->spec.nlayers && s == MPCL_OK; l++) {
        mpcl_layer *ly = &m->layers[l];
        const mpcl_layer_spec *sp = &ly->spec;
        const mpcl_tensor *cur = input_of(m, sp, 0);
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
        case MPCL_LAYER_AVGPOOL2D:
        case MPCL_LAYER_GLOBAL_AVGPOOL: {
            mpcl_pool2d_params p = pool_params(sp);
            s = mpcl_avgpool2d_forward(ctx, ly->act, cur, &p);
            break;
        }
        case MPCL_LAYER_FLATTEN:
            if (sp->inputs[0] < 0) { /* a view of this call's input */
                size_t shape[2] = {b, ly->out_shape[1]};
                mpcl_tensor_destroy(ly->act);
                ly->act = NULL;
                s = mpcl_tensor_view((mpcl_tensor *)x, 0, 2, shape, &ly->act);
            }
            break; /* otherwise a view of its input's region */
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
        case MPCL_LAYER_ADD:
            s = mpcl_add(ctx, ly->act, cur, input_of(m, sp, 1));
            for (int k = 2; k < sp->ninputs && s == MPCL_OK; k++)
                s = mpcl_add(ctx, ly->act, ly->act, input_of(m, sp, k));
            break;
        case MPCL_LAYER_CONCAT: {
            size_t row = ly->act->numel / b, off = 0;
            for (int k = 0; k < sp->ninputs && s == MPCL_OK; k++) {
                const mpcl_tensor *xk = input_of(m, sp, k);
                size_t n = xk->numel / b;
                s = mpcl_copy_block(ctx, ly->act, row, off, xk, n, 0, b, n, 0);
                off += n;
            }
            break;
        }
        default:
            if (l > 0 && m->layers[l - 1].fused_relu)
                break; /* done with the batch norm before it */
            if (activation_of(sp->kind, &f))
                s = mpcl_activation_forward(ctx, f, sp->slope, ly->act, cur);
            break;
        }
        if (s == MPCL_OK && m->inspect && ly->act && !ly->fused_relu && sp->kind != MPCL_LAYER_FLATTEN)
            s = m->inspect(m->inspect_user, l, 0, ly->act);
    }
    if (s != MPCL_OK)
        return s;
    *logits = m->layers[m->spec.nlayers - 1].act;
    return MPCL_OK;
}

/* Where a backward op writes the gradient of layer l's input k: NULL when
 * none is wanted; the input's gradient itself for the first contribution
 * of the pass; else the scratch, added by contributed() afterwards. */
static mpcl_tensor *grad_target(mpcl_model *m, const mpcl_layer_spec *sp, int k)
{
    int in = sp->inputs[k];
    if (in < 0 || !m->layers[in].needs_grad)
        return NULL;
    mpcl_layer *x = &m->layers[in];
    return m->grad_started[x->dact_tensor] ? x->dscratch : x->dact;
}

static mpcl_status contributed(mpcl_model *m, const mpcl_layer_spec *sp, int k)
{
    int in = sp->inputs[k];
    if (in < 0 || !m->layers[in].needs_grad)
        return MPCL_OK;
    mpcl_layer *x = &m->layers[in];
    if (!m->grad_started[x->dact_tensor]) {
        m->grad_started[x->dact_tensor] = 1;
        return MPCL_OK;
    }
    return mpcl_add(m->ctx, x->dact, x->dact, x->dscratch);
}

/* dy added into (or, first, copied to) the gradient of layer l's input k. */
static mpcl_status pass_on(mpcl_model *m, const mpcl_layer_spec *sp, int k, const mpcl_tensor *dy)
{
    int in = sp->inputs[k];
    if (in < 0 || !m->layers[in].needs_grad)
        return MPCL_OK;
    mpcl_layer *x = &m->layers[in];
    if (m->grad_started[x->dact_tensor])
        return mpcl_add(m->ctx, x->dact, x->dact, dy);
    m->grad_started[x->dact_tensor] = 1;
    return mpcl_scale(m->ctx, x->dact, dy, 1.0f);
}

mpcl_status mpcl_model_backward(mpcl_model *m, const mpcl_tensor *dlogits)
{
    const char *op = "mpcl_model_backward";
    if (!m)
        return MPCL_ERR_ARGUMENT;
    mpcl_context *ctx = m->ctx;
    if (m->gpt)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "%s: a language model (gpt) goes back with mpcl_lm_backward", op);
    if (m->opt.inference)
        return mpcl_set_error(ctx, MPCL_ERR_STATE, "%s: the model was created for inference only", op);
    if (!m->input)
        return mpcl_set_error(ctx, MPCL_ERR_STATE, "%s: no forward pass to go back through", op);
    mpcl_layer *last = &m->layers[m->spec.nlayers - 1];
    mpcl_status s = mpcl_check_same(ctx, op, "dlogits", dlogits, "logits", last->act);
    if (s != MPCL_OK)
        return s;
    if (!last->needs_grad)
        return MPCL_OK; /* no parameters */
    memset(m->grad_started, 0, (size_t)m->nplanned);
    /* the gradient enters the last layer's output-gradient buffer */
    if (dlogits != last->dact && (s = mpcl_scale(ctx, last->dact, dlogits, 1.0f)) != MPCL_OK)
        return s;
    m->grad_started[last->dact_tensor] = 1;
    for (int l = m->spec.nlayers - 1; l >= 0 && s == MPCL_OK; l--) {
        mpcl_layer *ly = &m->layers[l];
        const mpcl_layer_spec *sp = &ly->spec;
        if (m->inspect && ly->needs_grad && ly->dact && !ly->fused_relu &&
            sp->kind != MPCL_LAYER_FLATTEN && (s = m->inspect(m->inspect_user, l, 1, ly->dact)) != MPCL_OK)
            break;
        if (!ly->needs_grad || (l > 0 && m->layers[l - 1].fused_relu))
            continue; /* nothing to learn below; or the batch norm before takes the gradient */
        const mpcl_tensor *x = input_of(m, sp, 0);
        mpcl_tensor *dx = grad_target(m, sp, 0);
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
        case MPCL_LAYER_GLOBAL_AVGPOOL:
            if (dx) {
                mpcl_pool2d_params p = pool_params(sp);
                s = mpcl_avgpool2d_backward(ctx, dx, ly->dact, &p);
            }
            break;
        case MPCL_LAYER_FLATTEN:
            if (ly->dact_in) /* not a view of its input's gradient */
                s = pass_on(m, sp, 0, ly->dact_in);
            continue; /* (a view: its readers wrote its input's gradient) */
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
        case MPCL_LAYER_ADD: /* each input's gradient is dy */
            for (int k = 0; k < sp->ninputs && s == MPCL_OK; k++)
                s = pass_on(m, sp, k, ly->dact);
            continue;
        case MPCL_LAYER_CONCAT: {
            size_t b = m->batch, row = ly->dact->numel / b, off = 0;
            for (int k = 0; k < sp->ninputs && s == MPCL_OK; k++) {
                int in = sp->inputs[k];
                size_t n = input_of(m, sp, k)->numel / b;
                if (in >= 0 && m->layers[in].needs_grad) {
                    mpcl_layer *xl = &m->layers[in];
                    s = mpcl_copy_block(ctx, xl->dact, n, 0, ly->dact, row, off, b, n,
                                        m->grad_started[xl->dact_tensor]);
                    m->grad_started[xl->dact_tensor] = 1;
                }
                off += n;
            }
            continue;
        }
        default:
            if (dx && activation_of(sp->kind, &f))
                s = mpcl_activation_backward(ctx, f, sp->slope, dx, ly->dact, x, ly->act);
            break;
        }
        if (s == MPCL_OK && dx)
            s = contributed(m, sp, 0);
        if (s == MPCL_OK && m->grad_ready && (ly->w_numel || ly->b_numel)) {
            m->grad_ready(m->grad_ready_user, ly->w_off, ly->w_numel);
            m->grad_ready(m->grad_ready_user, ly->b_off, ly->b_numel);
        }
    }
    return s;
}

/* ------------------------------------------------------------ parameters */

mpcl_status mpcl_model_param(const mpcl_model *m, size_t i, mpcl_param_info *out)
{
    if (!m || !out)
        return MPCL_ERR_ARGUMENT;
    if (m->gpt)
        return mpcl_gpt_param(m, i, out);
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
