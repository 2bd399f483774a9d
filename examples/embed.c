/* embed.c — classify images with a trained mpcl checkpoint, from any
 * application, on any OpenCL vendor's device.
 *
 * Build against an installed libmpcl:
 *     cc -std=c11 embed.c -o embed $(pkg-config --cflags --libs mpcl)
 * Run:
 *     ./embed model.safetensors shirt.pgm boot.pgm ...
 *     MPCL_DEVICE=gpu ./embed model.safetensors *.pgm     (pick a device)
 *     MPCL_PRECISION=fp16-storage ./embed ...             (pick a precision)
 *
 * The checkpoint comes from `mpcl train --save model.safetensors`, or from
 * any tool that writes safetensors with mpcl's metadata (the model spec);
 * images are grey PGM or colour PPM files of the model's input size
 * (grey 28x28 for the shipped models; colour 32x32 for a model trained on
 * CIFAR-10). Prints one line per image: the class and its
 * probability. Exit status 0 on success, 1 on any error (with a message).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpcl.h>

/* The class names the checkpoint carries ("T-shirt/top,Trouser,..."), or
 * "class N". */
static void class_name(const char *names, int k, char *dst, size_t len)
{
    const char *p = names;
    for (int i = 0; p && i < k; i++) {
        p = strchr(p, ',');
        if (p)
            p++;
    }
    if (!p || !*p) {
        snprintf(dst, len, "class %d", k);
        return;
    }
    size_t n = strcspn(p, ",");
    snprintf(dst, len, "%.*s", (int)(n < len ? n : len - 1), p);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s CHECKPOINT IMAGE.pgm|IMAGE.ppm...\n", argv[0]);
        return 1;
    }
    const char *checkpoint = argv[1];
    int nimages = argc - 2;
    int rc = 1;

    /* 1. a device: MPCL_DEVICE picks it (P:D, gpu, cpu or a name), else the
     *    first GPU, else the first device of any vendor */
    mpcl_options opt;
    mpcl_options_init(&opt);
    const char *prec = getenv("MPCL_PRECISION");
    if (prec && mpcl_precision_parse(prec, &opt.precision) != MPCL_OK) {
        fprintf(stderr, "MPCL_PRECISION=%s: expected auto, fp16, fp16-storage or fp32\n", prec);
        return 1;
    }
    mpcl_context *ctx = NULL;
    mpcl_model *model = NULL;
    mpcl_checkpoint *ck = NULL;
    uint8_t *pixels = NULL;
    float *probs = NULL;
    int *labels = NULL;
    mpcl_status s = mpcl_context_create(&opt, &ctx);
    if (s != MPCL_OK) {
        fprintf(stderr, "no usable OpenCL device: %s\n", mpcl_last_error(ctx));
        goto done;
    }
    const char *why = NULL;
    mpcl_precision chosen = mpcl_precision_chosen(ctx, &why);
    printf("precision %s: %s\n", mpcl_precision_name(chosen), why);

    /* 2. the model, ready for inference: spec and weights from the file */
    s = mpcl_model_load(ctx, checkpoint, (size_t)nimages, &model);
    if (s == MPCL_OK)
        s = mpcl_checkpoint_open(ctx, checkpoint, &ck); /* for the class names */
    if (s != MPCL_OK) {
        fprintf(stderr, "%s\n", mpcl_last_error(ctx));
        goto done;
    }
    const mpcl_model_spec *spec = mpcl_model_get_spec(model);
    size_t chans = spec->input[0], side_h = spec->input[1], side_w = spec->input[2];
    size_t sample = chans * side_h * side_w; /* bytes of one image, channel-major */
    int classes = (int)spec->layers[spec->nlayers - 1].out_shape[0];

    /* 3. the images, each checked against the model's input */
    pixels = malloc((size_t)nimages * sample);
    probs = malloc((size_t)nimages * (size_t)classes * sizeof *probs);
    labels = malloc((size_t)nimages * sizeof *labels);
    if (!pixels || !probs || !labels) {
        fprintf(stderr, "out of memory\n");
        goto done;
    }
    for (int i = 0; i < nimages; i++) {
        mpcl_idx img;
        char err[512];
        if (mpcl_image_load(argv[2 + i], &img, err, sizeof err) != MPCL_OK) {
            fprintf(stderr, "%s\n", err);
            goto done;
        }
        if (img.channels != chans || img.rows != side_h || img.cols != side_w) {
            fprintf(stderr, "%s: the image is %zux%zux%zu; the model takes %zux%zux%zu (channels x "
                            "rows x columns)\n", argv[2 + i], img.channels, img.rows, img.cols, chans,
                    side_h, side_w);
            mpcl_idx_free(&img);
            goto done;
        }
        memcpy(pixels + (size_t)i * sample, img.data, sample);
        mpcl_idx_free(&img);
    }

    /* 4. classify them all in one batch */
    s = mpcl_model_classify(model, pixels, (size_t)nimages, probs, labels);
    if (s != MPCL_OK) {
        fprintf(stderr, "%s\n", mpcl_last_error(ctx));
        goto done;
    }
    const char *names = mpcl_checkpoint_meta(ck, "class_names");
    for (int i = 0; i < nimages; i++) {
        char name[64];
        class_name(names, labels[i], name, sizeof name);
        printf("%s: %s (%.1f%%)\n", argv[2 + i], name,
               100.0 * (double)probs[(size_t)i * (size_t)classes + (size_t)labels[i]]);
    }
    rc = 0;
done:
    free(pixels);
    free(probs);
    free(labels);
    mpcl_checkpoint_close(ck);
    mpcl_model_destroy(model);
    mpcl_context_destroy(ctx);
    return rc;
}
