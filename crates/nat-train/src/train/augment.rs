//! Batch augmentation: random crop (pad 4) and horizontal flip for CIFAR-10, cutout for any
//! dataset. Randomness comes from the caller's seeded RNG so runs are reproducible.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::{Kind, TchError, Tensor};

/// Random 4-pixel-padded crop and horizontal flip of each image of an `N × C × H × W` batch.
pub(crate) fn crop_and_flip(x: &Tensor, rng: &mut ChaCha8Rng) -> Result<Tensor, TchError> {
    let (n, _, h, w) = x.size4()?;
    let padded = x.f_constant_pad_nd([4, 4, 4, 4])?;
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let (dy, dx) = (rng.gen_range(0..=8i64), rng.gen_range(0..=8i64));
        let mut img = padded
            .f_narrow(0, i, 1)?
            .f_narrow(2, dy, h)?
            .f_narrow(3, dx, w)?;
        if rng.gen_bool(0.5) {
            img = img.f_flip([3])?;
        }
        out.push(img);
    }
    Tensor::f_cat(&out, 0)
}

/// Zeroes one `length × length` square per image, centred uniformly at random (clipped at the
/// borders), as in DARTS' Cutout.
pub(crate) fn cutout(x: &Tensor, length: i64, rng: &mut ChaCha8Rng) -> Result<Tensor, TchError> {
    let (n, _, h, w) = x.size4()?;
    let mut mask = vec![1f32; (n * h * w) as usize];
    for i in 0..n {
        let (cy, cx) = (rng.gen_range(0..h), rng.gen_range(0..w));
        let (y0, y1) = ((cy - length / 2).max(0), (cy + length / 2).min(h));
        let (x0, x1) = ((cx - length / 2).max(0), (cx + length / 2).min(w));
        for y in y0..y1 {
            for xx in x0..x1 {
                mask[(i * h * w + y * w + xx) as usize] = 0.0;
            }
        }
    }
    let mask = Tensor::f_from_slice(&mask)?
        .f_view([n, 1, h, w])?
        .f_to_device(x.device())?
        .f_to_kind(Kind::Float)?;
    x.f_mul(&mask)
}
