/* cl/data.cl — input pipeline: raw bytes to normalised activations on the
 * device, so a batch crosses the bus as bytes (4x less than float).
 * Dimension letters: N elements. */

/* y = (x / 255 - mean) / std, stored in the storage dtype. */
kernel void normalize_u8(global const uchar *x, /* (N) */
                         global store_t *y,     /* (N) */
                         uint n, float mean, float inv_std)
{
    uint i = get_global_id(0);
    if (i < n)
        STOREF(y, i, ((float)x[i] * (1.0f / 255.0f) - mean) * inv_std);
}

/* u8 labels to i32 (what the loss takes). */
kernel void labels_u8_to_i32(global const uchar *x, global int *y, uint n)
{
    uint i = get_global_id(0);
    if (i < n)
        y[i] = (int)x[i];
}
