/* cli.c — helpers shared by the mpcl subcommands (see cli.h). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "mpcl.h"

#include "cli.h"

/* ------------------------------------------------------------ exit codes */


const char EXIT_CODES_HELP[] =
    "exit codes:\n"
    "  0  success\n"
    "  1  runtime failure (OpenCL, kernel build, CLBlast, memory, I/O)\n"
    "  2  usage error (unknown subcommand or option, bad value)\n"
    "  3  no OpenCL platform, or no device matches the selector\n"
    "  4  the requested precision mode is not supported by the device\n";

int exit_code_of(mpcl_status s)
{
    switch (s) {
    case MPCL_OK: return EXIT_OK;
    case MPCL_ERR_NO_PLATFORM:
    case MPCL_ERR_NO_DEVICE: return EXIT_NO_DEVICE;
    case MPCL_ERR_UNSUPPORTED: return EXIT_UNSUPPORTED;
    default: return EXIT_RUNTIME;
    }
}

/* Prints "mpcl: MESSAGE" for a failure the library reported. */
int runtime_error(mpcl_status s, const char *msg)
{
    if (!msg || !*msg)
        msg = mpcl_status_string(s);
    fprintf(stderr, "mpcl: %s\n", msg);
    return exit_code_of(s);
}

/* --------------------------------------------------------- usage errors */

/* Prints "mpcl CMD: MESSAGE" and the hint to the subcommand's help
 * ('mpcl help' for the help subcommand itself); returns 2. */
int usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "mpcl %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (strcmp(cmd, "help") == 0)
        fprintf(stderr, "\nsee 'mpcl help'\n");
    else
        fprintf(stderr, "\nsee 'mpcl %s --help'\n", cmd);
    return EXIT_USAGE;
}

/* Restarts getopt_long for a new argv (glibc re-initialises fully on 0). */
void getopt_reset(void)
{
#if defined(__GLIBC__)
    optind = 0;
#else
    optind = 1;
#endif
}


/* "--device, --precision, ..." for messages. */
void option_names(const struct option *opts, char *dst, size_t len)
{
    size_t used = 0;
    dst[0] = '\0';
    for (const struct option *o = opts; o->name && used + 1 < len; o++) {
        int w = snprintf(dst + used, len - used, "%s--%s", used ? ", " : "", o->name);
        if (w < 0)
            break;
        used += (size_t)w;
    }
}

const char *option_name_of(const struct option *opts, int val)
{
    for (const struct option *o = opts; o->name; o++)
        if (o->val == val)
            return o->name;
    return "?";
}

/* The message for getopt_long's '?' or ':' return; returns 2. */
int option_error(const char *cmd, const struct option *opts, int c, int argc, char **argv)
{
    const char *tok = (optind > 0 && optind <= argc) ? argv[optind - 1] : "";
    char names[512];
    option_names(opts, names, sizeof names);
    if (c == ':') {
        if (optopt >= OPT_BASE)
            return usage_error(cmd, "option '--%s' needs a value", option_name_of(opts, optopt));
        return usage_error(cmd, "option '-%c' needs a value", optopt);
    }
    if (optopt >= OPT_BASE)
        return usage_error(cmd, "option '--%s' takes no value (got '%s')",
                           option_name_of(opts, optopt), tok);
    if (optopt > 0)
        return usage_error(cmd, "unknown option '-%c'; the options are %s, -h", optopt, names);
    return usage_error(cmd, "unknown or ambiguous option '%s'; the options are %s, -h", tok,
                       names);
}

/* Strict unsigned parse: all digits, in [lo, hi]. */
int parse_uint(const char *s, unsigned long lo, unsigned long hi, unsigned long *out)
{
    uint64_t v;
    if (!parse_u64(s, &v) || v < lo || v > hi)
        return 0;
    *out = (unsigned long)v;
    return 1;
}

/* ------------------------------------------------------ text formatting */


/* Writes `text` from column `col` on, wrapping at spaces before TEXT_WIDTH;
 * continuation lines start at column `col`. Ends with a newline. */
void print_wrapped(const char *text, int col)
{
    int pos = col;
    const char *p = text;
    int first = 1;
    while (*p) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        const char *e = p;
        while (*e && *e != ' ')
            e++;
        int wl = (int)(e - p);
        if (!first && pos + 1 + wl > TEXT_WIDTH) {
            printf("\n%*s", col, "");
            pos = col;
            first = 1;
        }
        if (!first) {
            putchar(' ');
            pos++;
        }
        fwrite(p, 1, (size_t)wl, stdout);
        pos += wl;
        first = 0;
        p = e;
    }
    putchar('\n');
}

/* "  label ............ value" with `value` after `prefix` (e.g. "PASS  "),
 * continuation lines aligned under the value. */
void field2(const char *label, const char *prefix, const char *value)
{
    printf("%*s%-*s ", LABEL_INDENT, "", LABEL_WIDTH, label);
    int col = LABEL_INDENT + LABEL_WIDTH + 1;
    if (prefix && *prefix) {
        fputs(prefix, stdout);
        col += (int)strlen(prefix);
    }
    print_wrapped(value && *value ? value : "-", col);
}

void field(const char *label, const char *value) { field2(label, NULL, value); }

void fieldf(const char *label, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    field(label, buf);
}

/* "31906 MiB", "511.8 MiB", "64 KiB" */
void fmt_size(char *dst, size_t len, uint64_t bytes, uint64_t unit, const char *uname)
{
    if (bytes % unit == 0)
        snprintf(dst, len, "%" PRIu64 " %s", bytes / unit, uname);
    else
        snprintf(dst, len, "%.1f %s", (double)bytes / (double)unit, uname);
}


/* ------------------------------------------------------------- JSON helpers */

/* cJSON does not validate UTF-8; device strings come from drivers, so
 * replace any byte that is not part of a well-formed sequence with '?'. */
void utf8_sanitize(const char *src, char *dst, size_t len)
{
    size_t o = 0;
    const unsigned char *s = (const unsigned char *)src;
    while (*s && o + 1 < len) {
        size_t n = 0;
        if (s[0] < 0x80) n = 1;
        else if (s[0] >= 0xc2 && s[0] <= 0xdf) n = 2;
        else if (s[0] >= 0xe0 && s[0] <= 0xef) n = 3;
        else if (s[0] >= 0xf0 && s[0] <= 0xf4) n = 4;
        int ok = n > 0;
        for (size_t k = 1; ok && k < n; k++)
            ok = (s[k] & 0xc0) == 0x80;
        if (ok && n == 3 && ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] > 0x9f)))
            ok = 0;
        if (ok && n == 4 && ((s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] > 0x8f)))
            ok = 0;
        if (!ok || o + n >= len) {
            if (!ok) {
                dst[o++] = '?';
                s++;
                continue;
            }
            break;
        }
        memcpy(dst + o, s, n);
        o += n;
        s += n;
    }
    dst[o] = '\0';
}


cJSON *jcheck(jctx *j, cJSON *item)
{
    if (!item)
        j->ok = 0;
    return item;
}

void jstr(jctx *j, cJSON *obj, const char *key, const char *val)
{
    char clean[2048];
    utf8_sanitize(val ? val : "", clean, sizeof clean);
    jcheck(j, cJSON_AddStringToObject(obj, key, clean));
}

void jnum(jctx *j, cJSON *obj, const char *key, double v)
{
    jcheck(j, cJSON_AddNumberToObject(obj, key, v));
}

void jbool(jctx *j, cJSON *obj, const char *key, int v)
{
    jcheck(j, cJSON_AddBoolToObject(obj, key, v ? 1 : 0));
}

cJSON *jobj(jctx *j, cJSON *obj, const char *key)
{
    return jcheck(j, cJSON_AddObjectToObject(obj, key));
}

/* Prints the document pretty, frees it; returns an exit code. */
int json_print(jctx *j, cJSON *root)
{
    char *text = j->ok && root ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!text) {
        fprintf(stderr, "mpcl: out of host memory while building the JSON output\n");
        return EXIT_RUNTIME;
    }
    puts(text);
    cJSON_free(text);
    return fflush(stdout) == 0 ? EXIT_OK : EXIT_RUNTIME;
}


/* ------------------------------------------------- numbers, models, output */

#ifndef MPCL_MODEL_INSTALL_DIR
#define MPCL_MODEL_INSTALL_DIR ""
#endif
#ifndef MPCL_MODEL_SOURCE_DIR
#define MPCL_MODEL_SOURCE_DIR ""
#endif

/* Strict number parse: the whole string, finite, in [lo, hi] (lo excluded
 * when lo_open). */
int parse_real(const char *s, double lo, int lo_open, double hi, double *out)
{
    if (!s || !*s)
        return 0;
    errno = 0;
    char *end = NULL;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v))
        return 0;
    if (v < lo || (lo_open && v == lo) || v > hi)
        return 0;
    *out = v;
    return 1;
}

/* Strict unsigned 64-bit parse: all digits. */
int parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s)
        return 0;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9')
            return 0;
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return 0;
    *out = (uint64_t)v;
    return 1;
}

static int is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The directories searched for a model name, in order; returns how many. */
static int model_dirs(const char *dirs[3])
{
    int n = 0;
    const char *env = getenv("MPCL_MODEL_DIR");
    if (env && *env)
        dirs[n++] = env;
    if (*MPCL_MODEL_INSTALL_DIR)
        dirs[n++] = MPCL_MODEL_INSTALL_DIR;
    if (*MPCL_MODEL_SOURCE_DIR)
        dirs[n++] = MPCL_MODEL_SOURCE_DIR;
    return n;
}

/* Resolves --model (NULL: the default) into dst; 0 when nothing matched,
 * with the searched directories in `searched`. */
int resolve_model(const char *arg, char *dst, size_t len, char *searched, size_t slen)
{
    const char *name = arg ? arg : CLI_DEFAULT_MODEL;
    searched[0] = '\0';
    if (arg && (strchr(arg, '/') || is_file(arg))) {
        snprintf(dst, len, "%s", arg);
        return 1;
    }
    const char *dirs[3];
    int n = model_dirs(dirs);
    size_t used = 0;
    for (int i = 0; i < n; i++) {
        static const char *forms[] = {"%s/%s", "%s/%s.txt"};
        for (size_t k = 0; k < 2; k++) {
            int w = snprintf(dst, len, forms[k], dirs[i], name);
            if (w > 0 && (size_t)w < len && is_file(dst))
                return 1;
        }
        int w = snprintf(searched + used, slen - used, "%s%s", used ? ", " : "", dirs[i]);
        if (w > 0 && used + (size_t)w < slen)
            used += (size_t)w;
    }
    if (!n)
        snprintf(searched, slen, "(no model directory: set MPCL_MODEL_DIR)");
    return 0;
}

/* Rows: true class ("3 Dress"), columns: predicted class (by index). */
void print_confusion(const uint64_t *conf, const char *const *names)
{
    int classes = MPCL_DATASET_CLASSES;
    uint64_t most = 0;
    int name_w = 0;
    for (int i = 0; i < classes * classes; i++)
        if (conf[i] > most)
            most = conf[i];
    for (int i = 0; i < classes; i++) {
        int l = (int)strlen(names[i] ? names[i] : "");
        if (l > name_w)
            name_w = l;
    }
    char buf[32];
    int cw = snprintf(buf, sizeof buf, "%" PRIu64, most);
    if (cw < 3)
        cw = 3;
    printf("\nConfusion matrix (rows: true class, columns: predicted class)\n");
    printf("%*s%*s ", LABEL_INDENT, "", name_w + 3, "");
    for (int c = 0; c < classes; c++)
        printf(" %*d", cw, c);
    printf("\n");
    for (int r = 0; r < classes; r++) {
        printf("%*s%d %-*s ", LABEL_INDENT, "", r, name_w + 1, names[r] ? names[r] : "");
        for (int c = 0; c < classes; c++)
            printf(" %*" PRIu64, cw, conf[r * classes + c]);
        printf("\n");
    }
}

/* ------------------------------------------------------------ data */


/* Monotonic seconds, for timing. */
double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* CLBlast prints a line on stderr when a routine fails ("CLBlast: Run-time
 * error: ..."), on top of returning the status that mpcl reports, and some
 * OpenCL compilers (PoCL's) print their diagnostics there as well as into
 * the build log, e.g. while the probe tries half arithmetic on a device
 * that does not declare it (expected to fail: the log is kept in the
 * probe's result). Around such a call the tool points its stderr at a
 * temporary file; afterwards it drops the "CLBlast:" lines (drop_all:
 * everything, unless MPCL_DRIVER_OUTPUT=1) and passes the rest on. The
 * library itself never touches the process's descriptors. */
void cli_quiet_begin(cli_quiet *q, int drop_all)
{
    const char *show = getenv("MPCL_DRIVER_OUTPUT");
    fflush(stderr);
    q->saved = -1;
    q->drop_all = drop_all;
    q->tmp = drop_all && show && strcmp(show, "1") == 0 ? NULL : tmpfile();
    if (!q->tmp)
        return;
    q->saved = dup(STDERR_FILENO);
    if (q->saved < 0 || dup2(fileno(q->tmp), STDERR_FILENO) < 0) {
        if (q->saved >= 0)
            close(q->saved);
        q->saved = -1;
        fclose(q->tmp);
        q->tmp = NULL;
    }
}

void cli_quiet_end(cli_quiet *q)
{
    if (!q->tmp)
        return;
    fflush(stderr);
    dup2(q->saved, STDERR_FILENO);
    close(q->saved);
    rewind(q->tmp);
    char line[1024];
    while (!q->drop_all && fgets(line, sizeof line, q->tmp))
        if (strncmp(line, "CLBlast:", 8) != 0)
            fputs(line, stderr);
    fclose(q->tmp);
    q->tmp = NULL;
}

mpcl_status cli_context_create(const mpcl_options *opt, mpcl_context **ctx)
{
    cli_quiet q;
    cli_quiet_begin(&q, 1);
    mpcl_status s = mpcl_context_create(opt, ctx);
    cli_quiet_end(&q);
    return s;
}

mpcl_status cli_probe(mpcl_context *ctx, const mpcl_probe_options *opt, mpcl_caps *caps)
{
    cli_quiet q;
    cli_quiet_begin(&q, 1);
    mpcl_status s = mpcl_probe(ctx, opt, caps);
    cli_quiet_end(&q);
    return s;
}

/* The context's device: the only one there is (quick), else the probe's facts. */
void cli_device_name(mpcl_context *ctx, char *dst, size_t len)
{
    mpcl_device_desc d[2];
    size_t count = 0;
    char err[256];
    if (mpcl_device_list(d, 2, &count, err, sizeof err) == MPCL_OK && count == 1) {
        snprintf(dst, len, "%s", d[0].name);
        return;
    }
    mpcl_caps *caps = calloc(1, sizeof *caps);
    snprintf(dst, len, "%s", caps && cli_probe(ctx, NULL, caps) == MPCL_OK ? caps->device : "?");
    free(caps);
}

/* Where tools/plot.py is: set by tools/meson.build (none for builds
 * without it, e.g. the fuzz targets). */
#ifndef MPCL_PLOT_INSTALL_PATH
#define MPCL_PLOT_INSTALL_PATH ""
#endif
#ifndef MPCL_PLOT_SOURCE_PATH
#define MPCL_PLOT_SOURCE_PATH ""
#endif

/* tools/plot.py: $MPCL_PLOT_SCRIPT, the installed copy, or the source
 * tree's. NULL when none is there. */
static const char *plot_script(void)
{
    const char *env = getenv("MPCL_PLOT_SCRIPT");
    if (env && *env)
        return env;
    static const char *const where[] = {MPCL_PLOT_INSTALL_PATH, MPCL_PLOT_SOURCE_PATH};
    for (size_t i = 0; i < sizeof where / sizeof where[0]; i++)
        if (*where[i] && access(where[i], R_OK) == 0)
            return where[i];
    return NULL;
}

int cli_plot(const char *kind, const char *input, const char *png)
{
    const char *script = plot_script();
    if (!script) {
        fprintf(stderr, "mpcl: --plot: tools/plot.py is not installed here (set MPCL_PLOT_SCRIPT to "
                        "its path)\n");
        return EXIT_RUNTIME;
    }
    /* $MPCL_PYTHON, else Debian's interpreter (python3-matplotlib is
     * installed for it), else python3 on the PATH */
    const char *py = getenv("MPCL_PYTHON");
    if (!py || !*py)
        py = access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        execlp(py, py, script, kind, input, "-o", png, (char *)NULL);
        fprintf(stderr, "mpcl: --plot: cannot run %s: %s; on Debian: apt-get install python3 "
                        "python3-matplotlib\n", py, strerror(errno));
        _exit(127);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) < 0) {
        fprintf(stderr, "mpcl: --plot: cannot start %s: %s\n", py, strerror(errno));
        return EXIT_RUNTIME;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return EXIT_OK;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 3)
        fprintf(stderr, "mpcl: --plot: the plot needs matplotlib: on Debian, apt-get install "
                        "python3-matplotlib (or pip install matplotlib; $MPCL_PYTHON chooses the "
                        "Python); %s was not written\n", png);
    else if (!(WIFEXITED(status) && WEXITSTATUS(status) == 127))
        fprintf(stderr, "mpcl: --plot: %s failed (status %d); %s was not written\n", script,
                WIFEXITED(status) ? WEXITSTATUS(status) : -1, png);
    return EXIT_RUNTIME;
}
