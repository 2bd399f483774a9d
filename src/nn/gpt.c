/* nn/gpt.c — the GPT language model of a "gpt" spec (mpcl_gpt_spec): token
 * and position embeddings, pre-norm transformer blocks, a final layer norm
 * and an output head tied to the token embedding; forward and backward for
 * training, and decoding with a key / value cache for generation.
 *
 * Letters: B sequences of T positions, N = B T rows, C the width, F the MLP
 * width, H heads, E = C / H, V the vocabulary, L blocks.
 *
 * One block, x its input (N, C):
 *   ln1 = layernorm(x); qkv = ln1 attn_w^T + attn_b; atty = attention(qkv)
 *   xmid = x + atty proj_w^T + proj_b
 *   ln2 = layernorm(xmid); fc = ln2 fc_w^T + fc_b; act = gelu(fc)
 *   out = xmid + act fcp_w^T + fcp_b
 * Every tensor a backward pass reads is kept per block, at the largest
 * batch (max_batch sequences of the context length); calls with fewer rows
 * use views of their start.
 *
 * Parameters live in the model's flat buffers (master, working copy,
 * gradients) in two runs: the matrices of the blocks first (the weights
 * AdamW decays), then everything else (embeddings, biases, layer norms),
 * which m->decay_numel separates. The state_dict names and order are those
 * of GPT-2 as nanoGPT writes them ("transformer.h.0.attn.c_attn.weight",
 * linear weights as (out, in)); the tied output head is the token
 * embedding, stored once as "transformer.wte.weight". */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nn/model.h"

/* A block's parameters, in state_dict order. */
enum {
    P_LN1_G, P_LN1_B, P_ATTN_W, P_ATTN_B, P_PROJ_W, P_PROJ_B,
    P_LN2_G, P_LN2_B, P_FC_W, P_FC_B, P_FCP_W, P_FCP_B, P_COUNT
};
static const char *const P_NAMES[P_COUNT] = {
    "ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
    "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
    "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"};

/* Activations a block keeps, and their columns per row (0: probs). */
enum { A_X, A_LN1, A_QKV, A_PROBS, A_ATTY, A_XMID, A_LN2, A_FC, A_ACT, A_COUNT };
/* Per-row layer-norm statistics (f32). */
enum { S_M1, S_I1, S_M2, S_I2, S_COUNT };

typedef struct {
    size_t off[P_COUNT];
    mpcl_tensor *w[P_COUNT], *g[P_COUNT];     /* working and gradient views */
    mpcl_tensor *full[A_COUNT], *v[A_COUNT];  /* at the largest batch; views for this call */
    mpcl_tensor *sfull[S_COUNT], *sv[S_COUNT];
    mpcl_tensor *kcache, *vcache;             /* decoding: (B H, context, E) */
} gpt_block;

/* Top-level parameters. */
enum { T_WTE, T_WPE, T_LNF_G, T_LNF_B, T_COUNT };
/* Top-level activations and gradient work tensors. */
enum { G_XF, G_LNF, G_LOGITS, G_DX, G_DLN, G_DQKV, G_DATTY, G_DFC, G_COUNT };

struct mpcl_gpt {
    mpcl_gpt_spec c;
    size_t max_rows; /* max_batch x context */
    size_t off[T_COUNT];
    mpcl_tensor *w[T_COUNT], *g[T_COUNT];
    gpt_block *blocks;
    mpcl_tensor *full[G_COUNT], *v[G_COUNT];
    mpcl_tensor *mf_full, *if_full, *mf, *inf; /* final layer norm statistics */
    mpcl_tensor *tokens_full, *order_full, *start, *tokens, *order;
    int32_t *host_order, *host_start;
    size_t rows, T; /* the views' shape: rows = B T */
    int have_index; /* the last forward computed the embedding index (training) */
    size_t cache_batch; /* sequences the key / value caches hold (0: none) */
    int forwarded;  /* a training forward ran since the last backward */
};

/* The shape of a block parameter. */
static int block_shape(const mpcl_gpt_spec *c, int p, size_t *shape)
{
    size_t C = c->width, F = c->hidden;
    switch (p) {
    case P_ATTN_W: shape[0] = 3 * C; shape[1] = C; return 2;
    case P_ATTN_B: shape[0] = 3 * C; return 1;
    case P_PROJ_W: shape[0] = C; shape[1] = C; return 2;
    case P_FC_W: shape[0] = F; shape[1] = C; return 2;
    case P_FC_B: shape[0] = F; return 1;
    case P_FCP_W: shape[0] = C; shape[1] = F; return 2;
    default: shape[0] = C; return 1; /* layer norms, proj_b, fcp_b */
    }
}

static int top_shape(const mpcl_gpt_spec *c, int p, size_t *shape)
{
    switch (p) {
    case T_WTE: shape[0] = c->vocab; shape[1] = c->width; return 2;
    case T_WPE: shape[0] = c->context; shape[1] = c->width; return 2;
    default: shape[0] = c->width; return 1;
    }
}

static size_t numel_of(int nd, const size_t *shape)
{
    size_t n = 1;
    for (int i = 0; i < nd; i++)
        n *= shape[i];
    return n;
}

static int is_matrix(int p) { return p == P_ATTN_W || p == P_PROJ_W || p == P_FC_W || p == P_FCP_W; }

/* ------------------------------------------------------------ creation */

/* A standard normal draw (Box-Muller on two splitmix64 draws). */
static double normal(uint64_t *s)
{
    double u1 = ((double)(mpcl_splitmix64(s) >> 11) + 0.5) * 0x1p-53;
    double u2 = (double)(mpcl_splitmix64(s) >> 11) * 0x1p-53;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

/* GPT-2's initialisation (as nanoGPT): linear weights and embeddings
 * normal(0, 0.02), the residual projections (attn.c_proj, mlp.c_proj)
 * normal(0, 0.02 / sqrt(2 L)), biases 0, layer norms weight 1, bias 0. */
static mpcl_status init_params(mpcl_model *m, uint64_t seed)
{
    mpcl_gpt *g = m->gpt;
    float *host = calloc(m->padded, sizeof *host);
    if (!host)
        return mpcl_set_error(m->ctx, MPCL_ERR_NOMEM, "mpcl_model_create: out of host memory");
    uint64_t s = seed ^ 0x6d70636c67707432ULL;
    size_t shape[2];
    for (int p = 0; p < T_COUNT; p++) {
        size_t n = numel_of(top_shape(&g->c, p, shape), shape);
        for (size_t i = 0; i < n; i++)
            host[g->off[p] + i] = p == T_LNF_G ? 1.0f : p == T_LNF_B ? 0.0f : (float)(0.02 * normal(&s));
    }
    double proj_std = 0.02 / sqrt(2.0 * (double)g->c.layers);
    for (size_t l = 0; l < g->c.layers; l++)
        for (int p = 0; p < P_COUNT; p++) {
            size_t n = numel_of(block_shape(&g->c, p, shape), shape);
            double std = p == P_PROJ_W || p == P_FCP_W ? proj_std : 0.02;
            for (size_t i = 0; i < n; i++)
                host[g->blocks[l].off[p] + i] = is_matrix(p)                  ? (float)(std * normal(&s))
                                                : p == P_LN1_G || p == P_LN2_G ? 1.0f
                                                                               : 0.0f;
        }
    mpcl_status st = mpcl_tensor_upload(m->master, host, m->padded);
    free(host);
    if (st == MPCL_OK && m->working != m->master)
        st = mpcl_refresh_working(m->ctx, m->working, m->master);
    return st;
}

static mpcl_status make_tensor(mpcl_context *ctx, mpcl_dtype dt, size_t d0, size_t d1, size_t d2,
                               mpcl_mem_tag tag, mpcl_tensor **out)
{
    size_t shape[3] = {d0, d1, d2};
    return mpcl_tensor_create(ctx, dt, d2 ? 3 : d1 ? 2 : 1, shape, tag, out);
}

/* Columns of a block activation per row (A_PROBS is (B H, T, T): not per row). */
static size_t act_cols(const mpcl_gpt_spec *c, int a)
{
    switch (a) {
    case A_QKV: return 3 * c->width;
    case A_FC:
    case A_ACT: return c->hidden;
    default: return c->width;
    }
}

static size_t top_cols(const mpcl_gpt_spec *c, int a)
{
    switch (a) {
    case G_LOGITS: return c->vocab;
    case G_DQKV: return 3 * c->width;
    case G_DFC: return c->hidden;
    default: return c->width;
    }
}

mpcl_status mpcl_gpt_build(mpcl_model *m)
{
    mpcl_context *ctx = m->ctx;
    const mpcl_gpt_spec *c = &m->spec.gpt;
    const char *op = "mpcl_model_create";
    if (c->vocab < 2 || c->context < 1 || c->layers < 1 || c->heads < 1 || c->width < 1 ||
        c->hidden < 1 || c->width % c->heads)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "%s: gpt vocab=%zu context=%zu layers=%zu heads=%zu width=%zu "
                              "hidden=%zu: out of range (width a multiple of heads)",
                              op, c->vocab, c->context, c->layers, c->heads, c->width, c->hidden);
    mpcl_gpt *g = calloc(1, sizeof *g);
    if (g)
        g->blocks = calloc(c->layers, sizeof *g->blocks);
    if (g && g->blocks) {
        g->host_order = malloc(m->max_batch * c->context * sizeof *g->host_order);
        g->host_start = malloc((c->vocab + 1) * sizeof *g->host_start);
    }
    if (!g || !g->blocks || !g->host_order || !g->host_start) {
        if (g) {
            free(g->blocks);
            free(g->host_order);
            free(g->host_start);
        }
        free(g);
        return mpcl_set_error(ctx, MPCL_ERR_NOMEM, "%s: out of host memory", op);
    }
    m->gpt = g;
    g->c = *c;
    g->max_rows = m->max_batch * c->context;
    if (g->max_rows > UINT32_MAX / (3 * c->width + c->vocab + c->hidden))
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "%s: %zu sequences of %zu positions are too many for one batch", op,
                              m->max_batch, c->context);

    /* the flat buffers: decayed matrices, then the rest */
    size_t align = mpcl_view_alignment(ctx, MPCL_F16); /* also aligned for f32 */
    size_t off = 0, shape[2];
    for (size_t l = 0; l < c->layers; l++)
        for (int p = 0; p < P_COUNT; p++)
            if (is_matrix(p)) {
                g->blocks[l].off[p] = off;
                off = mpcl_round_up(off + numel_of(block_shape(c, p, shape), shape), align);
            }
    m->decay_numel = off;
    for (int p = 0; p < T_COUNT; p++) {
        g->off[p] = off;
        off = mpcl_round_up(off + numel_of(top_shape(c, p, shape), shape), align);
    }
    for (size_t l = 0; l < c->layers; l++)
        for (int p = 0; p < P_COUNT; p++)
            if (!is_matrix(p)) {
                g->blocks[l].off[p] = off;
                off = mpcl_round_up(off + numel_of(block_shape(c, p, shape), shape), align);
            }
    m->padded = off;
    mpcl_dtype sd = mpcl_storage_dtype(ctx);
    size_t pn[1] = {m->padded};
    mpcl_status s = mpcl_tensor_create(ctx, MPCL_F32, 1, pn, MPCL_MEM_WEIGHTS, &m->master);
    if (s == MPCL_OK && sd != MPCL_F32)
        s = mpcl_tensor_create(ctx, sd, 1, pn, MPCL_MEM_WEIGHTS, &m->working);
    else if (s == MPCL_OK)
        m->working = m->master;
    if (s == MPCL_OK)
        s = mpcl_tensor_create(ctx, sd, 1, pn, MPCL_MEM_GRADIENTS, &m->grad);
    if (s == MPCL_OK)
        s = mpcl_tensor_fill(m->grad, 0.0f); /* padding stays zero */
    for (int p = 0; s == MPCL_OK && p < T_COUNT; p++) {
        int nd = top_shape(c, p, shape);
        s = mpcl_tensor_view(m->working, g->off[p], nd, shape, &g->w[p]);
        if (s == MPCL_OK)
            s = mpcl_tensor_view(m->grad, g->off[p], nd, shape, &g->g[p]);
    }
    size_t R = g->max_rows, BH = m->max_batch * c->heads, T = c->context;
    mpcl_mem_tag act = MPCL_MEM_ACTIVATIONS;
    for (size_t l = 0; s == MPCL_OK && l < c->layers; l++) {
        gpt_block *b = &g->blocks[l];
        for (int p = 0; s == MPCL_OK && p < P_COUNT; p++) {
            int nd = block_shape(c, p, shape);
            s = mpcl_tensor_view(m->working, b->off[p], nd, shape, &b->w[p]);
            if (s == MPCL_OK)
                s = mpcl_tensor_view(m->grad, b->off[p], nd, shape, &b->g[p]);
        }
        for (int a = 0; s == MPCL_OK && a < A_COUNT; a++)
            s = a == A_PROBS ? make_tensor(ctx, sd, BH, T, T, act, &b->full[a])
                             : make_tensor(ctx, sd, R, act_cols(c, a), 0, act, &b->full[a]);
        for (int k = 0; s == MPCL_OK && k < S_COUNT; k++)
            s = make_tensor(ctx, MPCL_F32, R, 0, 0, act, &b->sfull[k]);
    }
    for (int a = 0; s == MPCL_OK && a < G_COUNT; a++)
        s = make_tensor(ctx, sd, R, top_cols(c, a), 0, a >= G_DX ? MPCL_MEM_GRADIENTS : act,
                        &g->full[a]);
    if (s == MPCL_OK)
        s = make_tensor(ctx, MPCL_F32, R, 0, 0, act, &g->mf_full);
    if (s == MPCL_OK)
        s = make_tensor(ctx, MPCL_F32, R, 0, 0, act, &g->if_full);
    if (s == MPCL_OK)
        s = make_tensor(ctx, MPCL_I32, R, 0, 0, act, &g->tokens_full);
    if (s == MPCL_OK)
        s = make_tensor(ctx, MPCL_I32, R, 0, 0, act, &g->order_full);
    if (s == MPCL_OK)
        s = make_tensor(ctx, MPCL_I32, c->vocab + 1, 0, 0, act, &g->start);
    if (s == MPCL_OK)
        s = init_params(m, m->seed);
    return s;
}

static void destroy_views(mpcl_gpt *g)
{
    for (size_t l = 0; l < g->c.layers; l++) {
        gpt_block *b = &g->blocks[l];
        for (int a = 0; a < A_COUNT; a++) {
            mpcl_tensor_destroy(b->v[a]);
            b->v[a] = NULL;
        }
        for (int k = 0; k < S_COUNT; k++) {
            mpcl_tensor_destroy(b->sv[k]);
            b->sv[k] = NULL;
        }
    }
    mpcl_tensor **tops[] = {&g->mf, &g->inf, &g->tokens, &g->order};
    for (size_t i = 0; i < sizeof tops / sizeof tops[0]; i++) {
        mpcl_tensor_destroy(*tops[i]);
        *tops[i] = NULL;
    }
    for (int a = 0; a < G_COUNT; a++) {
        mpcl_tensor_destroy(g->v[a]);
        g->v[a] = NULL;
    }
    g->rows = g->T = 0;
}

void mpcl_gpt_destroy(mpcl_gpt *g)
{
    if (!g)
        return;
    destroy_views(g);
    for (size_t l = 0; g->blocks && l < g->c.layers; l++) {
        gpt_block *b = &g->blocks[l];
        for (int p = 0; p < P_COUNT; p++) {
            mpcl_tensor_destroy(b->w[p]);
            mpcl_tensor_destroy(b->g[p]);
        }
        for (int a = 0; a < A_COUNT; a++)
            mpcl_tensor_destroy(b->full[a]);
        for (int k = 0; k < S_COUNT; k++)
            mpcl_tensor_destroy(b->sfull[k]);
        mpcl_tensor_destroy(b->kcache);
        mpcl_tensor_destroy(b->vcache);
    }
    for (int p = 0; p < T_COUNT; p++) {
        mpcl_tensor_destroy(g->w[p]);
        mpcl_tensor_destroy(g->g[p]);
    }
    for (int a = 0; a < G_COUNT; a++)
        mpcl_tensor_destroy(g->full[a]);
    mpcl_tensor *rest[] = {g->mf_full, g->if_full, g->tokens_full, g->order_full, g->start};
    for (size_t i = 0; i < sizeof rest / sizeof rest[0]; i++)
        mpcl_tensor_destroy(rest[i]);
    free(g->blocks);
    free(g->host_order);
    free(g->host_start);
    free(g);
}

/* Views of every work tensor for B sequences of T positions. */
static mpcl_status make_views(mpcl_gpt *g, size_t B, size_t T)
{
    size_t rows = B * T;
    if (rows == g->rows && T == g->T)
        return MPCL_OK;
    destroy_views(g);
    const mpcl_gpt_spec *c = &g->c;
    mpcl_status s = MPCL_OK;
    for (size_t l = 0; s == MPCL_OK && l < c->layers; l++) {
        gpt_block *b = &g->blocks[l];
        for (int a = 0; s == MPCL_OK && a < A_COUNT; a++) {
            size_t sh[3] = {rows, act_cols(c, a), 0};
            if (a == A_PROBS) {
                sh[0] = B * c->heads;
                sh[1] = sh[2] = T;
            }
            s = mpcl_tensor_view(b->full[a], 0, a == A_PROBS ? 3 : 2, sh, &b->v[a]);
        }
        for (int k = 0; s == MPCL_OK && k < S_COUNT; k++)
            s = mpcl_tensor_view(b->sfull[k], 0, 1, &rows, &b->sv[k]);
    }
    for (int a = 0; s == MPCL_OK && a < G_COUNT; a++) {
        size_t sh[2] = {rows, top_cols(c, a)};
        s = mpcl_tensor_view(g->full[a], 0, 2, sh, &g->v[a]);
    }
    if (s == MPCL_OK)
        s = mpcl_tensor_view(g->mf_full, 0, 1, &rows, &g->mf);
    if (s == MPCL_OK)
        s = mpcl_tensor_view(g->if_full, 0, 1, &rows, &g->inf);
    if (s == MPCL_OK)
        s = mpcl_tensor_view(g->tokens_full, 0, 1, &rows, &g->tokens);
    if (s == MPCL_OK)
        s = mpcl_tensor_view(g->order_full, 0, 1, &rows, &g->order);
    if (s == MPCL_OK) {
        g->rows = rows;
        g->T = T;
    } else {
        destroy_views(g);
    }
    return s;
}

/* ------------------------------------------------------------ forward */

#define LN_EPS 1e-5f

/* The blocks and the head over g's views: x0 (rows, C) already holds the
 * embeddings in block 0's A_X. decode: attention through the key / value
 * caches at position pos instead of over the rows alone. */
static mpcl_status run_blocks(mpcl_model *m, int decode, size_t pos)
{
    mpcl_context *ctx = m->ctx;
    mpcl_gpt *g = m->gpt;
    const mpcl_gpt_spec *c = &g->c;
    mpcl_status s = MPCL_OK;
    for (size_t l = 0; l < c->layers && s == MPCL_OK; l++) {
        gpt_block *b = &g->blocks[l];
        mpcl_tensor **v = b->v, **w = b->w;
        mpcl_tensor *out = l + 1 < c->layers ? g->blocks[l + 1].v[A_X] : g->v[G_XF];
        s = mpcl_layernorm_forward(ctx, v[A_LN1], v[A_X], w[P_LN1_G], w[P_LN1_B], b->sv[S_M1],
                                   b->sv[S_I1], LN_EPS);
        if (s == MPCL_OK)
            s = mpcl_linear_forward(ctx, v[A_QKV], v[A_LN1], w[P_ATTN_W], w[P_ATTN_B]);
        if (s == MPCL_OK)
            s = decode ? mpcl_attention_decode(ctx, v[A_ATTY], v[A_QKV], b->kcache, b->vcache, pos,
                                               c->heads)
                       : mpcl_attention_forward(ctx, v[A_ATTY], v[A_PROBS], v[A_QKV], g->T, c->heads);
        if (s == MPCL_OK)
            s = mpcl_linear_forward(ctx, v[A_XMID], v[A_ATTY], w[P_PROJ_W], w[P_PROJ_B]);
        if (s == MPCL_OK)
            s = mpcl_add(ctx, v[A_XMID], v[A_XMID], v[A_X]);
        if (s == MPCL_OK)
            s = mpcl_layernorm_forward(ctx, v[A_LN2], v[A_XMID], w[P_LN2_G], w[P_LN2_B], b->sv[S_M2],
                                       b->sv[S_I2], LN_EPS);
        if (s == MPCL_OK)
            s = mpcl_linear_forward(ctx, v[A_FC], v[A_LN2], w[P_FC_W], w[P_FC_B]);
        if (s == MPCL_OK)
            s = mpcl_activation_forward(ctx, MPCL_ACT_GELU, 0.0f, v[A_ACT], v[A_FC]);
        if (s == MPCL_OK)
            s = mpcl_linear_forward(ctx, out, v[A_ACT], w[P_FCP_W], w[P_FCP_B]);
        if (s == MPCL_OK)
            s = mpcl_add(ctx, out, out, v[A_XMID]);
    }
    if (s == MPCL_OK)
        s = mpcl_layernorm_forward(ctx, g->v[G_LNF], g->v[G_XF], g->w[T_LNF_G], g->w[T_LNF_B], g->mf,
                                   g->inf, LN_EPS);
    if (s == MPCL_OK) /* the head: logits = lnf wte^T */
        s = mpcl_linear_forward(ctx, g->v[G_LOGITS], g->v[G_LNF], g->w[T_WTE], NULL);
    return s;
}

static mpcl_status check_tokens(mpcl_model *m, const char *op, const int32_t *tokens, size_t B,
                                size_t T, size_t max_pos)
{
    mpcl_context *ctx = m->ctx;
    if (!m->gpt)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "%s: the model is not a language model (a 'gpt' spec): it takes images",
                              op);
    const mpcl_gpt_spec *c = &m->gpt->c;
    if (!tokens || B < 1 || B > m->max_batch || T < 1 || T > max_pos)
        return mpcl_set_error(ctx, MPCL_ERR_SHAPE,
                              "%s: %zu sequences of %zu tokens; the model takes 1 to %zu sequences "
                              "of 1 to %zu",
                              op, B, T, m->max_batch, max_pos);
    for (size_t i = 0; i < B * T; i++)
        if (tokens[i] < 0 || (size_t)tokens[i] >= c->vocab)
            return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                                  "%s: token %ld of sequence %zu (position %zu) is outside the "
                                  "vocabulary 0..%zu",
                                  op, (long)tokens[i], i / T, i % T, c->vocab - 1);
    return MPCL_OK;
}

mpcl_status mpcl_lm_forward(mpcl_model *m, const int32_t *tokens, size_t B, size_t T, int training,
                            mpcl_tensor **logits)
{
    const char *op = "mpcl_lm_forward";
    if (!m || !logits)
        return MPCL_ERR_ARGUMENT;
    mpcl_status s = check_tokens(m, op, tokens, B, T, m->gpt ? m->gpt->c.context : 0);
    if (s != MPCL_OK)
        return s;
    mpcl_gpt *g = m->gpt;
    mpcl_context *ctx = m->ctx;
    if ((s = make_views(g, B, T)) != MPCL_OK)
        return s;
    size_t rows = B * T;
    g->have_index = 0;
    g->forwarded = 0;
    if ((s = mpcl_tensor_write(g->tokens, tokens, rows * sizeof *tokens)) != MPCL_OK)
        return s;
    if (training && !m->opt.inference) {
        char err[256];
        s = mpcl_embedding_index(tokens, rows, g->c.vocab, g->host_order, g->host_start, err,
                                 sizeof err);
        if (s != MPCL_OK)
            return mpcl_set_error(ctx, s, "%s: %s", op, err);
        if ((s = mpcl_tensor_write(g->order, g->host_order, rows * sizeof *g->host_order)) !=
                MPCL_OK ||
            (s = mpcl_tensor_write(g->start, g->host_start,
                                   (g->c.vocab + 1) * sizeof *g->host_start)) != MPCL_OK)
            return s;
        g->have_index = 1;
    }
    s = mpcl_embedding_forward(ctx, g->blocks[0].v[A_X], g->tokens, g->w[T_WTE], g->w[T_WPE], T, 0);
    if (s == MPCL_OK)
        s = run_blocks(m, 0, 0);
    if (s != MPCL_OK)
        return s;
    g->forwarded = g->have_index;
    m->step++;
    *logits = g->v[G_LOGITS];
    return MPCL_OK;
}

/* ------------------------------------------------------------ backward */

mpcl_status mpcl_lm_backward(mpcl_model *m, const mpcl_tensor *dlogits)
{
    const char *op = "mpcl_lm_backward";
    if (!m)
        return MPCL_ERR_ARGUMENT;
    mpcl_context *ctx = m->ctx;
    mpcl_gpt *g = m->gpt;
    if (!g)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: the model is not a language model", op);
    if (!g->forwarded)
        return mpcl_set_error(ctx, MPCL_ERR_STATE,
                              "%s: no training forward pass (mpcl_lm_forward with training 1) to "
                              "go back through%s",
                              op, m->opt.inference ? " (the model was created for inference)" : "");
    mpcl_status s = mpcl_check_same(ctx, op, "dlogits", dlogits, "logits", g->v[G_LOGITS]);
    if (s != MPCL_OK)
        return s;
    g->forwarded = 0;
    const mpcl_gpt_spec *c = &g->c;
    mpcl_tensor *dx = g->v[G_DX], *dln = g->v[G_DLN], *dfc = g->v[G_DFC];
    /* the head, tied: dlnf = dlogits wte; dwte += dlogits^T lnf */
    s = mpcl_linear_backward(ctx, dln, g->g[T_WTE], NULL, dlogits, g->v[G_LNF], g->w[T_WTE]);
    if (s == MPCL_OK)
        s = mpcl_layernorm_backward(ctx, dx, g->g[T_LNF_G], g->g[T_LNF_B], dln, g->v[G_XF],
                                    g->w[T_LNF_G], g->mf, g->inf);
    for (size_t i = c->layers; i-- > 0 && s == MPCL_OK;) {
        gpt_block *b = &g->blocks[i];
        mpcl_tensor **v = b->v, **w = b->w, **gr = b->g;
        /* dx: the gradient of the block's output */
        s = mpcl_linear_backward(ctx, dfc, gr[P_FCP_W], gr[P_FCP_B], dx, v[A_ACT], w[P_FCP_W]);
        if (s == MPCL_OK)
            s = mpcl_activation_backward(ctx, MPCL_ACT_GELU, 0.0f, dfc, dfc, v[A_FC], v[A_ACT]);
        if (s == MPCL_OK)
            s = mpcl_linear_backward(ctx, dln, gr[P_FC_W], gr[P_FC_B], dfc, v[A_LN2], w[P_FC_W]);
        if (s == MPCL_OK)
            s = mpcl_layernorm_backward(ctx, dln, gr[P_LN2_G], gr[P_LN2_B], dln, v[A_XMID],
                                        w[P_LN2_G], b->sv[S_M2], b->sv[S_I2]);
        if (s == MPCL_OK)
            s = mpcl_add(ctx, dx, dx, dln); /* the gradient of xmid */
        if (s == MPCL_OK)
            s = mpcl_linear_backward(ctx, g->v[G_DATTY], gr[P_PROJ_W], gr[P_PROJ_B], dx, v[A_ATTY],
                                     w[P_PROJ_W]);
        if (s == MPCL_OK)
            s = mpcl_attention_backward(ctx, g->v[G_DQKV], g->v[G_DATTY], v[A_QKV], v[A_PROBS], g->T,
                                        c->heads);
        if (s == MPCL_OK)
            s = mpcl_linear_backward(ctx, dln, gr[P_ATTN_W], gr[P_ATTN_B], g->v[G_DQKV], v[A_LN1],
                                     w[P_ATTN_W]);
        if (s == MPCL_OK)
            s = mpcl_layernorm_backward(ctx, dln, gr[P_LN1_G], gr[P_LN1_B], dln, v[A_X], w[P_LN1_G],
                                        b->sv[S_M1], b->sv[S_I1]);
        if (s == MPCL_OK)
            s = mpcl_add(ctx, dx, dx, dln); /* the gradient of the block's input */
    }
    if (s == MPCL_OK)
        s = mpcl_embedding_backward(ctx, g->g[T_WTE], g->g[T_WPE], dx, g->order, g->start, g->T);
    return s;
}

/* ------------------------------------------------------------ decoding */

mpcl_status mpcl_lm_decode(mpcl_model *m, const int32_t *tokens, size_t B, size_t Tq, size_t pos,
                           mpcl_tensor **logits)
{
    const char *op = "mpcl_lm_decode";
    if (!m || !logits)
        return MPCL_ERR_ARGUMENT;
    mpcl_status s = check_tokens(m, op, tokens, B, Tq, m->gpt ? m->gpt->c.context : 0);
    if (s != MPCL_OK)
        return s;
    mpcl_gpt *g = m->gpt;
    mpcl_context *ctx = m->ctx;
    const mpcl_gpt_spec *c = &g->c;
    if (pos > c->context - Tq)
        return mpcl_set_error(ctx, MPCL_ERR_SHAPE,
                              "%s: positions %zu..%zu are past the context of %zu positions", op,
                              pos, pos + Tq - 1, c->context);
    if (pos > 0 && g->cache_batch != B)
        return mpcl_set_error(ctx, MPCL_ERR_STATE,
                              "%s: position %zu continues %zu cached sequences, not %zu: start at "
                              "position 0",
                              op, pos, g->cache_batch, B);
    if (g->cache_batch != B) {
        size_t E = c->width / c->heads;
        mpcl_dtype sd = mpcl_storage_dtype(ctx);
        for (size_t l = 0; l < c->layers; l++) {
            gpt_block *b = &g->blocks[l];
            mpcl_tensor_destroy(b->kcache);
            mpcl_tensor_destroy(b->vcache);
            b->kcache = b->vcache = NULL;
        }
        g->cache_batch = 0;
        for (size_t l = 0; l < c->layers && s == MPCL_OK; l++) {
            gpt_block *b = &g->blocks[l];
            s = make_tensor(ctx, sd, B * c->heads, c->context, E, MPCL_MEM_ACTIVATIONS, &b->kcache);
            if (s == MPCL_OK)
                s = make_tensor(ctx, sd, B * c->heads, c->context, E, MPCL_MEM_ACTIVATIONS,
                                &b->vcache);
        }
        if (s != MPCL_OK)
            return s;
        g->cache_batch = B;
    }
    if ((s = make_views(g, B, Tq)) != MPCL_OK)
        return s;
    g->forwarded = 0;
    if ((s = mpcl_tensor_write(g->tokens, tokens, B * Tq * sizeof *tokens)) != MPCL_OK)
        return s;
    s = mpcl_embedding_forward(ctx, g->blocks[0].v[A_X], g->tokens, g->w[T_WTE], g->w[T_WPE], Tq, pos);
    if (s == MPCL_OK)
        s = run_blocks(m, 1, pos);
    if (s == MPCL_OK)
        *logits = g->v[G_LOGITS];
    return s;
}

/* ------------------------------------------------------------ memory */

static uint64_t tensor_bytes(const mpcl_tensor *t)
{
    return t ? (uint64_t)t->numel * mpcl_dtype_size(t->dtype) : 0;
}

void mpcl_gpt_memory(const mpcl_model *m, mpcl_model_memory *out)
{
    const mpcl_gpt *g = m->gpt;
    size_t sd = mpcl_dtype_size(mpcl_storage_dtype(m->ctx));
    out->parameters = (uint64_t)m->padded * (4 + (m->working != m->master ? sd : 0) + sd);
    for (size_t l = 0; l < g->c.layers; l++) {
        const gpt_block *b = &g->blocks[l];
        for (int a = 0; a < A_COUNT; a++)
            out->activations += tensor_bytes(b->full[a]);
        for (int k = 0; k < S_COUNT; k++)
            out->activations_other += tensor_bytes(b->sfull[k]);
        out->activations_other += tensor_bytes(b->kcache) + tensor_bytes(b->vcache);
        out->tensors += A_COUNT;
    }
    for (int a = 0; a < G_COUNT; a++)
        out->activations += tensor_bytes(g->full[a]);
    out->tensors += G_COUNT;
    out->activations_other += tensor_bytes(g->mf_full) + tensor_bytes(g->if_full) +
                              tensor_bytes(g->tokens_full) + tensor_bytes(g->order_full) +
                              tensor_bytes(g->start);
    out->activations_unshared = out->activations; /* no sharing planned yet */
}

/* ------------------------------------------------------------ parameters */

mpcl_status mpcl_gpt_param(const mpcl_model *m, size_t i, mpcl_param_info *out)
{
    const mpcl_gpt *g = m->gpt;
    const mpcl_gpt_spec *c = &g->c;
    memset(out, 0, sizeof *out);
    size_t per = P_COUNT, total = 2 + c->layers * per + 2;
    if (i >= total)
        return MPCL_ERR_ARGUMENT;
    int top = -1;
    if (i < 2)
        top = (int)i;
    else if (i >= total - 2)
        top = (int)(i - (total - 2)) + T_LNF_G;
    if (top >= 0) {
        static const char *const names[T_COUNT] = {"transformer.wte.weight", "transformer.wpe.weight",
                                                   "transformer.ln_f.weight", "transformer.ln_f.bias"};
        snprintf(out->name, sizeof out->name, "%s", names[top]);
        out->ndim = top_shape(c, top, out->shape);
        out->offset = g->off[top];
    } else {
        size_t l = (i - 2) / per;
        int p = (int)((i - 2) % per);
        snprintf(out->name, sizeof out->name, "transformer.h.%zu.%s", l, P_NAMES[p]);
        out->ndim = block_shape(c, p, out->shape);
        out->offset = g->blocks[l].off[p];
    }
    out->numel = numel_of(out->ndim, out->shape);
    return MPCL_OK;
}
