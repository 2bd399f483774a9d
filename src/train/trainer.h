/* train/trainer.h — the trainer's insides, shared by trainer.c and the
 * checkpoint code (io/checkpoint.c). */
#ifndef MPCL_TRAIN_TRAINER_H
#define MPCL_TRAIN_TRAINER_H

#include "internal.h"

struct mpcl_trainer {
    mpcl_context *ctx;
    mpcl_model *model;
    mpcl_train_options opt;
    mpcl_scaler_state scaler;
    size_t max_batch, sample_bytes, classes;
    mpcl_tensor *x_u8, *y_u8;     /* (B, C, H, W) u8, (B) u8 */
    mpcl_tensor *x, *labels;      /* (B, C, H, W) storage dtype, (B) i32 */
    mpcl_tensor *loss, *flag;     /* (1) f32, (1) i32 */
    mpcl_tensor *dlogits;         /* (B, classes) storage dtype */
    mpcl_tensor *state1, *state2; /* optimizer state (f32, P) */
    mpcl_tensor *inf_probe;       /* (1) view of the gradient buffer, for inject_inf_step */
    /* Where weight decay spares part of the parameters (m->decay_numel <
     * P: a gpt's embeddings, biases and norms), the optimizer steps the two
     * runs separately through views [0] decayed and [1] spared of master,
     * working, grad, state1, state2 (NULL where the whole buffer is one). */
    mpcl_tensor *split[2][5];
    /* Language models: the targets (B T, i32) */
    mpcl_tensor *targets;
};

#endif
