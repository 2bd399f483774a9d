/* testutil.c — see testutil.h. */
#define _XOPEN_SOURCE 700 /* nftw */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

void tu_probe_device(tu_device_info *info)
{
    memset(info, 0, sizeof *info);
    info->status = -1;
    int fd[2];
    if (pipe(fd) != 0) {
        snprintf(info->message, sizeof info->message, "pipe: %s", strerror(errno));
        return;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(info->message, sizeof info->message, "fork: %s", strerror(errno));
        close(fd[0]);
        close(fd[1]);
        return;
    }
    if (pid == 0) {
        close(fd[0]);
        alarm(300); /* a hung driver must not hang the suite */
        tu_device_info r;
        memset(&r, 0, sizeof r);
        mpcl_options opt;
        mpcl_options_init(&opt);
        opt.precision = MPCL_PRECISION_FP32;
        mpcl_context *ctx = NULL;
        r.status = (int)mpcl_context_create(&opt, &ctx);
        if (r.status == MPCL_OK) {
            r.is_pocl = strstr(ctx->caps.platform, "Portable Computing Language") != NULL;
            r.ext_fp16 = ctx->caps.ext_fp16;
            r.arith_passed = ctx->caps.fp16_arith_check.passed;
            r.storage_passed = ctx->caps.fp16_storage.passed;
            r.bf16_passed = ctx->caps.bf16_storage.passed;
        } else {
            snprintf(r.message, sizeof r.message, "%s", mpcl_last_error(ctx));
        }
        mpcl_context_destroy(ctx);
        size_t n = 0;
        if (mpcl_device_list(NULL, 0, &n, NULL, 0) == MPCL_OK)
            r.device_count = (unsigned)n;
        ssize_t w = write(fd[1], &r, sizeof r);
        _exit(w == (ssize_t)sizeof r ? 0 : 1);
    }
    close(fd[1]);
    tu_device_info r;
    size_t got = 0;
    while (got < sizeof r) {
        ssize_t k = read(fd[0], (char *)&r + got, sizeof r - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        got += (size_t)k;
    }
    close(fd[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (got == sizeof r)
        *info = r;
    else
        snprintf(info->message, sizeof info->message,
                 "the device-probing child died (wait status 0x%x)", st);
}

int tu_no_device(const tu_device_info *info)
{
    return info->status == MPCL_ERR_NO_PLATFORM || info->status == MPCL_ERR_NO_DEVICE;
}

void tu_clean_env(void)
{
    unsetenv("MPCL_KERNEL_DIR");
    unsetenv("MPCL_NO_CACHE");
    unsetenv("MPCL_MAX_WORK_GROUP");
    unsetenv("MPCL_STORE_BINARIES");
}

int tu_cli_init(const char *suite)
{
    tu_clean_env();
    unsetenv("MPCL_MODEL_DIR");
    const char *bin = getenv("MPCL_BIN");
    if (!bin || !tu_exists(bin)) {
        fprintf(stderr, "%s: MPCL_BIN (%s) does not name the built mpcl binary\n", suite,
                bin ? bin : "unset");
        return 0;
    }
    return 1;
}

static int mkdir_p(const char *dir)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    return (mkdir(tmp, 0700) != 0 && errno != EEXIST) ? -1 : 0;
}

char *tu_mkdtemp(const char *tag)
{
    const char *base = getenv("MPCL_TEST_TMPDIR");
    if (!base || !*base)
        base = getenv("TMPDIR");
    if (!base || !*base)
        base = "/tmp";
    ck_assert_msg(mkdir_p(base) == 0, "cannot create %s: %s", base, strerror(errno));
    size_t len = strlen(base) + strlen(tag) + 16;
    char *path = malloc(len);
    ck_assert_ptr_nonnull(path);
    snprintf(path, len, "%s/%s-XXXXXX", base, tag);
    ck_assert_msg(mkdtemp(path) != NULL, "mkdtemp(%s): %s", path, strerror(errno));
    return path;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void tu_rmtree(const char *path)
{
    if (path && *path)
        nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

char *tu_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t k = fread(buf + n, 1, cap - n, f);
        n += k;
        if (n < cap)
            break;
        cap *= 2;
        char *nb = realloc(buf, cap + 1);
        if (!nb) {
            free(buf);
            buf = NULL;
        } else {
            buf = nb;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

int tu_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int ok = fwrite(data, 1, len, f) == len;
    ok = (fclose(f) == 0) && ok;
    return ok ? 0 : -1;
}

int tu_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

int tu_dir_entries(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

/* environ with env_set applied (replacing variables of the same name). */
static char **merged_env(char *const env_set[])
{
    size_t n = 0, k = 0;
    while (environ[n])
        n++;
    while (env_set && env_set[k])
        k++;
    char **out = calloc(n + k + 1, sizeof *out);
    if (!out)
        return NULL;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        int replaced = 0;
        for (size_t j = 0; j < k; j++) {
            size_t nl = strcspn(env_set[j], "=");
            if (strncmp(environ[i], env_set[j], nl) == 0 && environ[i][nl] == '=')
                replaced = 1;
        }
        if (!replaced)
            out[m++] = environ[i];
    }
    for (size_t j = 0; j < k; j++)
        out[m++] = env_set[j];
    out[m] = NULL;
    return out;
}

typedef struct {
    char *buf;
    size_t len, cap;
} growbuf;

static int gb_append(growbuf *g, const char *p, size_t n)
{
    if (g->len + n + 1 > g->cap) {
        size_t cap = g->cap ? g->cap : 4096;
        while (cap < g->len + n + 1)
            cap *= 2;
        char *nb = realloc(g->buf, cap);
        if (!nb)
            return -1;
        g->buf = nb;
        g->cap = cap;
    }
    memcpy(g->buf + g->len, p, n);
    g->len += n;
    g->buf[g->len] = '\0';
    return 0;
}

#define TU_RUN_TIMEOUT_S 110

int tu_run(char *const argv[], char *const env_set[], char **out, char **err)
{
    int po[2], pe[2];
    growbuf go = {0}, ge = {0};
    gb_append(&go, "", 0);
    gb_append(&ge, "", 0);
    if (pipe(po) != 0)
        return -1;
    if (pipe(pe) != 0) {
        close(po[0]);
        close(po[1]);
        return -1;
    }
    char **envp = merged_env(env_set);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addclose(&fa, po[0]);
    posix_spawn_file_actions_addclose(&fa, pe[0]);
    posix_spawn_file_actions_adddup2(&fa, po[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pe[1], 2);
    posix_spawn_file_actions_addclose(&fa, po[1]);
    posix_spawn_file_actions_addclose(&fa, pe[1]);
    pid_t pid;
    fflush(NULL);
    int rc = envp ? posix_spawn(&pid, argv[0], &fa, NULL, argv, envp) : ENOMEM;
    posix_spawn_file_actions_destroy(&fa);
    free(envp);
    close(po[1]);
    close(pe[1]);
    if (rc != 0) {
        close(po[0]);
        close(pe[0]);
        fprintf(stderr, "tu_run: cannot start %s: %s\n", argv[0], strerror(rc));
        free(go.buf);
        free(ge.buf);
        if (out)
            *out = NULL;
        if (err)
            *err = NULL;
        return -1;
    }
    struct pollfd fds[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
    int open_fds = 2;
    time_t start = time(NULL);
    int killed = 0;
    while (open_fds > 0) {
        int pr = poll(fds, 2, 1000);
        if (pr < 0 && errno != EINTR)
            break;
        if (!killed && time(NULL) - start > TU_RUN_TIMEOUT_S) {
            fprintf(stderr, "tu_run: %s ran over %d s; killing it\n", argv[0], TU_RUN_TIMEOUT_S);
            kill(pid, SIGKILL);
            killed = 1;
        }
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char chunk[8192];
            ssize_t k = read(fds[i].fd, chunk, sizeof chunk);
            if (k > 0) {
                gb_append(i == 0 ? &go : &ge, chunk, (size_t)k);
            } else if (k == 0 || (errno != EINTR && errno != EAGAIN)) {
                close(fds[i].fd);
                fds[i].fd = -1;
                open_fds--;
            }
        }
    }
    for (int i = 0; i < 2; i++)
        if (fds[i].fd >= 0)
            close(fds[i].fd);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (out)
        *out = go.buf;
    else
        free(go.buf);
    if (err)
        *err = ge.buf;
    else
        free(ge.buf);
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return -1;
}

uint64_t tu_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint32_t tu_f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

float tu_u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

const char *tu_env(const char *name)
{
    const char *v = getenv(name);
    ck_assert_msg(v && *v, "environment variable %s is not set (run the suite through meson test)",
                  name);
    return v;
}

int tu_run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}

tu_result tu_mpcl_run(char *const env[], const char *a0, ...)
{
    char *argv[40];
    int n = 0;
    argv[n++] = (char *)tu_env("MPCL_BIN");
    va_list ap;
    va_start(ap, a0);
    for (const char *a = a0; a && n < 39; a = va_arg(ap, const char *))
        argv[n++] = (char *)a;
    va_end(ap);
    argv[n] = NULL;
    tu_result r;
    r.rc = tu_run(argv, env, &r.out, &r.err);
    ck_assert_msg(r.rc != -1, "cannot run %s", argv[0]);
    ck_assert_ptr_nonnull(r.out);
    ck_assert_ptr_nonnull(r.err);
    return r;
}

void tu_result_free(tu_result *r)
{
    free(r->out);
    free(r->err);
}
