/* train_dist.c — `mpcl train` under an MPI launcher (mpirun -np N): the
 * group, each rank's device, agreement on set-up failures, the trainer's
 * group, a timeout that ends the job, and the exchange's report. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef MPCL_HAVE_MPI
#include <mpi.h>
#endif

#include "mpcl.h"

#include "cli.h"
#include "train_args.h"

int cli_dist_start(train_args *a, int *argc, char ***argv, cli_dist *cd)
{
    memset(cd, 0, sizeof *cd);
    cd->info.size = 1;
    if (!mpcl_dist_launched())
        return -1;
    if (!mpcl_dist_built()) {
        fprintf(stderr, "mpcl: started by an MPI launcher, but this mpcl was built without MPI: each "
                        "process would train alone. Install libopenmpi-dev and rebuild (meson setup "
                        "-Dmpi=enabled), or run mpcl train without mpirun\n");
        return EXIT_RUNTIME;
    }
    cd->argc = *argc;
    cd->argv = *argv;
    char err[512];
    mpcl_status s = mpcl_dist_init(argc, argv, &cd->d, err, sizeof err);
    if (s != MPCL_OK)
        return runtime_error(s, err);
    mpcl_dist_get_info(cd->d, &cd->info);
    if (cd->info.size == 1) { /* mpirun -np 1: one process, as without mpirun */
        mpcl_dist_finalize(cd->d);
        cd->d = NULL;
        return -1;
    }
    if (cd->info.rank != 0) { /* rank 0 alone prints and logs */
        a->quiet = 1;
        a->log = NULL;
    }
    return -1;
}

const char *cli_dist_device(const cli_dist *cd, const char *device, char *buf, size_t len)
{
    if (!cd->d)
        return device;
    int r = cd->info.local_rank;
    if (device && strchr(device, ',')) { /* a list: entry r mod its length */
        int n = 1;
        for (const char *p = device; *p; p++)
            n += *p == ',';
        int want = r % n, i = 0;
        const char *p = device;
        while (i < want) {
            p = strchr(p, ',') + 1;
            i++;
        }
        size_t k = strcspn(p, ",");
        snprintf(buf, len, "%.*s", (int)k, p);
        return buf;
    }
    if (device || getenv("MPCL_DEVICE"))
        return device; /* the same selector on every rank */
    /* the r-th device of the preferred type (GPUs, else all), r mod count */
    mpcl_device_desc list[64];
    size_t n = 0;
    char err[256];
    if (mpcl_device_list(list, 64, &n, err, sizeof err) != MPCL_OK || n == 0)
        return device;
    if (n > 64)
        n = 64;
    size_t gpus = 0;
    for (size_t i = 0; i < n; i++)
        gpus += list[i].type == MPCL_DEVICE_GPU;
    size_t want = (size_t)r % (gpus ? gpus : n), seen = 0;
    for (size_t i = 0; i < n; i++) {
        if (gpus && list[i].type != MPCL_DEVICE_GPU)
            continue;
        if (seen++ == want) {
            snprintf(buf, len, "%u:%u", list[i].platform_index, list[i].device_index);
            return buf;
        }
    }
    return device;
}

/* A hash of the command line without what may differ between ranks (the
 * device, the log, --quiet, the test hooks): every rank must run the same
 * training, or their collectives would not match. */
static uint64_t command_hash(int argc, char **argv)
{
    static const char *own[] = {"--device", "--log", "--inject-error-step", "--inject-inf-step"};
    uint64_t h = 1469598103934665603ULL;
    for (int i = 1; i < argc; i++) {
        int skip = strcmp(argv[i], "--quiet") == 0;
        for (size_t k = 0; k < sizeof own / sizeof own[0] && !skip; k++) {
            size_t n = strlen(own[k]);
            if (strncmp(argv[i], own[k], n) == 0 && (argv[i][n] == '=' || argv[i][n] == '\0')) {
                skip = 1;
                i += argv[i][n] == '\0'; /* and its value */
            }
        }
        for (const char *p = argv[i]; !skip && p; p = *p ? p + 1 : NULL)
            h = (h ^ (unsigned char)*p) * 1099511628211ULL; /* FNV-1a, with each NUL */
    }
    return h;
}

mpcl_status cli_dist_join(cli_dist *cd, mpcl_trainer *tr, const train_args *a, char *msg, size_t len)
{
    cd->agreed = 1;
    mpcl_status s = mpcl_dist_agree(cd->d, MPCL_OK, msg, len);
    if (s != MPCL_OK)
        return s;
    uint64_t mine = command_hash(cd->argc, cd->argv), root = mine;
    if ((s = mpcl_dist_bcast(cd->d, &root, sizeof root)) != MPCL_OK) {
        snprintf(msg, len, "could not compare the ranks' command lines");
        return s;
    }
    snprintf(msg, len, "its command line differs from rank 0's (beyond --device, --log and --quiet): every "
                       "rank must run the same training");
    s = mpcl_dist_agree(cd->d, mine == root ? MPCL_OK : MPCL_ERR_ARGUMENT, msg, len);
    if (s != MPCL_OK)
        return s;
    mpcl_dist_options o;
    mpcl_dist_options_init(&o);
    o.wire = a->wire;
    if (a->bucket_bytes)
        o.bucket_bytes = a->bucket_bytes;
    o.check_every = a->dist_check;
    if (a->dist_timeout > 0)
        o.timeout_s = a->dist_timeout;
    s = mpcl_trainer_set_dist(tr, cd->d, &o);
    if (s != MPCL_OK)
        snprintf(msg, len, "%s", mpcl_last_error(mpcl_model_context(mpcl_trainer_model(tr))));
    return s;
}

void cli_dist_fail(cli_dist *cd, mpcl_status s, const char *msg)
{
    if (!cd->d)
        return;
    if (s == MPCL_ERR_TIMEOUT) {
        /* a rank is hung or gone: nothing but ending the job frees the others */
        fprintf(stderr, "mpcl: %s\n", msg);
        fflush(stderr);
#ifdef MPCL_HAVE_MPI
        MPI_Abort(MPI_COMM_WORLD, EXIT_RUNTIME);
#endif
    }
    cd->agreed = 1; /* the others learned of it in the step */
}

int cli_dist_end(cli_dist *cd, int rc)
{
    if (!cd->d)
        return rc;
    if (!cd->agreed) { /* failed in set-up: tell the others, who wait in the agreement */
        char msg[512];
        snprintf(msg, sizeof msg, "failed while setting up (exit code %d; its own message is above)", rc);
        mpcl_dist_agree(cd->d, rc == EXIT_OK ? MPCL_OK : MPCL_ERR_STATE, msg, sizeof msg);
    }
    mpcl_dist_finalize(cd->d);
    cd->d = NULL;
    return rc;
}

void cli_dist_header(const cli_dist *cd, const train_args *a, size_t params, mpcl_precision p)
{
    if (!cd->d)
        return;
    mpcl_dist_info di; /* after cli_dist_join: the trainer's buckets */
    mpcl_dist_get_info(cd->d, &di);
    size_t wsize = a->wire == MPCL_WIRE_F32 ? 4 : 2;
    fieldf("data parallel", "%d ranks (%d on this machine), one device each; batch %lu split over them; "
                            "%s gradients (%.2f MB a step) in %zu bucket%s of up to %.3f MiB",
           cd->info.size, cd->info.local_size, a->batch, mpcl_wire_name(a->wire),
           (double)(params * wsize) / 1e6, di.buckets, di.buckets == 1 ? "" : "s",
           (double)di.bucket_bytes / 1048576.0);
    (void)p;
}

void cli_dist_report(const cli_dist *cd, double train_seconds)
{
    if (!cd->d || cd->info.rank != 0)
        return;
    mpcl_dist_info di;
    mpcl_dist_get_info(cd->d, &di);
    if (!di.steps)
        return;
    double n = (double)di.steps;
    fieldf("gradient exchange", "%.1f ms a step (%.1f ms after the device finished: %.1f%% of the "
                                "step time), %.2f MB sent a step by rank 0, %d ranks",
           1e3 * di.exchange_s / n, 1e3 * di.exposed_s / n,
           train_seconds > 0 ? 100.0 * di.exposed_s / train_seconds : 0.0, (double)di.wire_bytes / n / 1e6,
           di.size);
    if (di.checks)
        fieldf("weight checksums", "equal on every rank at %" PRIu64 " checks (last %016" PRIx64 ")", di.checks,
               di.checksum);
}
