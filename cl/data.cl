/* cl/data.cl — input pipeline: raw bytes to normalised activations on the
 * device, so a batch crosses the bus as bytes (4x less than float).
 * Dimension letters: N elements. */

/* y = (x / 255 - mean) / std, stored in the storage dtype. */
kernel void normalize_u8(global const uchar *x, /* (N) */
                         global store_t *y,     /* (N) */
                         uint n, uint plane, uint channels, /* y: (B, channels, plane) */
                         float4 mean, float4 inv_std)       /* per channel, up to 4 */
{
    uint i = get_global_id(0);
    if (i >= n)
        return;
    uint c = channels > 1 ? (i / plane) % channels : 0;
    float m = c == 0 ? mean.x : c == 1 ? mean.y : c == 2 ? mean.z : mean.w;
    float r = c == 0 ? inv_std.x : c == 1 ? inv_std.y : c == 2 ? inv_std.z : inv_std.w;
    STOREF(y, i, ((float)x[i] * (1.0f / 255.0f) - m) * r);
}

/* u8 labels to i32 (what the loss takes). */
kernel void labels_u8_to_i32(global const uchar *x, global int *y, uint n)
{
    uint i = get_global_id(0);
    if (i < n)
        y[i] = (int)x[i];
}
