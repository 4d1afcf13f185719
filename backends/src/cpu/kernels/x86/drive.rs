//! The tile driver and the `TileFn` entry points of the table.

macro_rules! x86_drive {
    ($feat:literal) => {
        type Rows4<W, A> = unsafe fn([&[W]; 4], &[A], &[f32], &[f32]) -> [f32; 4];

        type Tile<W, A, const R: usize> =
            unsafe fn(&[W], [&[A]; R], [&[f32]; R], [&[f32]; R]) -> [f32; R];

        /// Runs a tile kernel over `w` (weight rows of `wr` bytes back to back)
        /// and `a` (activation rows of `ar` bytes): out[i * ostride + j] = w_j · a_i.
        /// Activation rows go four at a time (their scales converted to f32 once);
        /// each group meets every weight row.
        ///
        /// # Safety
        /// The CPU has `$feat`; `out` is valid for every element written.
        #[allow(clippy::too_many_arguments)]
        #[inline(always)]
        unsafe fn drive<W: bytemuck::Pod, A: bytemuck::Pod>(
            w: &[u8],
            wr: usize,
            a: &[u8],
            ar: usize,
            out: *mut f32,
            ostride: usize,
            scales: unsafe fn(&[A], &mut [f32], &mut [f32]),
            k: (Tile<W, A, 1>, Tile<W, A, 2>, Tile<W, A, 3>, Tile<W, A, 4>),
            rows4: Option<Rows4<W, A>>,
        ) {
            let (nw, na) = (w.len() / wr, a.len() / ar);
            let nb = ar / std::mem::size_of::<A>();
            let mut stack = [0f32; 8 * 128];
            let mut heap = Vec::new();
            let sc: &mut [f32] = if 8 * nb <= stack.len() {
                &mut stack[..8 * nb]
            } else {
                heap.resize(8 * nb, 0f32);
                &mut heap
            };
            let (dsc, ssc) = sc.split_at_mut(4 * nb);
            let arow = |i: usize| -> &[A] { bytemuck::cast_slice(&a[i * ar..][..ar]) };
            let mut i0 = 0;
            while i0 < na {
                let g = (na - i0).min(4);
                for t in 0..g {
                    scales(
                        arow(i0 + t),
                        &mut dsc[t * nb..][..nb],
                        &mut ssc[t * nb..][..nb],
                    );
                }
                let (dsc, ssc) = (&*dsc, &*ssc);
                let dv = |t: usize| &dsc[t * nb..][..nb];
                let sv = |t: usize| &ssc[t * nb..][..nb];
                let wrow_at = |j: usize| -> &[W] { bytemuck::cast_slice(&w[j * wr..][..wr]) };
                let mut j0 = 0;
                if let (1, Some(r4)) = (g, rows4) {
                    while j0 + 4 <= nw {
                        let v = r4(
                            [
                                wrow_at(j0),
                                wrow_at(j0 + 1),
                                wrow_at(j0 + 2),
                                wrow_at(j0 + 3),
                            ],
                            arow(i0),
                            dv(0),
                            sv(0),
                        );
                        for (t, x) in v.iter().enumerate() {
                            *out.add(i0 * ostride + j0 + t) = *x;
                        }
                        j0 += 4;
                    }
                }
                for j in j0..nw {
                    let wrow = wrow_at(j);
                    let o = out.add(i0 * ostride + j);
                    let put = |v: &[f32]| {
                        for (t, x) in v.iter().enumerate() {
                            *o.add(t * ostride) = *x;
                        }
                    };
                    let ar4 = |t: usize| arow(i0 + t);
                    match g {
                        4 => put(&(k.3)(
                            wrow,
                            [ar4(0), ar4(1), ar4(2), ar4(3)],
                            [dv(0), dv(1), dv(2), dv(3)],
                            [sv(0), sv(1), sv(2), sv(3)],
                        )),
                        3 => put(&(k.2)(
                            wrow,
                            [ar4(0), ar4(1), ar4(2)],
                            [dv(0), dv(1), dv(2)],
                            [sv(0), sv(1), sv(2)],
                        )),
                        2 => put(&(k.1)(
                            wrow,
                            [ar4(0), ar4(1)],
                            [dv(0), dv(1)],
                            [sv(0), sv(1)],
                        )),
                        _ => put(&(k.0)(wrow, [ar4(0)], [dv(0)], [sv(0)])),
                    }
                }
                i0 += g;
            }
        }

        macro_rules! tile_entry {
            ($name:ident, $imp:ident, $W:ty, $A:ty, $sc:ident, $r4:expr) => {
                /// # Safety
                /// `out` is valid for out[i * ostride + j], i < rows of `a`, j < rows of `w`.
                unsafe fn $name(
                    w: &[u8],
                    wr: usize,
                    a: &[u8],
                    ar: usize,
                    out: *mut f32,
                    ostride: usize,
                ) {
                    // SAFETY: the table holding this function exists only on CPUs with
                    // $feat; the caller vouches for `out`.
                    unsafe {
                        drive::<$W, $A>(
                            w,
                            wr,
                            a,
                            ar,
                            out,
                            ostride,
                            $sc,
                            ($imp::<1>, $imp::<2>, $imp::<3>, $imp::<4>),
                            $r4,
                        )
                    }
                }
            };
        }
        tile_entry!(
            t_q8_0,
            tile_q8_0,
            BlockQ8_0,
            BlockQ8_0,
            scales_q8_0,
            Some(rows4_q8_0)
        );
        tile_entry!(
            t_q4_0,
            tile_q4_0,
            BlockQ4_0,
            BlockQ8_0,
            scales_q8_0,
            Some(rows4_q4_0)
        );
        tile_entry!(
            t_q4_1,
            tile_q4_1,
            BlockQ4_1,
            BlockQ8_1,
            scales_q8_1,
            Some(rows4_q4_1)
        );
        tile_entry!(
            t_q5_0,
            tile_q5_0,
            BlockQ5_0,
            BlockQ8_0,
            scales_q8_0,
            Some(rows4_q5_0)
        );
        tile_entry!(
            t_iq4_nl,
            tile_iq4_nl,
            BlockIQ4NL,
            BlockQ8_0,
            scales_q8_0,
            Some(rows4_iq4_nl)
        );
        tile_entry!(
            t_q5_k,
            tile_q5_k,
            BlockQ5K,
            BlockQ8K,
            scales_q8_k,
            Some(rows4_q5_k)
        );
        tile_entry!(
            t_iq4_xs,
            tile_iq4_xs,
            BlockIQ4XS,
            BlockQ8K,
            scales_q8_k,
            Some(rows4_iq4_xs)
        );
        tile_entry!(
            t_q4_k,
            tile_q4_k,
            BlockQ4K,
            BlockQ8K,
            scales_q8_k,
            Some(rows4_q4_k)
        );
        tile_entry!(
            t_q6_k,
            tile_q6_k,
            BlockQ6K,
            BlockQ8K,
            scales_q8_k,
            Some(rows4_q6_k)
        );
    };
}
