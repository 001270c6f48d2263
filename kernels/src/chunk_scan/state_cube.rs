//! Each chunk's state contribution as one CubeCL launch: a cube per chunk and head forms the
//! `[p, n]` product over the chunk's positions, `TS` positions at a time staged in shared memory
//! (the decay `exp(g_last - g_s)` applied as `x` is staged); unit `(tx, ty)` keeps rows `ty + 16a`
//! and columns `tx + 16c` of the product in registers.

use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::tensor::FloatTensor;
use burn::backend::TensorMetadata;
use burn::tensor::Shape;
use burn_cubecl::cubecl;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::CubeBackend;
use cubecl::prelude::*;

use super::state::ChunkStateOps;

/// Units per cube along each side.
const SIDE: usize = 16;
/// Positions staged at a time.
const TS: usize = 32;

/// Whether the kernel takes these widths: 16 columns of units, at most 8 x 8 outputs a unit.
pub(crate) fn supports_states(p: usize, n: usize) -> bool {
    p > 0 && n > 0 && p.is_multiple_of(SIDE) && n.is_multiple_of(SIDE) && p <= 8 * SIDE && n <= 8 * SIDE
}

impl ChunkStateOps for CubeBackend {
    fn chunk_states(x: FloatTensor<Self>, b: FloatTensor<Self>, g: FloatTensor<Self>, chunk: u32) -> FloatTensor<Self> {
        let [bs, l, h, p] = x.shape().dims::<4>();
        let n = b.shape().dims::<4>()[3];
        let chunk = chunk as usize;
        let (client, device, dtype) = (x.client.clone(), x.device.clone(), x.dtype);
        assert!(supports_states(p, n), "chunk_states: no kernel for widths {p} and {n}");
        assert!(b.dtype == dtype && g.dtype == dtype, "chunk_states: x, b and g in one dtype");
        let [x, b, g] = [x, b, g].map(into_contiguous);
        let out = empty_device_contiguous_dtype(client.clone(), device, Shape::new([bs, l / chunk, h, p, n]), dtype);
        if bs * l * h == 0 {
            return out; // CUDA refuses an empty grid
        }
        // SAFETY: `x [bs, l, h, p]`, `b [bs, l, h, n]`, `g [bs, l, h]` and `out [bs, l / chunk,
        // h, p, n]` contiguous, `l` whole chunks; cube `(c, bh)` reads chunk `c` of head `bh`,
        // positions guarded against the chunk's end, and writes that chunk's state.
        unsafe {
            chunk_states_kernel::launch_unchecked(
                &client,
                CubeCount::Static((l / chunk) as u32, (bs * h) as u32, 1),
                CubeDim::new_2d(SIDE as u32, SIDE as u32),
                x.into_tensor_arg(),
                b.into_tensor_arg(),
                g.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                l,
                chunk,
                h,
                p,
                n,
                dtype_to_storage_type(dtype),
            );
        }
        out
    }
}

/// Shared memory: `xs[s·p + i]` (decayed), `bs[s·n + j]`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn chunk_states_kernel<F: Float>(
    x: &Tensor<F>,
    b: &Tensor<F>,
    g: &Tensor<F>,
    out: &mut Tensor<F>,
    seq: usize,
    chunk: usize,
    heads: usize,
    #[comptime] p: usize,
    #[comptime] n: usize,
    #[define(F)] _dtype: ElemType,
) {
    let tx = UNIT_POS_X as usize;
    let ty = UNIT_POS_Y as usize;
    let unit = ty * SIDE + tx;
    let ci = CUBE_POS_X as usize;
    let bh = CUBE_POS_Y as usize;
    let base = (bh / heads) * seq * heads + bh % heads;
    let c0 = ci * chunk;
    let c1 = c0 + chunk;
    let g_last = f32::cast_from(g[base + (c1 - 1) * heads]);
    let rows = comptime!(p / SIDE);
    let cols = comptime!(n / SIDE);
    let mut acc = Array::<f32>::new(comptime!(rows * cols));
    #[unroll]
    for e in 0..comptime!(rows * cols) {
        acc[e] = 0.0;
    }
    let mut xs = Shared::<[f32]>::new_slice(comptime!(TS * p));
    let mut bsh = Shared::<[f32]>::new_slice(comptime!(TS * n));
    let mut a = Array::<f32>::new(rows);
    for tile in 0..chunk.div_ceil(TS) {
        let s0 = c0 + tile * TS;
        #[unroll]
        for e in 0..comptime!(TS * p / (SIDE * SIDE)) {
            let at = e * SIDE * SIDE + unit;
            let s = s0 + at / p;
            let mut v = 0.0f32.runtime();
            if s < c1 {
                let row = base + s * heads;
                v = f32::cast_from(x[row * p + at % p]) * (g_last - f32::cast_from(g[row])).exp();
            }
            xs[at] = v;
        }
        #[unroll]
        for e in 0..comptime!(TS * n / (SIDE * SIDE)) {
            let at = e * SIDE * SIDE + unit;
            let s = s0 + at / n;
            let mut v = 0.0f32.runtime();
            if s < c1 {
                v = f32::cast_from(b[(base + s * heads) * n + at % n]);
            }
            bsh[at] = v;
        }
        sync_cube();
        #[unroll]
        for s in 0..TS {
            #[unroll]
            for r in 0..rows {
                a[r] = xs[s * p + ty + r * SIDE];
            }
            #[unroll]
            for c in 0..cols {
                let bv = bsh[s * n + tx + c * SIDE];
                #[unroll]
                for r in 0..rows {
                    acc[r * cols + c] += a[r] * bv;
                }
            }
        }
        sync_cube();
    }
    let at = (ci * heads + bh % heads + (bh / heads) * (seq / chunk) * heads) * p * n;
    #[unroll]
    for r in 0..rows {
        #[unroll]
        for c in 0..cols {
            out[at + (ty + r * SIDE) * n + tx + c * SIDE] = F::cast_from(acc[r * cols + c]);
        }
    }
}
