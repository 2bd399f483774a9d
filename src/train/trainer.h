/* train/trainer.h — the trainer's insides, shared by trainer.c and the
 * checkpoint code (io/checkpoint.c). */
#ifndef MPCL_TRAIN_TRAINER_H
#define MPCL_TRAIN_TRAINER_H

#include "internal.h"

typedef struct mpcl_dist_state mpcl_dist_state;

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
    /* data parallelism (train/dist.c): the group and the exchange's state */
    mpcl_dist *dist;
    mpcl_dist_state *ds;
};

/* train/dist.c: the gradient exchange of a step, on every rank in the
 * same order. begin: the global batch (a collective); reduce: after the
 * backward pass was enqueued (or failed: local), sums the gradients over
 * the ranks into the gradient buffer and the shards' losses into *loss;
 * every rank returns the same status (a failing rank's error names it).
 * check: the weight checksums after the update (options.check_every).
 * reduce_sum: sums n doubles over the ranks. */
mpcl_status mpcl_dist_step_begin(mpcl_trainer *t, size_t b, size_t *global);
mpcl_status mpcl_dist_step_reduce(mpcl_trainer *t, mpcl_status local, size_t b, float *loss);
mpcl_status mpcl_dist_step_check(mpcl_trainer *t);
mpcl_status mpcl_dist_reduce_sum(mpcl_trainer *t, double *v, size_t n);
void mpcl_dist_state_free(mpcl_dist_state *s);
/* A data-parallel rank that cannot take its step (its batch failed to
 * load): meets the others in the step's collectives with the error `why`
 * (set in the context), so that every rank returns it. One process:
 * returns why. */
mpcl_status mpcl_trainer_step_failed(mpcl_trainer *t, mpcl_status why);

#endif
