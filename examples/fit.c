/* fit.c — train a model from an application's own code with mpcl_fit, on
 * any OpenCL vendor's device, with checkpoints that a later run resumes
 * from exactly where this one stopped.
 *
 * Build against an installed libmpcl:
 *     cc -std=c11 fit.c -o fit $(pkg-config --cflags --libs mpcl)
 * Run:
 *     ./fit SPEC DATA_DIR EPOCHS CHECKPOINT [LIMIT]
 *     ./fit resnet8.txt /usr/share/datasets/fashion-mnist 5 run.st
 *     MPCL_DEVICE=gpu MPCL_PRECISION=fp16 ./fit ...      (pick a device, a precision)
 *
 * SPEC is a model spec file (docs/models.md), DATA_DIR an MNIST-layout
 * directory or CIFAR-10's binary one, EPOCHS the total, CHECKPOINT a file
 * written after every epoch (when it exists, training resumes from it),
 * LIMIT the training images to use (default all). Ctrl-C stops after the
 * current step with a checkpoint. Prints one line per epoch and the final
 * test accuracy; exit status 0 on success, 1 on any error, 130 when stopped.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mpcl.h>

static volatile sig_atomic_t stop = 0;
static void on_sigint(int sig) { stop = sig; }

static int on_epoch(void *user, const mpcl_fit_epoch_info *e)
{
    (void)user;
    printf("epoch %lu/%lu: loss %.4f, test accuracy %.2f%%, %.0f images/s\n", e->epoch, e->epochs,
           e->train_loss, 100.0 * e->test_accuracy, e->img_s);
    fflush(stdout);
    return 0; /* non-zero would stop the fit */
}

static int fail(mpcl_context *ctx, const char *what)
{
    fprintf(stderr, "fit: %s: %s\n", what, ctx ? mpcl_last_error(ctx) : "failed");
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 5 || argc > 6) {
        fprintf(stderr, "usage: %s SPEC DATA_DIR EPOCHS CHECKPOINT [LIMIT]\n", argv[0]);
        return 1;
    }
    const char *spec_path = argv[1], *data_dir = argv[2], *ck_path = argv[4];
    unsigned long epochs = strtoul(argv[3], NULL, 10);
    size_t limit = argc > 5 ? (size_t)strtoul(argv[5], NULL, 10) : 0;
    char err[1024];

    mpcl_model_spec *spec = malloc(sizeof *spec); /* 256 layers: keep it off the stack */
    mpcl_dataset data;
    if (!spec || mpcl_model_spec_load(spec_path, spec, err, sizeof err) != MPCL_OK) {
        fprintf(stderr, "fit: %s\n", spec ? err : "out of memory");
        return 1;
    }
    if (mpcl_dataset_load(data_dir, &data, err, sizeof err) != MPCL_OK) {
        fprintf(stderr, "fit: %s\n", err);
        return 1;
    }

    /* the device and the precision: MPCL_DEVICE, MPCL_PRECISION (default auto) */
    mpcl_options opt;
    mpcl_options_init(&opt);
    const char *prec = getenv("MPCL_PRECISION");
    if (prec && mpcl_precision_parse(prec, &opt.precision) != MPCL_OK) {
        fprintf(stderr, "fit: MPCL_PRECISION=%s is not a precision mode\n", prec);
        return 1;
    }
    mpcl_context *ctx = NULL;
    if (mpcl_context_create(&opt, &ctx) != MPCL_OK)
        return fail(ctx, "no device");

    mpcl_fit_options fo;
    mpcl_fit_options_init(&fo);
    fo.epochs = epochs;
    fo.batch = 64;
    fo.train_limit = limit;
    fo.save_path = ck_path;
    fo.stop = &stop;
    if (data.format == MPCL_DATASET_CIFAR10)
        fo.augment = (mpcl_augment_options){.pad = 4, .flip = 1};

    mpcl_model *model = NULL;
    mpcl_trainer *trainer = NULL;
    mpcl_train_options to;
    mpcl_train_options_init(&to, mpcl_precision_chosen(ctx, NULL)); /* Adam, dynamic loss scaling in fp16 */
    if (mpcl_model_create(ctx, spec, fo.batch, fo.seed, &model) != MPCL_OK ||
        mpcl_trainer_create(model, &to, &trainer) != MPCL_OK)
        return fail(ctx, spec_path);

    /* resume where the checkpoint stopped, or start: normalise with the
     * training images' statistics */
    mpcl_checkpoint *ck = NULL;
    if (access(ck_path, F_OK) == 0) {
        if (mpcl_checkpoint_open(ctx, ck_path, &ck) != MPCL_OK || mpcl_fit_resume(ck, trainer, &fo) != MPCL_OK)
            return fail(ctx, ck_path);
        mpcl_checkpoint_close(ck);
        printf("resumed from %s: %lu epochs and %zu steps done\n", ck_path, fo.epochs_done, fo.epoch_step);
    } else {
        const mpcl_idx *im = &data.train_images;
        mpcl_normalization n;
        mpcl_normalization_measure(&n, im->data, limit ? limit : im->count, im->channels,
                                   im->rows * im->cols);
        if (mpcl_model_set_normalization(model, &n) != MPCL_OK)
            return fail(ctx, "normalisation");
    }

    signal(SIGINT, on_sigint);
    mpcl_fit_callbacks cb = {NULL, on_epoch, NULL, NULL};
    mpcl_fit_result res;
    if (mpcl_fit(trainer, &data, &fo, &cb, &res) != MPCL_OK)
        return fail(ctx, "training");
    if (res.end == MPCL_FIT_STOPPED) {
        printf("stopped after step %llu; run again to go on from %s\n", (unsigned long long)res.steps, ck_path);
        return 130;
    }
    printf("test accuracy %.2f%% after %lu epochs (%s: %s)\n", 100.0 * res.test_accuracy, epochs,
           data.name, spec_path);

    mpcl_trainer_destroy(trainer);
    mpcl_model_destroy(model);
    mpcl_context_destroy(ctx);
    mpcl_dataset_free(&data);
    free(spec);
    return 0;
}
