//! Turning an uploaded picture into a stored avatar: decoded (PNG, JPEG, WebP, or a GIF's first
//! frame), scaled down to fit [`AVATAR_SIDE`], and encoded again as PNG. The uploaded bytes are
//! never stored nor served: whatever they carried beside the pixels (metadata, trailing data,
//! a polyglot file) is gone, and what is served is always a small, well-formed PNG.
//!
//! An image's header can claim any size, so the claimed width and height are checked against
//! [`MAX_SIDE`] and [`MAX_PIXELS`] before any pixel is decoded (a few hundred bytes can claim a
//! 100,000 × 100,000 image: a decompression bomb), and the decoder runs with an allocation cap.
//! Decoding is CPU work: it runs on the blocking pool, at most [`CONCURRENT_DECODES`] at once, so
//! uploads cannot take the async threads or every core.

use std::io::Cursor;

use chrono::SubsecRound as _;
use fastnpc_shared::store::avatars::Avatar;
use image::{DynamicImage, ImageFormat, ImageReader, Limits, imageops::FilterType};
use sha2::{Digest, Sha256};

/// The longest side of a stored avatar, in pixels (a larger picture is scaled down to fit).
pub const AVATAR_SIDE: u32 = 512;
/// The longest side an uploaded picture may claim.
pub const MAX_SIDE: u32 = 10_000;
/// The most pixels an uploaded picture may claim (40 megapixels, a large phone photo).
pub const MAX_PIXELS: u64 = 40_000_000;
/// The decoder's allocation cap: an RGBA image of [`MAX_PIXELS`] with room to spare.
const MAX_DECODER_ALLOCATION: u64 = 256 << 20;
/// Pictures decoded at once, process-wide.
const CONCURRENT_DECODES: usize = 2;

static DECODES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(CONCURRENT_DECODES);

/// Why an upload is not an avatar; each names what is wrong for the client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PictureError {
    #[error("the file is not a PNG, JPEG, WebP or GIF image")]
    UnknownFormat,
    #[error("{0} images are not accepted; send PNG, JPEG, WebP or GIF")]
    UnsupportedFormat(String),
    #[error(
        "the image claims {width} × {height} pixels; at most {MAX_SIDE} a side and {MAX_PIXELS} pixels are accepted"
    )]
    TooLarge { width: u32, height: u32 },
    #[error("the image could not be decoded: {0}")]
    Undecodable(String),
}

/// An uploaded picture as the stored avatar (see the module docs). Runs on the blocking pool.
pub async fn avatar_from_upload(bytes: Vec<u8>) -> Result<Avatar, PictureError> {
    let _permit = DECODES.acquire().await.expect("the semaphore is never closed");
    tokio::task::spawn_blocking(move || avatar_from_bytes(&bytes))
        .await
        .unwrap_or_else(|error| Err(PictureError::Undecodable(format!("the decoder stopped: {error}"))))
}

/// [`avatar_from_upload`], on the calling thread.
pub fn avatar_from_bytes(bytes: &[u8]) -> Result<Avatar, PictureError> {
    let format = image::guess_format(bytes).map_err(|_| PictureError::UnknownFormat)?;
    if !matches!(format, ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP | ImageFormat::Gif) {
        return Err(PictureError::UnsupportedFormat(format!("{format:?}").to_uppercase()));
    }
    let (width, height) = ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|error| PictureError::Undecodable(error.to_string()))?;
    if width > MAX_SIDE || height > MAX_SIDE || u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(PictureError::TooLarge { width, height });
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODER_ALLOCATION);
    reader.limits(limits);
    // A GIF decodes to its first frame.
    let picture = reader.decode().map_err(|error| PictureError::Undecodable(error.to_string()))?;
    Ok(encode(picture))
}

/// Scales `picture` down to fit [`AVATAR_SIDE`] (keeping its proportions) and encodes it as PNG.
fn encode(picture: DynamicImage) -> Avatar {
    let picture = if picture.width() > AVATAR_SIDE || picture.height() > AVATAR_SIDE {
        picture.resize(AVATAR_SIDE, AVATAR_SIDE, FilterType::Lanczos3)
    } else {
        picture
    };
    // Eight bits a channel, with alpha only where the picture has it.
    let picture = if picture.color().has_alpha() {
        DynamicImage::ImageRgba8(picture.to_rgba8())
    } else {
        DynamicImage::ImageRgb8(picture.to_rgb8())
    };
    let mut png = Vec::new();
    picture.write_to(&mut Cursor::new(&mut png), ImageFormat::Png).expect("encoding PNG into memory cannot fail");
    let etag = crate::web::hex(&Sha256::digest(&png)[..12]);
    Avatar {
        etag,
        width: picture.width() as i32,
        height: picture.height() as i32,
        image: png,
        // To the microsecond both stores keep.
        updated_at: chrono::Utc::now().trunc_subsecs(6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Rgb, Rgba};

    fn encoded(picture: DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut bytes = Vec::new();
        picture.write_to(&mut Cursor::new(&mut bytes), format).unwrap();
        bytes
    }

    fn gradient(width: u32, height: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(ImageBuffer::from_fn(width, height, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 90])))
    }

    #[test]
    fn a_large_photo_is_scaled_to_fit_keeping_its_proportions() {
        let avatar = avatar_from_bytes(&encoded(gradient(1600, 800), ImageFormat::Jpeg)).unwrap();
        assert_eq!((avatar.width, avatar.height), (512, 256));
        let decoded = image::load_from_memory_with_format(&avatar.image, ImageFormat::Png).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (512, 256));
        assert!(!decoded.color().has_alpha(), "a JPEG has no alpha to keep");
    }

    #[test]
    fn a_small_picture_keeps_its_size_and_transparency() {
        let picture = DynamicImage::ImageRgba8(ImageBuffer::from_fn(40, 30, |x, _| Rgba([200, 10, 10, (x * 6) as u8])));
        let avatar = avatar_from_bytes(&encoded(picture.clone(), ImageFormat::Png)).unwrap();
        assert_eq!((avatar.width, avatar.height), (40, 30));
        let decoded = image::load_from_memory(&avatar.image).unwrap();
        assert_eq!(decoded.to_rgba8(), picture.to_rgba8(), "lossless below the size cap");
    }

    #[test]
    fn webp_and_gif_are_read() {
        for format in [ImageFormat::WebP, ImageFormat::Gif] {
            let picture = DynamicImage::ImageRgba8(gradient(64, 48).to_rgba8());
            let avatar = avatar_from_bytes(&encoded(picture, format)).unwrap();
            assert_eq!((avatar.width, avatar.height), (64, 48), "{format:?}");
        }
    }

    #[test]
    fn a_header_claiming_a_huge_image_is_refused_before_decoding() {
        // A valid PNG signature and IHDR claiming 100,000 × 100,000 pixels, and nothing else.
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend(100_000u32.to_be_bytes());
        ihdr.extend(100_000u32.to_be_bytes());
        ihdr.extend([8, 2, 0, 0, 0]);
        // Then a few bytes of pixel data: the reader needs the first IDAT to report a size.
        for (length, chunk) in [(13u32, ihdr), (8, [b"IDAT".as_slice(), &[0x78, 0x9c, 3, 0, 0, 0, 0, 1]].concat())] {
            png.extend(length.to_be_bytes());
            png.extend(&chunk);
            png.extend(crc32fast::hash(&chunk).to_be_bytes());
        }
        assert_eq!(avatar_from_bytes(&png), Err(PictureError::TooLarge { width: 100_000, height: 100_000 }));
    }

    #[test]
    fn what_is_not_an_accepted_image_is_named() {
        assert_eq!(avatar_from_bytes(b"hello, world"), Err(PictureError::UnknownFormat));
        let bmp = [b"BM".as_slice(), &[0; 60]].concat();
        assert_eq!(avatar_from_bytes(&bmp), Err(PictureError::UnsupportedFormat("BMP".into())));
        let mut truncated = encoded(gradient(300, 300), ImageFormat::Png);
        truncated.truncate(truncated.len() / 2);
        assert!(matches!(avatar_from_bytes(&truncated), Err(PictureError::Undecodable(_))));
    }

    #[test]
    fn the_same_picture_has_the_same_etag() {
        let bytes = encoded(gradient(50, 50), ImageFormat::Png);
        assert_eq!(avatar_from_bytes(&bytes).unwrap().etag, avatar_from_bytes(&bytes).unwrap().etag);
        let other = encoded(gradient(51, 50), ImageFormat::Png);
        assert_ne!(avatar_from_bytes(&bytes).unwrap().etag, avatar_from_bytes(&other).unwrap().etag);
    }
}
