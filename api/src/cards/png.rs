//! The parts of PNG a character card needs: walking the chunks, reading the text chunks (`tEXt`,
//! and `zTXt` inflated under a cap), writing `tEXt` chunks into an image, and a one-colour
//! placeholder image. No pixel data is decoded here.
//!
//! Every length is checked before it is used, every chunk's CRC is verified, and a `zTXt` is
//! inflated only up to [`MAX_TEXT_BYTES`]: a truncated file, a corrupted chunk or a compression
//! bomb is an error, never a panic or an allocation the file's size does not justify.

use std::io::Read as _;

pub const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
/// The most text one chunk may hold once inflated (a card with a large lorebook is a few MB).
pub const MAX_TEXT_BYTES: usize = 16 << 20;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PngError {
    #[error("not a PNG image: the file does not start with the PNG signature")]
    NotPng,
    #[error("the PNG is truncated: a {0} chunk runs past the end of the file")]
    Truncated(String),
    #[error("the PNG is corrupted: its {0} chunk fails its CRC check")]
    BadCrc(String),
    #[error("the PNG ends without an IEND chunk")]
    NoEnd,
    #[error("a {0} text chunk has no keyword terminator")]
    NoKeyword(&'static str),
    #[error("a zTXt chunk uses an unknown compression method {0}")]
    UnknownCompression(u8),
    #[error("a zTXt chunk cannot be inflated: {0}")]
    BadCompression(String),
    #[error("a text chunk holds more than {} MB once inflated", MAX_TEXT_BYTES >> 20)]
    TooLarge,
}

/// One chunk: its four-letter type and data.
struct Chunk<'a> {
    kind: [u8; 4],
    data: &'a [u8],
    /// The whole chunk in the file (length, type, data, CRC).
    raw: &'a [u8],
}

fn kind_name(kind: [u8; 4]) -> String {
    String::from_utf8_lossy(&kind).into_owned()
}

/// The chunks of `bytes`, up to and including IEND, each CRC-checked.
fn chunks(bytes: &[u8]) -> Result<Vec<Chunk<'_>>, PngError> {
    let mut rest = bytes.strip_prefix(&SIGNATURE).ok_or(PngError::NotPng)?;
    let mut chunks = Vec::new();
    loop {
        if rest.len() < 8 {
            return Err(if rest.is_empty() { PngError::NoEnd } else { PngError::Truncated("final".into()) });
        }
        let length = u32::from_be_bytes(rest[..4].try_into().expect("four bytes")) as usize;
        let kind: [u8; 4] = rest[4..8].try_into().expect("four bytes");
        let total = length.checked_add(12).filter(|&total| total <= rest.len());
        let Some(total) = total else { return Err(PngError::Truncated(kind_name(kind))) };
        let (raw, after) = rest.split_at(total);
        let data = &raw[8..8 + length];
        let stored_crc = u32::from_be_bytes(raw[8 + length..].try_into().expect("four bytes"));
        let mut crc = crc32fast::Hasher::new();
        crc.update(&kind);
        crc.update(data);
        if crc.finalize() != stored_crc {
            return Err(PngError::BadCrc(kind_name(kind)));
        }
        chunks.push(Chunk { kind, data, raw });
        if &kind == b"IEND" {
            return Ok(chunks);
        }
        rest = after;
    }
}

/// A text chunk's keyword and its text (a `zTXt`'s inflated).
#[derive(Debug, PartialEq, Eq)]
pub struct TextChunk {
    pub keyword: String,
    pub text: Vec<u8>,
}

/// The `tEXt` and `zTXt` chunks of a PNG, in file order.
pub fn text_chunks(bytes: &[u8]) -> Result<Vec<TextChunk>, PngError> {
    let mut texts = Vec::new();
    for chunk in chunks(bytes)? {
        let compressed = match &chunk.kind {
            b"tEXt" => false,
            b"zTXt" => true,
            _ => continue,
        };
        let name = if compressed { "zTXt" } else { "tEXt" };
        let at = chunk.data.iter().position(|&b| b == 0).ok_or(PngError::NoKeyword(name))?;
        let keyword = String::from_utf8_lossy(&chunk.data[..at]).into_owned();
        let body = &chunk.data[at + 1..];
        let text = if compressed {
            let (&method, deflated) = body.split_first().ok_or(PngError::BadCompression("no data".into()))?;
            if method != 0 {
                return Err(PngError::UnknownCompression(method));
            }
            inflate(deflated)?
        } else {
            if body.len() > MAX_TEXT_BYTES {
                return Err(PngError::TooLarge);
            }
            body.to_vec()
        };
        texts.push(TextChunk { keyword, text });
    }
    Ok(texts)
}

fn inflate(deflated: &[u8]) -> Result<Vec<u8>, PngError> {
    let mut text = Vec::new();
    // One byte past the cap tells "exactly at the cap" from "over it".
    flate2::read::ZlibDecoder::new(deflated)
        .take(MAX_TEXT_BYTES as u64 + 1)
        .read_to_end(&mut text)
        .map_err(|error| PngError::BadCompression(error.to_string()))?;
    if text.len() > MAX_TEXT_BYTES {
        return Err(PngError::TooLarge);
    }
    Ok(text)
}

fn write_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&u32::try_from(data.len()).expect("a chunk under 4 GB").to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
}

/// `png` with a `tEXt` chunk per `(keyword, text)` before its IEND; text chunks of those keywords
/// already in it are dropped (a card is replaced, not doubled).
pub fn with_text_chunks(png: &[u8], texts: &[(&str, &str)]) -> Result<Vec<u8>, PngError> {
    let chunks = chunks(png)?;
    let mut out = Vec::with_capacity(png.len() + texts.iter().map(|(k, t)| k.len() + t.len() + 13).sum::<usize>());
    out.extend_from_slice(&SIGNATURE);
    for chunk in &chunks {
        if &chunk.kind == b"IEND" {
            for (keyword, text) in texts {
                let mut data = Vec::with_capacity(keyword.len() + 1 + text.len());
                data.extend_from_slice(keyword.as_bytes());
                data.push(0);
                data.extend_from_slice(text.as_bytes());
                write_chunk(&mut out, b"tEXt", &data);
            }
        } else if matches!(&chunk.kind, b"tEXt" | b"zTXt" | b"iTXt") {
            let keyword = chunk.data.split(|&b| b == 0).next().unwrap_or_default();
            if texts.iter().any(|(k, _)| k.as_bytes() == keyword) {
                continue;
            }
        }
        out.extend_from_slice(chunk.raw);
    }
    Ok(out)
}

/// A `size`×`size` PNG in one colour: the image of a card whose character has no avatar.
pub fn placeholder(size: u32, rgb: [u8; 3]) -> Vec<u8> {
    let mut header = Vec::with_capacity(13);
    header.extend_from_slice(&size.to_be_bytes());
    header.extend_from_slice(&size.to_be_bytes());
    // 8-bit RGB, deflate, adaptive filtering, no interlace.
    header.extend_from_slice(&[8, 2, 0, 0, 0]);
    let row: Vec<u8> = std::iter::once(0).chain(rgb.iter().copied().cycle().take(size as usize * 3)).collect();
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    for _ in 0..size {
        std::io::Write::write_all(&mut encoder, &row).expect("writing to memory");
    }
    let pixels = encoder.finish().expect("writing to memory");
    let mut out = SIGNATURE.to_vec();
    write_chunk(&mut out, b"IHDR", &header);
    write_chunk(&mut out, b"IDAT", &pixels);
    write_chunk(&mut out, b"IEND", &[]);
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn text_chunks_written_are_read_back_and_replace_their_keyword() {
        let image = placeholder(4, [200, 30, 30]);
        assert_eq!(text_chunks(&image).unwrap(), []);
        let once = with_text_chunks(&image, &[("chara", "one"), ("ccv3", "three")]).unwrap();
        let twice = with_text_chunks(&once, &[("chara", "two")]).unwrap();
        let read = text_chunks(&twice).unwrap();
        assert_eq!(
            read,
            [
                TextChunk { keyword: "ccv3".into(), text: b"three".to_vec() },
                TextChunk { keyword: "chara".into(), text: b"two".to_vec() },
            ]
        );
    }

    fn ztxt(keyword: &str, inflated: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut encoder, inflated).unwrap();
        let mut data = keyword.as_bytes().to_vec();
        data.extend_from_slice(&[0, 0]);
        data.extend_from_slice(&encoder.finish().unwrap());
        let image = placeholder(2, [0, 0, 0]);
        let (head, iend) = image.split_at(image.len() - 12);
        let mut out = head.to_vec();
        write_chunk(&mut out, b"zTXt", &data);
        out.extend_from_slice(iend);
        out
    }

    #[test]
    fn ztxt_is_inflated_but_not_past_the_cap() {
        let read = text_chunks(&ztxt("chara", b"hello")).unwrap();
        assert_eq!(read, [TextChunk { keyword: "chara".into(), text: b"hello".to_vec() }]);
        // 17 MB of zeros deflates to about 17 KB: a bomb, refused without inflating it all.
        let bomb = ztxt("chara", &vec![0; MAX_TEXT_BYTES + 1024]);
        assert!(bomb.len() < 100_000);
        assert_eq!(text_chunks(&bomb), Err(PngError::TooLarge));
    }

    #[test]
    fn damaged_files_are_refused_with_a_reason() {
        let image = with_text_chunks(&placeholder(2, [1, 2, 3]), &[("chara", "abc")]).unwrap();
        assert_eq!(text_chunks(b"\xff\xd8\xff\xe0JFIF"), Err(PngError::NotPng));
        assert!(matches!(text_chunks(&image[..image.len() - 20]), Err(PngError::Truncated(_))));
        assert_eq!(text_chunks(&image[..image.len() - 12]), Err(PngError::NoEnd));
        let mut corrupted = image.clone();
        let at = corrupted.windows(5).position(|w| w == b"chara").unwrap();
        corrupted[at] = b'C';
        assert_eq!(text_chunks(&corrupted), Err(PngError::BadCrc("tEXt".into())));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_reader(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = text_chunks(&bytes);
            let mut png = SIGNATURE.to_vec();
            png.extend_from_slice(&bytes);
            let _ = text_chunks(&png);
            let _ = with_text_chunks(&png, &[("chara", "x")]);
        }

        #[test]
        fn a_valid_image_with_a_flipped_byte_never_panics_the_reader(at in 8usize..200, value in any::<u8>()) {
            let mut image = with_text_chunks(&placeholder(3, [9, 9, 9]), &[("chara", "eyJhIjoxfQ==")]).unwrap();
            let at = at % image.len();
            image[at] = value;
            let _ = text_chunks(&image);
        }
    }
}
