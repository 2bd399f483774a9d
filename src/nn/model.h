/* nn/model.h — the model's insides, shared by model.c and the trainer. */
#ifndef MPCL_NN_MODEL_H
#define MPCL_NN_MODEL_H

#include "internal.h"

typedef struct {
    mpcl_layer_spec spec;
    size_t w_off, b_off, w_numel, b_numel; /* in the flat buffers */
    mpcl_tensor *w, *b, *gw, *gb;          /* views: working copy, gradients */
    mpcl_tensor *running_mean, *running_var, *save_mean, *save_invstd; /* batchnorm2d (C) f32 */
    /* per-sample output shape, prefixed by the batch size */
    int out_ndim;
    size_t out_shape[4];
    /* Planned memory: the activation arena's tensor whose region holds this
     * layer's output (act_tensor) and output gradient (dact_tensor), -1 for
     * none. A flatten's output is its input's region; so is its gradient
     * where the flatten is its input's last reader. */
    int act_tensor, dact_tensor;
    int needs_grad;   /* a parameter at or before this layer: its output gradient is wanted */
    int grad_writers; /* readers that contribute to the output gradient */
    mpcl_tensor *argmax_full;                  /* max_batch; maxpool2d */
    mpcl_tensor *act, *dact, *argmax;          /* views for the current batch */
    mpcl_tensor *dscratch;  /* scratch of the output's shape: a second contribution to dact */
    mpcl_tensor *dact_in;   /* flatten with its own gradient: that gradient in its input's shape */
    /* batchnorm2d followed by relu (its only reader), run as one
     * (mpcl_batchnorm2d_relu_*): the relu layer's act and dact are the
     * pair's output and its gradient; this layer has none of its own */
    int fused_relu;
} mpcl_layer;

/* One tensor of the activation plan: elements at max_batch, its life in
 * step time (forward of layer l: l; backward of l: 2L - 1 - l) and its
 * offset in the arena. */
typedef struct {
    size_t numel, offset;
    int start, end;
} mpcl_planned;

/* x rounded up to a multiple of a: parameter and activation offsets that a
 * sub-buffer view accepts (model.c, gpt.c). */
static inline size_t mpcl_round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

/* nn/gpt.c: a language model's insides (a "gpt" spec). */
typedef struct mpcl_gpt mpcl_gpt;

struct mpcl_model {
    mpcl_context *ctx;
    mpcl_gpt *gpt;       /* a gpt spec's model, else NULL (and layers are used) */
    size_t decay_numel;  /* weight decay applies to the flat buffers' first decay_numel values */
    mpcl_model_spec spec;
    mpcl_model_options opt;
    size_t max_batch, batch;
    size_t padded; /* P */
    mpcl_tensor *master, *working, *grad;
    mpcl_layer *layers;
    mpcl_planned *plan;
    int nplanned;
    int scratch_tensor; /* -1: no layer output has two gradient contributions */
    unsigned char *grad_started; /* per planned tensor, during a backward pass */
    mpcl_tensor *arena;
    size_t arena_numel, unshared_numel;
    const mpcl_tensor *input; /* of the last forward */
    uint64_t step;
    int training;
    uint64_t seed;
    mpcl_normalization norm; /* of the input bytes (mpcl_model_set_normalization) */
    /* Data parallelism (train/dist.c): called during the backward pass as
     * each layer's parameter gradients (values lo .. lo + n - 1 of the flat
     * buffer) are enqueued, so their exchange can start behind them. */
    void (*grad_ready)(void *user, size_t lo, size_t n);
    void *grad_ready_user;
    uint64_t dropout_stream; /* mixed into dropout masks: a rank's own */
    /* The precision report (train/precision.c): called with each layer's
     * output right after its forward op (gradient 0) and with each layer's
     * output gradient once complete, before its backward op reads it
     * (gradient 1); a flatten (a view) and a batch norm run as one with its
     * relu (whose output is the pair's) are left out. A status other than
     * MPCL_OK stops the pass. */
    mpcl_status (*inspect)(void *user, int layer, int gradient, const mpcl_tensor *t);
    void *inspect_user;
};

/* nn/gpt.c */
mpcl_status mpcl_gpt_build(mpcl_model *m); /* buffers, views, initial weights */
void mpcl_gpt_destroy(mpcl_gpt *g);
mpcl_status mpcl_gpt_param(const mpcl_model *m, size_t i, mpcl_param_info *out);
void mpcl_gpt_memory(const mpcl_model *m, mpcl_model_memory *out);

#endif
