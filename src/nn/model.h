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
    mpcl_tensor *act_full, *dact_full, *argmax_full; /* max_batch; NULL for flatten */
    mpcl_tensor *act, *dact, *argmax;                /* views for the current batch */
    /* batchnorm2d followed by relu, run as one (mpcl_batchnorm2d_relu_*):
     * the relu layer's act and dact are the pair's output and its
     * gradient; this layer's own act and dact are not written */
    int fused_relu;
} mpcl_layer;

struct mpcl_model {
    mpcl_context *ctx;
    mpcl_model_spec spec;
    size_t max_batch, batch;
    size_t padded; /* P */
    mpcl_tensor *master, *working, *grad;
    mpcl_layer *layers;
    const mpcl_tensor *input; /* of the last forward */
    uint64_t step;
    int training;
    uint64_t seed;
    float input_mean, input_std; /* normalisation of input bytes: (x / 255 - mean) / std */
};

#endif
