/* io/safetensors.h — the safetensors container: read with validation, write
 * atomically.
 *
 * Format (https://huggingface.co/docs/safetensors): an 8-byte little-endian
 * header length N, N bytes of a JSON object, then the data region. Each key
 * but "__metadata__" names a tensor:
 *     "0.weight": {"dtype": "F32", "shape": [10, 1, 5, 5], "data_offsets": [0, 1000]}
 * with offsets relative to the data region; "__metadata__" maps strings to
 * strings. Little-endian data, row-major.
 *
 * Host code only (no OpenCL), so it can be tested and fuzzed alone. Errors
 * go to err as one line that names the file and the tensor or byte offset.
 */
#ifndef MPCL_IO_SAFETENSORS_H
#define MPCL_IO_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "mpcl.h"

/* The dtypes of the format; mpcl computes on F32 and F16 only. */
typedef enum {
    ST_BOOL, ST_U8, ST_I8, ST_U16, ST_I16, ST_F16, ST_BF16, ST_U32, ST_I32, ST_F32,
    ST_U64, ST_I64, ST_F64, ST_F8_E4M3, ST_F8_E5M2, ST_DTYPE_COUNT
} st_dtype;

const char *st_dtype_name(st_dtype d);
size_t st_dtype_size(st_dtype d);

#define ST_MAX_NDIM 8
#define ST_MAX_NAME 128
/* The reference implementation's limit on the header. */
#define ST_MAX_HEADER (100u * 1024u * 1024u)

typedef struct {
    char name[ST_MAX_NAME];
    st_dtype dtype;
    int ndim;
    uint64_t shape[ST_MAX_NDIM];
    uint64_t numel;
    uint64_t begin, end; /* in the data region */
} st_tensor;

typedef struct {
    char path[512];
    uint8_t *bytes;      /* the whole file */
    uint64_t size;
    const uint8_t *data; /* the data region */
    uint64_t data_len;
    st_tensor *tensors;  /* in file order */
    size_t count;
    char **meta;         /* key, value, key, value, ... */
    size_t nmeta;
} st_file;

/* Reads and validates the whole file: header length against the file size,
 * JSON syntax, every entry's dtype, shape and offsets (inside the data
 * region, matching dtype x shape, not overlapping, covering the region with
 * no gap), and the metadata's string values. */
mpcl_status st_read(const char *path, st_file *out, char *err, size_t len);
/* The same on a buffer already in memory (path names it in messages); the
 * buffer is copied. */
mpcl_status st_parse(const uint8_t *buf, uint64_t size, const char *path, st_file *out, char *err,
                     size_t len);
void st_free(st_file *f);

const st_tensor *st_find(const st_file *f, const char *name);
/* NULL when the key is absent. */
const char *st_meta(const st_file *f, const char *key);
static inline const void *st_data(const st_file *f, const st_tensor *t) { return f->data + t->begin; }

/* One tensor to write. */
typedef struct {
    const char *name;
    st_dtype dtype;
    int ndim;
    const uint64_t *shape;
    const void *data; /* numel x dtype size bytes, little-endian */
} st_entry;

/* Writes the file atomically: a temporary file in the same directory,
 * fsync, rename over path, fsync of the directory. On any failure the
 * temporary file is removed, path is left as it was, and err names the path,
 * the step that failed and errno's text. meta: nmeta key/value pairs. */
mpcl_status st_write(const char *path, const st_entry *entries, size_t n, const char *const *meta,
                     size_t nmeta, char *err, size_t len);

#endif
