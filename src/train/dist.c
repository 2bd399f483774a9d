/* dist.c — data parallelism over MPI: the group, the gradient exchange of
 * a training step (bucketed, overlapping the backward pass), agreement on
 * failures and stops, and weight checksums across ranks.
 *
 * The exchange of one step, on every rank in the same order:
 *   1. begin: an allreduce of the shard sizes (the global batch, so that
 *      each rank weighs its loss gradient by b_r / B: the sum over ranks
 *      is then the global batch's mean gradient, at the loss scale);
 *   2. during the backward pass, the model reports each layer's gradients
 *      as enqueued (mpcl_dist_grad_ready); a bucket whose values are all
 *      enqueued gets a non-blocking read to the host right behind them;
 *   3. after the backward pass, buckets from the last to the first: wait
 *      for its read, pack it for the wire (float by default), start a
 *      non-blocking allreduce (sum), and while the device and the network
 *      work, finish those done: the float sum rounded once to the gradient
 *      buffer's dtype and written back (non-blocking);
 *   4. a small allreduce of {loss b_r, failures}: a rank whose step failed
 *      still takes part in every collective (with zeros), so the others
 *      learn of it here and every rank returns that rank's error.
 * The all-finite check and the optimizer then run on identical gradient
 * buffers on every rank, so the weights stay identical. */
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "nn/model.h"
#include "train/trainer.h"

void mpcl_dist_options_init(mpcl_dist_options *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->wire = MPCL_WIRE_F32;
    o->bucket_bytes = 0; /* auto: see mpcl_trainer_set_dist */
    o->timeout_s = 1800.0;
}

const char *mpcl_wire_name(mpcl_wire w)
{
    switch (w) {
    case MPCL_WIRE_F32: return "f32";
    case MPCL_WIRE_F16: return "f16";
    case MPCL_WIRE_BF16: return "bf16";
    }
    return "unknown";
}

mpcl_status mpcl_wire_parse(const char *s, mpcl_wire *out)
{
    if (!s || !out)
        return MPCL_ERR_ARGUMENT;
    for (int w = MPCL_WIRE_F32; w <= MPCL_WIRE_BF16; w++)
        if (strcmp(s, mpcl_wire_name((mpcl_wire)w)) == 0) {
            *out = (mpcl_wire)w;
            return MPCL_OK;
        }
    return MPCL_ERR_ARGUMENT;
}

int mpcl_dist_launched(void)
{
    static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE",
                                 "MPI_LOCALNRANKS"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i]))
            return 1;
    return 0;
}

mpcl_dist *mpcl_trainer_dist(const mpcl_trainer *t) { return t ? t->dist : NULL; }

#ifndef MPCL_HAVE_MPI

int mpcl_dist_built(void) { return 0; }

mpcl_status mpcl_dist_init(int *argc, char ***argv, mpcl_dist **out, char *err, size_t errlen)
{
    (void)argc;
    (void)argv;
    if (out)
        *out = NULL;
    if (err && errlen)
        snprintf(err, errlen, "this mpcl was built without MPI: install libopenmpi-dev (or MPICH) and "
                              "rebuild (meson setup -Dmpi=enabled)");
    return MPCL_ERR_UNSUPPORTED;
}

void mpcl_dist_finalize(mpcl_dist *d) { (void)d; }
void mpcl_dist_get_info(const mpcl_dist *d, mpcl_dist_info *out)
{
    (void)d;
    if (out) {
        memset(out, 0, sizeof *out);
        out->size = out->local_size = 1;
    }
}
void mpcl_dist_shard(const mpcl_dist *d, size_t n, size_t *first, size_t *count)
{
    (void)d;
    if (first)
        *first = 0;
    if (count)
        *count = n;
}
mpcl_status mpcl_dist_agree(mpcl_dist *d, mpcl_status local, char *msg, size_t msglen)
{
    (void)d, (void)msg, (void)msglen;
    return local;
}
mpcl_status mpcl_dist_bcast(mpcl_dist *d, void *buf, size_t bytes)
{
    (void)d;
    return !buf && bytes ? MPCL_ERR_ARGUMENT : MPCL_OK;
}
mpcl_status mpcl_dist_any(mpcl_dist *d, int local, int *any)
{
    (void)d;
    if (!any)
        return MPCL_ERR_ARGUMENT;
    *any = local != 0;
    return MPCL_OK;
}
mpcl_status mpcl_trainer_set_dist(mpcl_trainer *t, mpcl_dist *d, const mpcl_dist_options *o)
{
    (void)d, (void)o;
    if (!t)
        return MPCL_ERR_ARGUMENT;
    return mpcl_set_error(t->ctx, MPCL_ERR_UNSUPPORTED, "mpcl_trainer_set_dist: this mpcl was built without MPI");
}
mpcl_status mpcl_trainer_sync_buffers(mpcl_trainer *t) { return t ? MPCL_OK : MPCL_ERR_ARGUMENT; }
void mpcl_dist_state_free(mpcl_dist_state *s) { (void)s; }
mpcl_status mpcl_dist_step_begin(mpcl_trainer *t, size_t b, size_t *global)
{
    (void)t;
    *global = b;
    return MPCL_OK;
}
mpcl_status mpcl_dist_step_reduce(mpcl_trainer *t, mpcl_status local, size_t b, float *loss)
{
    (void)t, (void)b, (void)loss;
    return local;
}
mpcl_status mpcl_dist_step_check(mpcl_trainer *t)
{
    (void)t;
    return MPCL_OK;
}
mpcl_status mpcl_dist_reduce_sum(mpcl_trainer *t, double *v, size_t n)
{
    (void)t, (void)v, (void)n;
    return MPCL_OK;
}

#else /* MPCL_HAVE_MPI */

#include <mpi.h>

struct mpcl_dist {
    MPI_Comm comm;
    int rank, size, local_rank, local_size;
    int own_init; /* MPI_Init was ours: MPI_Finalize is too */
    char host[64];
    MPI_Op op_f16, op_bf16;
    double timeout_s; /* of the trainer's options; for collectives outside a step too */
    mpcl_dist_info stats;
};

typedef struct {
    size_t lo, n;          /* values of the flat gradient buffer */
    size_t pending;        /* parameter values not yet enqueued by the backward pass */
    int read;              /* 0: not read; 1: read enqueued; 2: packed and sent */
    cl_event ev;
    MPI_Request req;
} bucket;

struct mpcl_dist_state {
    mpcl_dist_options o;
    size_t P, esize, wsize; /* values; bytes per value in the storage dtype, on the wire */
    mpcl_dtype sd;
    unsigned char *stage;   /* P values in the storage dtype */
    unsigned char *wire;    /* P values on the wire */
    bucket *b;
    size_t nb;
    size_t *pcount;         /* per bucket: parameter values in it (padding is not reported) */
    int failed;             /* this rank's step failed: send zeros */
    double t_backward;      /* the backward pass enqueued */
    size_t global_batch, local_batch;
    /* the exchange's bookkeeping, per bucket (allocated once: a step
     * never runs out of host memory half-way through its collectives) */
    cl_event *writes;
    MPI_Request *reqs;
    int *idx;
    size_t *which;
};

int mpcl_dist_built(void) { return 1; }

static void f16_sum(void *in, void *inout, int *len, MPI_Datatype *dt)
{
    (void)dt;
    const uint16_t *a = in;
    uint16_t *b = inout;
    for (int i = 0; i < *len; i++)
        b[i] = mpcl_half_from_float(mpcl_half_to_float(a[i]) + mpcl_half_to_float(b[i]));
}

static void bf16_sum(void *in, void *inout, int *len, MPI_Datatype *dt)
{
    (void)dt;
    const uint16_t *a = in;
    uint16_t *b = inout;
    for (int i = 0; i < *len; i++)
        b[i] = mpcl_bf16_from_float(mpcl_bf16_to_float(a[i]) + mpcl_bf16_to_float(b[i]));
}

static void mpi_text(int code, char *dst, size_t len)
{
    char s[MPI_MAX_ERROR_STRING];
    int n = 0;
    if (MPI_Error_string(code, s, &n) != MPI_SUCCESS)
        snprintf(s, sizeof s, "MPI error %d", code);
    snprintf(dst, len, "%s", s);
}

mpcl_status mpcl_dist_init(int *argc, char ***argv, mpcl_dist **out, char *err, size_t errlen)
{
    if (!out)
        return MPCL_ERR_ARGUMENT;
    *out = NULL;
    char spare[8];
    if (!err || !errlen) { /* the message is optional */
        err = spare;
        errlen = sizeof spare;
    }
    mpcl_dist *d = calloc(1, sizeof *d);
    if (!d) {
        snprintf(err, errlen, "out of host memory");
        return MPCL_ERR_NOMEM;
    }
    int inited = 0, provided = 0, rc = MPI_SUCCESS;
    MPI_Initialized(&inited);
    if (!inited) {
        rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
        if (rc != MPI_SUCCESS) {
            char m[256];
            mpi_text(rc, m, sizeof m);
            snprintf(err, errlen, "MPI_Init_thread failed: %s", m);
            free(d);
            return MPCL_ERR_IO;
        }
        d->own_init = 1;
    }
    MPI_Comm_dup(MPI_COMM_WORLD, &d->comm);
    /* errors come back as codes: mpcl reports them, MPI does not end the job */
    MPI_Comm_set_errhandler(d->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(d->comm, &d->rank);
    MPI_Comm_size(d->comm, &d->size);
    MPI_Comm local;
    MPI_Comm_split_type(d->comm, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL, &local);
    MPI_Comm_rank(local, &d->local_rank);
    MPI_Comm_size(local, &d->local_size);
    MPI_Comm_free(&local);
    if (gethostname(d->host, sizeof d->host - 1) != 0)
        snprintf(d->host, sizeof d->host, "unknown");
    MPI_Op_create(f16_sum, 1, &d->op_f16);
    MPI_Op_create(bf16_sum, 1, &d->op_bf16);
    d->timeout_s = 1800.0;
    *out = d;
    return MPCL_OK;
}

void mpcl_dist_finalize(mpcl_dist *d)
{
    if (!d)
        return;
    MPI_Op_free(&d->op_f16);
    MPI_Op_free(&d->op_bf16);
    MPI_Comm_free(&d->comm);
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (d->own_init && !finalized)
        MPI_Finalize();
    free(d);
}

void mpcl_dist_get_info(const mpcl_dist *d, mpcl_dist_info *out)
{
    if (!out)
        return;
    if (!d) {
        memset(out, 0, sizeof *out);
        out->size = out->local_size = 1;
        return;
    }
    *out = d->stats;
    out->rank = d->rank;
    out->size = d->size;
    out->local_rank = d->local_rank;
    out->local_size = d->local_size;
    snprintf(out->host, sizeof out->host, "%s", d->host);
}

void mpcl_dist_shard(const mpcl_dist *d, size_t n, size_t *first, size_t *count)
{
    size_t N = d ? (size_t)d->size : 1, r = d ? (size_t)d->rank : 0;
    size_t lo = n * r / N, hi = n * (r + 1) / N;
    if (first)
        *first = lo;
    if (count)
        *count = hi - lo;
}

/* A pause between polls, growing with the time waited so far: 20 us while
 * an answer is due soon, up to 1 ms while another rank is busy for long (a
 * first step's kernel builds), so that a waiting rank leaves the cores to
 * the device's threads and to other ranks on the machine. */
static void nap(double waited_s)
{
    double s = waited_s / 100.0;
    s = s < 20e-6 ? 20e-6 : s > 1e-3 ? 1e-3 : s;
    struct timespec ts = {0, (long)(s * 1e9)};
    nanosleep(&ts, NULL);
}

/* Waits for a non-blocking collective with the group's timeout. */
static int wait_req(mpcl_dist *d, MPI_Request *req, const char *what, char *err, size_t errlen)
{
    double start = mpcl_now_s();
    for (;;) {
        int done = 0;
        int rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) {
            char m[256];
            mpi_text(rc, m, sizeof m);
            snprintf(err, errlen, "rank %d (%s): MPI failed in %s: %s", d->rank, d->host, what, m);
            return (int)MPCL_ERR_IO;
        }
        if (done)
            return 0;
        if (mpcl_now_s() - start > d->timeout_s) {
            snprintf(err, errlen, "rank %d (%s): no answer from the other ranks in %s after %.0f s (a rank "
                                  "hung or died); end the job",
                     d->rank, d->host, what, d->timeout_s);
            return (int)MPCL_ERR_TIMEOUT;
        }
        nap(mpcl_now_s() - start);
    }
}

/* A collective that failed (w: wait_req's answer): MPCL_ERR_TIMEOUT or
 * MPCL_ERR_IO, with the message in ctx where there is one. */
static mpcl_status failed(mpcl_context *ctx, int w, const char *err)
{
    mpcl_status s = w == (int)MPCL_ERR_TIMEOUT ? MPCL_ERR_TIMEOUT : MPCL_ERR_IO;
    return ctx ? mpcl_set_error(ctx, s, "%s", err) : s;
}

/* A blocking allreduce through the non-blocking one, with the timeout. */
static mpcl_status allreduce(mpcl_dist *d, mpcl_context *ctx, void *buf, int n, MPI_Datatype t, MPI_Op op,
                             const char *what)
{
    MPI_Request req;
    char err[512];
    int rc = MPI_Iallreduce(MPI_IN_PLACE, buf, n, t, op, d->comm, &req);
    if (rc != MPI_SUCCESS) {
        char m[256];
        mpi_text(rc, m, sizeof m);
        snprintf(err, sizeof err, "rank %d (%s): MPI_Iallreduce failed in %s: %s", d->rank, d->host, what, m);
        return ctx ? mpcl_set_error(ctx, MPCL_ERR_IO, "%s", err) : MPCL_ERR_IO;
    }
    int w = wait_req(d, &req, what, err, sizeof err);
    return w ? failed(ctx, w, err) : MPCL_OK;
}

static mpcl_status bcast(mpcl_dist *d, mpcl_context *ctx, void *buf, size_t bytes, const char *what)
{
    MPI_Request req;
    char err[512];
    unsigned char *p = buf;
    while (bytes) { /* counts are ints */
        int n = bytes > (size_t)1 << 30 ? 1 << 30 : (int)bytes;
        int rc = MPI_Ibcast(p, n, MPI_BYTE, 0, d->comm, &req);
        int w = rc != MPI_SUCCESS ? 1 : wait_req(d, &req, what, err, sizeof err);
        if (rc != MPI_SUCCESS)
            snprintf(err, sizeof err, "rank %d (%s): MPI_Ibcast failed in %s", d->rank, d->host, what);
        if (w)
            return failed(ctx, w, err);
        p += n;
        bytes -= (size_t)n;
    }
    return MPCL_OK;
}

mpcl_status mpcl_dist_bcast(mpcl_dist *d, void *buf, size_t bytes)
{
    if (!buf && bytes)
        return MPCL_ERR_ARGUMENT;
    return d ? bcast(d, NULL, buf, bytes, "a broadcast from rank 0") : MPCL_OK; /* NULL: a group of one */
}

mpcl_status mpcl_dist_any(mpcl_dist *d, int local, int *any)
{
    if (!any)
        return MPCL_ERR_ARGUMENT;
    if (!d) { /* a group of one */
        *any = local != 0;
        return MPCL_OK;
    }
    int v = local != 0;
    mpcl_status s = allreduce(d, NULL, &v, 1, MPI_INT, MPI_MAX, "a stop request");
    *any = v;
    return s;
}

/* The agreement: the lowest failing rank's status and message to all. */
static mpcl_status agree(mpcl_dist *d, mpcl_context *ctx, mpcl_status local, const char *msg, char *out,
                         size_t outlen)
{
    int who = local != MPCL_OK ? d->rank : INT_MAX;
    mpcl_status s = allreduce(d, ctx, &who, 1, MPI_INT, MPI_MIN, "an agreement on errors");
    if (s != MPCL_OK)
        return s;
    if (who == INT_MAX)
        return MPCL_OK;
    struct {
        int status;
        char text[1024];
    } e;
    memset(&e, 0, sizeof e);
    if (who == d->rank) {
        e.status = (int)local;
        if (msg && strncmp(msg, "rank ", 5) == 0)
            snprintf(e.text, sizeof e.text, "%s", msg);
        else
            snprintf(e.text, sizeof e.text, "rank %d (%s): %s", d->rank, d->host, msg && *msg ? msg : "failed");
    }
    MPI_Request req;
    char err[512];
    int rc = MPI_Ibcast(&e, (int)sizeof e, MPI_BYTE, who, d->comm, &req);
    int w = rc != MPI_SUCCESS ? (int)MPCL_ERR_IO : wait_req(d, &req, "an agreement on errors", err, sizeof err);
    if (w) {
        if (out && outlen)
            snprintf(out, outlen, "%s", err);
        return failed(ctx, w, err);
    }
    if (out && outlen)
        snprintf(out, outlen, "%s", e.text);
    mpcl_status st = e.status > 0 && e.status <= (int)MPCL_ERR_DEVICE_MEMORY ? (mpcl_status)e.status : MPCL_ERR_STATE;
    return ctx ? mpcl_set_error(ctx, st, "%s", e.text) : st;
}

mpcl_status mpcl_dist_agree(mpcl_dist *d, mpcl_status local, char *msg, size_t msglen)
{
    if (!d)
        return local;
    char mine[1024];
    snprintf(mine, sizeof mine, "%s", msg ? msg : "");
    return agree(d, NULL, local, mine, msg, msglen);
}

/* ------------------------------------------------ the trainer's group */

void mpcl_dist_state_free(mpcl_dist_state *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nb; i++)
        if (s->b[i].ev)
            clReleaseEvent(s->b[i].ev);
    free(s->b);
    free(s->pcount);
    free(s->writes);
    free(s->reqs);
    free(s->idx);
    free(s->which);
    free(s->stage);
    free(s->wire);
    free(s);
}

static mpcl_dtype wire_dtype(mpcl_wire w)
{
    return w == MPCL_WIRE_F16 ? MPCL_F16 : w == MPCL_WIRE_BF16 ? MPCL_BF16 : MPCL_F32;
}

/* Rank 0's state to every rank: weights, buffers, normalisation, the
 * optimizer state, the scaler and the seed. */
static mpcl_status sync_from_root(mpcl_trainer *t)
{
    mpcl_dist *d = t->dist;
    mpcl_context *ctx = t->ctx;
    mpcl_model *m = t->model;
    size_t P = m->padded;
    float *host = malloc((P ? P : 1) * sizeof *host);
    if (!host)
        return mpcl_set_error(ctx, MPCL_ERR_NOMEM, "mpcl_trainer_set_dist: out of host memory");
    mpcl_tensor *f32[3] = {m->master, t->state1, t->state2};
    mpcl_status s = MPCL_OK;
    for (int k = 0; k < 3 && s == MPCL_OK; k++) {
        if (!f32[k])
            continue;
        if (d->rank == 0)
            s = mpcl_tensor_read(f32[k], host, P * sizeof *host);
        if (s == MPCL_OK)
            s = bcast(d, ctx, host, P * sizeof *host, "sending rank 0's weights");
        if (s == MPCL_OK && d->rank != 0)
            s = mpcl_tensor_write(f32[k], host, P * sizeof *host);
    }
    free(host);
    if (s == MPCL_OK && m->working != m->master)
        s = mpcl_refresh_working(ctx, m->working, m->master);
    if (s == MPCL_OK)
        s = mpcl_trainer_sync_buffers(t);
    struct {
        mpcl_scaler_state sc;
        mpcl_normalization norm;
        uint64_t seed;
    } small;
    memset(&small, 0, sizeof small);
    small.sc = t->scaler;
    small.norm = m->norm;
    small.seed = m->seed;
    if (s == MPCL_OK)
        s = bcast(d, ctx, &small, sizeof small, "sending rank 0's scaler and normalisation");
    if (s == MPCL_OK && d->rank != 0) {
        t->scaler = small.sc;
        mpcl_model_set_seed(m, small.seed);
        s = mpcl_model_set_normalization(m, &small.norm);
    }
    return s;
}

mpcl_status mpcl_trainer_sync_buffers(mpcl_trainer *t)
{
    if (!t)
        return MPCL_ERR_ARGUMENT;
    mpcl_dist *d = t->dist;
    if (!d || d->size == 1)
        return MPCL_OK;
    mpcl_param_info info;
    mpcl_status s = MPCL_OK;
    for (size_t i = 0; s == MPCL_OK && mpcl_model_param(t->model, i, &info) == MPCL_OK; i++) {
        if (!info.buffer)
            continue;
        float *h = malloc(info.numel * sizeof *h);
        if (!h)
            return mpcl_set_error(t->ctx, MPCL_ERR_NOMEM, "mpcl_trainer_sync_buffers: out of host memory");
        if (d->rank == 0)
            s = mpcl_tensor_read(info.buffer, h, info.numel * sizeof *h);
        if (s == MPCL_OK)
            s = bcast(d, t->ctx, h, info.numel * sizeof *h, "sending rank 0's batch-norm statistics");
        if (s == MPCL_OK && d->rank != 0)
            s = mpcl_tensor_write(info.buffer, h, info.numel * sizeof *h);
        free(h);
    }
    return s;
}

/* The model's hook: values lo .. lo + n - 1 of the gradient buffer are
 * enqueued; read each bucket that is complete now, behind them. */
static void grad_ready(void *user, size_t lo, size_t n)
{
    mpcl_trainer *t = user;
    mpcl_dist_state *ds = t->ds;
    if (!ds || ds->failed || !n)
        return;
    for (size_t k = 0; k < ds->nb; k++) {
        bucket *b = &ds->b[k];
        size_t a = lo > b->lo ? lo : b->lo, e = lo + n < b->lo + b->n ? lo + n : b->lo + b->n;
        if (e <= a)
            continue;
        b->pending = b->pending > e - a ? b->pending - (e - a) : 0;
        if (b->pending == 0 && !b->read) {
            cl_int err = clEnqueueReadBuffer(t->ctx->queue, t->model->grad->mem, CL_FALSE, b->lo * ds->esize,
                                             b->n * ds->esize, ds->stage + b->lo * ds->esize, 0, NULL, &b->ev);
            if (err != CL_SUCCESS) {
                ds->failed = 1;
                mpcl_set_error(t->ctx, MPCL_ERR_OPENCL, "gradient exchange: reading bucket %zu failed (%s)", k,
                               mpcl_cl_error_name(err));
                return;
            }
            b->read = 1;
        }
    }
    clFlush(t->ctx->queue);
}

mpcl_status mpcl_trainer_set_dist(mpcl_trainer *t, mpcl_dist *d, const mpcl_dist_options *o)
{
    const char *op = "mpcl_trainer_set_dist";
    if (!t)
        return MPCL_ERR_ARGUMENT;
    mpcl_context *ctx = t->ctx;
    if (!d)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: no group", op);
    mpcl_dist_options def;
    mpcl_dist_options_init(&def);
    if (!o)
        o = &def;
    if (o->wire > MPCL_WIRE_BF16 || (o->bucket_bytes && o->bucket_bytes < 64) || !(o->timeout_s > 0))
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "%s: options out of range (wire %d, bucket %zu bytes (0 or at least 64), timeout %g s)",
                              op,
                              (int)o->wire, o->bucket_bytes, o->timeout_s);
    mpcl_model *m = t->model;
    mpcl_dist_state *ds = calloc(1, sizeof *ds);
    if (!ds)
        return mpcl_set_error(ctx, MPCL_ERR_NOMEM, "%s: out of host memory", op);
    ds->o = *o;
    ds->P = m->padded;
    ds->sd = m->grad->dtype;
    ds->esize = mpcl_dtype_size(ds->sd);
    ds->wsize = mpcl_dtype_size(wire_dtype(o->wire));
    /* auto: about eight buckets (measured on resnet8-wide, 2 ranks: the
     * exchange after the backward pass took 12.4 ms a step with one 4 MiB
     * bucket, 2.7 ms with 64 KiB ones), but no bucket under 64 KiB (each
     * allreduce has a latency) nor over 4 MiB */
    size_t bytes = o->bucket_bytes;
    if (!bytes) {
        bytes = ds->P * ds->wsize / 8;
        bytes = bytes < ((size_t)64 << 10) ? (size_t)64 << 10 : bytes > ((size_t)4 << 20) ? (size_t)4 << 20 : bytes;
    }
    ds->o.bucket_bytes = bytes;
    size_t per = bytes / ds->wsize;
    d->stats.bucket_bytes = bytes;
    ds->nb = (ds->P + per - 1) / per;
    d->stats.buckets = ds->nb;
    ds->stage = malloc(ds->P * ds->esize + 1);
    ds->wire = malloc(ds->P * ds->wsize + 1);
    ds->b = calloc(ds->nb + 1, sizeof *ds->b);
    ds->pcount = calloc(ds->nb + 1, sizeof *ds->pcount);
    ds->writes = calloc(ds->nb + 1, sizeof *ds->writes);
    ds->reqs = calloc(ds->nb + 1, sizeof *ds->reqs);
    ds->idx = calloc(ds->nb + 1, sizeof *ds->idx);
    ds->which = calloc(ds->nb + 1, sizeof *ds->which);
    if (!ds->stage || !ds->wire || !ds->b || !ds->pcount || !ds->writes || !ds->reqs || !ds->idx || !ds->which) {
        mpcl_dist_state_free(ds);
        return mpcl_set_error(ctx, MPCL_ERR_NOMEM, "%s: out of host memory for %zu gradient values", op, ds->P);
    }
    for (size_t k = 0; k < ds->nb; k++) {
        ds->b[k].lo = k * per;
        ds->b[k].n = ds->P - k * per < per ? ds->P - k * per : per;
    }
    /* how many values of each bucket the backward pass reports (padding is
     * never reported: it is read after the pass) */
    mpcl_param_info info;
    for (size_t i = 0; mpcl_model_param(m, i, &info) == MPCL_OK; i++) {
        if (info.buffer)
            continue;
        for (size_t k = 0; k < ds->nb; k++) {
            bucket *b = &ds->b[k];
            size_t a = info.offset > b->lo ? info.offset : b->lo;
            size_t e = info.offset + info.numel < b->lo + b->n ? info.offset + info.numel : b->lo + b->n;
            if (e > a)
                ds->pcount[k] += e - a;
        }
    }
    mpcl_dist_state_free(t->ds);
    t->ds = ds;
    t->dist = d;
    d->timeout_s = o->timeout_s;
    /* the layer-wise hook: image models (a gpt's buffer is not in layer order) */
    if (!m->gpt) {
        m->grad_ready = grad_ready;
        m->grad_ready_user = t;
    }
    mpcl_status s = sync_from_root(t);
    if (s != MPCL_OK) {
        m->grad_ready = NULL;
        m->grad_ready_user = NULL;
        t->dist = NULL;
        t->ds = NULL;
        mpcl_dist_state_free(ds);
    }
    return s;
}

mpcl_status mpcl_dist_step_begin(mpcl_trainer *t, size_t b, size_t *global)
{
    mpcl_dist_state *ds = t->ds;
    long long n = (long long)b;
    mpcl_status s = allreduce(t->dist, t->ctx, &n, 1, MPI_LONG_LONG, MPI_SUM, "the step's batch sizes");
    *global = (size_t)n;
    ds->global_batch = (size_t)n;
    ds->local_batch = b;
    ds->failed = 0;
    for (size_t k = 0; k < ds->nb; k++) {
        if (ds->b[k].ev)
            clReleaseEvent(ds->b[k].ev);
        ds->b[k].ev = NULL;
        ds->b[k].read = 0;
        ds->b[k].pending = ds->pcount[k];
    }
    return s;
}

/* n values from one dtype (f32, f16 or bf16) to another, through float:
 * a plain copy where they are the same. */
static void convert(unsigned char *dst, mpcl_dtype dt, const unsigned char *src, mpcl_dtype st, size_t n)
{
    if (dt == st) {
        memcpy(dst, src, n * mpcl_dtype_size(st));
        return;
    }
    for (size_t i = 0; i < n; i++) {
        float v;
        uint16_t h;
        if (st == MPCL_F32)
            memcpy(&v, src + 4 * i, 4);
        else {
            memcpy(&h, src + 2 * i, 2);
            v = st == MPCL_F16 ? mpcl_half_to_float(h) : mpcl_bf16_to_float(h);
        }
        if (dt == MPCL_F32)
            memcpy(dst + 4 * i, &v, 4);
        else {
            h = dt == MPCL_F16 ? mpcl_half_from_float(v) : mpcl_bf16_from_float(v);
            memcpy(dst + 2 * i, &h, 2);
        }
    }
}

/* A bucket onto the wire (zeros from a rank whose step failed). */
static void pack(mpcl_dist_state *ds, size_t lo, size_t n)
{
    unsigned char *dst = ds->wire + lo * ds->wsize;
    if (ds->failed)
        memset(dst, 0, n * ds->wsize);
    else
        convert(dst, wire_dtype(ds->o.wire), ds->stage + lo * ds->esize, ds->sd, n);
}

/* The sum back into the storage dtype: one rounding. */
static void unpack(mpcl_dist_state *ds, size_t lo, size_t n)
{
    convert(ds->stage + lo * ds->esize, ds->sd, ds->wire + lo * ds->wsize, wire_dtype(ds->o.wire), n);
}

mpcl_status mpcl_dist_step_reduce(mpcl_trainer *t, mpcl_status local, size_t b, float *loss)
{
    mpcl_dist *d = t->dist;
    mpcl_dist_state *ds = t->ds;
    mpcl_context *ctx = t->ctx;
    cl_command_queue q = ctx->queue;
    char mine[1024] = "";
    if (local != MPCL_OK) {
        ds->failed = 1;
        snprintf(mine, sizeof mine, "%s", mpcl_last_error(ctx));
    }
    double t0 = mpcl_now_s(), t_device_done = -1.0;
    /* the rest of the reads: buckets the hook did not complete (padding,
     * a gpt, an image model's leftovers) */
    if (!ds->failed) {
        for (size_t k = ds->nb; k-- > 0;) {
            bucket *bk = &ds->b[k];
            if (bk->read)
                continue;
            cl_int err = clEnqueueReadBuffer(q, t->model->grad->mem, CL_FALSE, bk->lo * ds->esize,
                                             bk->n * ds->esize, ds->stage + bk->lo * ds->esize, 0, NULL, &bk->ev);
            if (err != CL_SUCCESS) {
                ds->failed = 1;
                snprintf(mine, sizeof mine, "gradient exchange: reading the gradients failed (%s)",
                         mpcl_cl_error_name(err));
                break;
            }
            bk->read = 1;
        }
        clFlush(q);
    }
    /* buckets from the last (first done) to the first */
    size_t next = ds->nb, done = 0, started = 0;
    char err[512] = "";
    int timeout = 0, mpi_failed = 0;
    cl_event *writes = ds->writes;
    MPI_Request *reqs = ds->reqs;
    int *idx = ds->idx;
    size_t *which = ds->which;
    memset(writes, 0, (ds->nb + 1) * sizeof *writes);
    MPI_Datatype dt = ds->o.wire == MPCL_WIRE_F32 ? MPI_FLOAT : MPI_UINT16_T;
    MPI_Op opr = ds->o.wire == MPCL_WIRE_F32 ? MPI_SUM : ds->o.wire == MPCL_WIRE_F16 ? d->op_f16 : d->op_bf16;
    double last_progress = mpcl_now_s();
    while (done < ds->nb && !timeout && !mpi_failed) {
        int progress = 0;
        if (next > 0) {
            bucket *bk = &ds->b[next - 1];
            cl_int st = CL_COMPLETE;
            if (!ds->failed && bk->ev &&
                clGetEventInfo(bk->ev, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof st, &st, NULL) != CL_SUCCESS)
                st = -1;
            if (st < 0 && !ds->failed) {
                ds->failed = 1;
                snprintf(mine, sizeof mine, "gradient exchange: the device failed reading the gradients (%s)",
                         mpcl_cl_error_name(st));
            }
            if (ds->failed || st == CL_COMPLETE) {
                if (next == 1)
                    t_device_done = mpcl_now_s(); /* the first layer's: the backward pass is done */
                pack(ds, bk->lo, bk->n);
                int rc = MPI_Iallreduce(MPI_IN_PLACE, ds->wire + bk->lo * ds->wsize, (int)bk->n, dt, opr, d->comm,
                                        &reqs[started]);
                if (rc != MPI_SUCCESS) {
                    mpi_failed = 1;
                    char m[256];
                    mpi_text(rc, m, sizeof m);
                    snprintf(err, sizeof err, "rank %d (%s): MPI_Iallreduce failed: %s", d->rank, d->host, m);
                    break;
                }
                which[started++] = next - 1;
                d->stats.wire_bytes += bk->n * ds->wsize;
                next--;
                progress = 1;
            }
        }
        if (started > 0) {
            int outc = 0;
            int rc = MPI_Testsome((int)started, reqs, &outc, idx, MPI_STATUSES_IGNORE);
            if (rc != MPI_SUCCESS) {
                mpi_failed = 1;
                char m[256];
                mpi_text(rc, m, sizeof m);
                snprintf(err, sizeof err, "rank %d (%s): MPI_Testsome failed: %s", d->rank, d->host, m);
                break;
            }
            for (int j = 0; outc != MPI_UNDEFINED && j < outc; j++) {
                bucket *bk = &ds->b[which[idx[j]]];
                unpack(ds, bk->lo, bk->n);
                if (!ds->failed) {
                    cl_int e = clEnqueueWriteBuffer(q, t->model->grad->mem, CL_FALSE, bk->lo * ds->esize,
                                                    bk->n * ds->esize, ds->stage + bk->lo * ds->esize, 0, NULL,
                                                    &writes[done]);
                    if (e != CL_SUCCESS) {
                        ds->failed = 1;
                        snprintf(mine, sizeof mine, "gradient exchange: writing the gradients failed (%s)",
                                 mpcl_cl_error_name(e));
                    }
                }
                done++;
                progress = 1;
            }
        }
        if (progress)
            last_progress = mpcl_now_s();
        else if (mpcl_now_s() - last_progress > d->timeout_s) {
            timeout = 1;
            snprintf(err, sizeof err, "rank %d (%s): no answer from the other ranks in the gradient exchange "
                                      "after %.0f s (a rank hung or died); end the job",
                     d->rank, d->host, d->timeout_s);
        } else
            nap(mpcl_now_s() - last_progress);
    }
    clFlush(q);
    for (size_t k = 0; k < done; k++)
        if (writes[k]) {
            if (clWaitForEvents(1, &writes[k]) != CL_SUCCESS && !ds->failed) {
                ds->failed = 1;
                snprintf(mine, sizeof mine, "gradient exchange: writing the gradients failed");
            }
            clReleaseEvent(writes[k]);
        }
    double t1 = mpcl_now_s();
    if (timeout || mpi_failed)
        return mpcl_set_error(ctx, timeout ? MPCL_ERR_TIMEOUT : MPCL_ERR_IO, "%s", err);
    d->stats.exchange_s += t1 - t0;
    d->stats.exposed_s += t_device_done >= 0 ? t1 - t_device_done : t1 - t0;
    d->stats.steps++;
    /* the loss of this shard, and failures */
    float l = 0.0f;
    if (!ds->failed && b > 0) {
        mpcl_status s = mpcl_tensor_read(t->loss, &l, sizeof l);
        if (s != MPCL_OK) {
            ds->failed = 1;
            snprintf(mine, sizeof mine, "%s", mpcl_last_error(ctx));
        }
    }
    double h[2] = {ds->failed ? 0.0 : (double)l * (double)b, ds->failed ? 1.0 : 0.0};
    mpcl_status s = allreduce(d, ctx, h, 2, MPI_DOUBLE, MPI_SUM, "the step's loss");
    if (s != MPCL_OK)
        return s;
    if (h[1] > 0) {
        mpcl_status why = local != MPCL_OK ? local : ds->failed ? MPCL_ERR_OPENCL : MPCL_OK;
        return agree(d, ctx, why, mine, NULL, 0);
    }
    *loss = ds->global_batch ? (float)(h[0] / (double)ds->global_batch) : NAN;
    return MPCL_OK;
}

mpcl_status mpcl_dist_step_check(mpcl_trainer *t)
{
    mpcl_dist *d = t->dist;
    mpcl_dist_state *ds = t->ds;
    if (!ds->o.check_every || t->scaler.steps % ds->o.check_every != 0)
        return MPCL_OK;
    mpcl_model *m = t->model;
    size_t P = m->padded;
    float *w = malloc((P ? P : 1) * sizeof *w);
    if (!w)
        return mpcl_set_error(t->ctx, MPCL_ERR_NOMEM, "weight checksum: out of host memory");
    mpcl_status s = mpcl_tensor_read(m->master, w, P * sizeof *w);
    uint64_t h = s == MPCL_OK ? mpcl_hash64(w, P * sizeof *w, 0) : 0;
    free(w);
    if (s != MPCL_OK)
        return s;
    h = mpcl_hash64(&t->scaler, sizeof t->scaler, h);
    uint64_t *all = calloc((size_t)d->size, sizeof *all);
    if (!all)
        return mpcl_set_error(t->ctx, MPCL_ERR_NOMEM, "weight checksum: out of host memory");
    MPI_Request req;
    char err[512];
    int rc = MPI_Iallgather(&h, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, d->comm, &req);
    int wr = rc != MPI_SUCCESS ? (int)MPCL_ERR_IO : wait_req(d, &req, "comparing weight checksums", err, sizeof err);
    if (wr) {
        free(all);
        return mpcl_set_error(t->ctx, wr == (int)MPCL_ERR_TIMEOUT ? MPCL_ERR_TIMEOUT : MPCL_ERR_IO, "%s",
                              rc != MPI_SUCCESS ? "MPI_Iallgather failed comparing weight checksums" : err);
    }
    for (int r = 1; r < d->size; r++)
        if (all[r] != all[0]) {
            s = mpcl_set_error(t->ctx, MPCL_ERR_STATE,
                               "the weights differ across ranks after step %" PRIu64 ": checksum %016" PRIx64
                               " on rank 0, %016" PRIx64 " on rank %d",
                               t->scaler.steps, all[0], all[r], r);
            break;
        }
    free(all);
    d->stats.checks++;
    d->stats.checksum = h;
    return s;
}

mpcl_status mpcl_dist_reduce_sum(mpcl_trainer *t, double *v, size_t n)
{
    return allreduce(t->dist, t->ctx, v, (int)n, MPI_DOUBLE, MPI_SUM, "an evaluation");
}

#endif /* MPCL_HAVE_MPI */
