//! Avatars: a picture is stored re-encoded and bounded, served with caching headers, travels in
//! PNG cards, belongs to its owner, and what is not an acceptable picture is refused whole.

use std::io::Cursor;

use fastnpc_tests::harness::{TestApp, TestUser};
use image::{DynamicImage, ImageBuffer, ImageFormat, Rgb, Rgba};
use reqwest::{Method, Response};
use serde_json::Value;

fn picture(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(ImageBuffer::from_fn(width, height, |x, y| Rgb([(x % 251) as u8, (y % 241) as u8, 120])))
}

fn encoded(picture: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    picture.write_to(&mut Cursor::new(&mut bytes), format).unwrap();
    bytes
}

async fn put(app: &TestApp, user: &TestUser, path: &str, content_type: &str, body: Vec<u8>) -> Response {
    app.request(Method::PUT, path, Some(user)).header("content-type", content_type).body(body).send().await.unwrap()
}

async fn problem(response: Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_picture_is_stored_re_encoded_served_with_caching_headers_and_travels_in_png_cards() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let eve = app.user("eve").await;
    let id = app.ready_character(&ada, "诸葛亮").await;
    let path = format!("/v1/characters/{id}/avatar");
    assert_eq!(app.get(&path, &ada).await.status(), 404, "no picture yet");

    let jpeg = encoded(&picture(1200, 900), ImageFormat::Jpeg);
    let stored = put(&app, &ada, &path, "image/jpeg", jpeg.clone()).await;
    assert_eq!(stored.status(), 200);
    let etag = stored.headers()["etag"].to_str().unwrap().to_owned();
    let stored: Value = stored.json().await.unwrap();
    assert_eq!((stored["width"].as_i64(), stored["height"].as_i64()), (Some(512), Some(384)), "scaled to fit 512");
    assert_eq!(stored["url"], path);

    // The character names its picture's address, which changes with the picture.
    let viewed: Value = app.get(&format!("/v1/characters/{id}"), &ada).await.json().await.unwrap();
    let avatar_url = viewed["character"]["avatar_url"].as_str().unwrap().to_owned();
    assert_eq!(avatar_url, format!("{path}?v={}", etag.trim_matches('"')));
    let listed: Value = app.get("/v1/characters", &ada).await.json().await.unwrap();
    assert_eq!(listed["items"][0]["avatar_url"], avatar_url.as_str());
    // A copy has the same picture.
    let copy = app.post_json(&format!("/v1/characters/{id}/copy"), &ada, &serde_json::json!({})).await;
    assert_eq!(copy.status(), 201);
    let copy: Value = copy.json().await.unwrap();
    let copy_url = copy["character"]["avatar_url"].as_str().unwrap();
    assert!(copy_url.ends_with(&format!("/avatar?v={}", etag.trim_matches('"'))), "{copy_url}");

    let served = app.get(&avatar_url, &ada).await;
    assert_eq!(served.status(), 200);
    assert_eq!(served.headers()["content-type"], "image/png");
    assert_eq!(served.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(served.headers()["cache-control"], "private, no-cache");
    assert!(served.headers().contains_key("last-modified"));
    let bytes = served.bytes().await.unwrap();
    assert_ne!(bytes.as_ref(), jpeg.as_slice(), "the upload is never served as sent");
    let decoded = image::load_from_memory_with_format(&bytes, ImageFormat::Png).expect("a PNG");
    assert_eq!((decoded.width(), decoded.height()), (512, 384));

    let revalidated = app.request(Method::GET, &path, Some(&ada)).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(revalidated.status(), 304);
    assert!(revalidated.bytes().await.unwrap().is_empty());
    let other = app.request(Method::GET, &path, Some(&ada)).header("if-none-match", "\"stale\"").send().await.unwrap();
    assert_eq!(other.status(), 200);

    // Another user sees no picture and cannot set one.
    assert_eq!(app.get(&path, &eve).await.status(), 404);
    let theirs = put(&app, &eve, &path, "image/png", encoded(&picture(10, 10), ImageFormat::Png)).await;
    assert_eq!(theirs.status(), 404);
    assert_eq!(app.get(&path, &ada).await.headers()["etag"].to_str().unwrap(), etag, "unchanged");

    // A PNG card is the picture with the card inside, and importing it brings the picture along.
    let card = app.get(&format!("/v1/characters/{id}/card?format=png&spec=v3"), &ada).await;
    assert_eq!(card.status(), 200);
    let card = card.bytes().await.unwrap().to_vec();
    let card_picture = image::load_from_memory_with_format(&card, ImageFormat::Png).unwrap();
    assert_eq!(card_picture.to_rgb8(), decoded.to_rgb8(), "the card's image is the avatar");
    let imported = app
        .request(Method::POST, "/v1/characters/import", Some(&ada))
        .header("content-type", "image/png")
        .body(card)
        .send()
        .await
        .unwrap();
    assert_eq!(imported.status(), 201);
    let imported: Value = imported.json().await.unwrap();
    let copy_path = format!("/v1/characters/{}/avatar", imported["character"]["id"].as_str().unwrap());
    let copy = app.get(&copy_path, &ada).await;
    assert_eq!(copy.status(), 200);
    let copy = image::load_from_memory(&copy.bytes().await.unwrap()).unwrap();
    assert_eq!(copy.to_rgb8(), decoded.to_rgb8(), "the imported character has the card's picture");

    let deleted = app.request(Method::DELETE, &path, Some(&ada)).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(app.get(&path, &ada).await.status(), 404);
    let viewed: Value = app.get(&format!("/v1/characters/{id}"), &ada).await.json().await.unwrap();
    assert!(viewed["character"]["avatar_url"].is_null());
    assert_eq!(app.request(Method::DELETE, &path, Some(&ada)).send().await.unwrap().status(), 404);
    // Without a picture the card's image is a placeholder again.
    let card = app.get(&format!("/v1/characters/{id}/card?format=png"), &ada).await.bytes().await.unwrap();
    let placeholder = image::load_from_memory(&card).unwrap();
    assert_ne!((placeholder.width(), placeholder.height()), (512, 384));
    app.stop().await;
}

#[tokio::test]
async fn a_user_picture_comes_from_a_form_and_a_gif_gives_its_first_frame() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let red = Rgba([220, 20, 20, 255]);
    let blue = Rgba([20, 20, 220, 255]);
    let mut gif = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new(&mut gif);
        for colour in [red, blue] {
            let frame = image::Frame::new(ImageBuffer::from_pixel(32, 32, colour));
            encoder.encode_frame(frame).unwrap();
        }
    }
    let (content_type, body) = super::cards::form(&gif, "me.gif");
    let stored = put(&app, &ada, "/v1/me/avatar", &content_type, body).await;
    assert_eq!(stored.status(), 200, "{}", stored.text().await.unwrap());
    let served = app.get("/v1/me/avatar", &ada).await;
    assert_eq!(served.status(), 200);
    let served = image::load_from_memory(&served.bytes().await.unwrap()).unwrap().to_rgba8();
    assert_eq!((served.width(), served.height()), (32, 32));
    assert_eq!(served.get_pixel(16, 16), &red, "the first frame");

    let webp = encoded(&DynamicImage::ImageRgba8(picture(80, 60).to_rgba8()), ImageFormat::WebP);
    assert_eq!(put(&app, &ada, "/v1/me/avatar", "image/webp", webp).await.status(), 200);
    let served = image::load_from_memory(&app.get("/v1/me/avatar", &ada).await.bytes().await.unwrap()).unwrap();
    assert_eq!((served.width(), served.height()), (80, 60), "replaced");
    assert_eq!(app.request(Method::DELETE, "/v1/me/avatar", Some(&ada)).send().await.unwrap().status(), 204);
    assert_eq!(app.get("/v1/me/avatar", &ada).await.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn what_is_not_an_acceptable_picture_is_refused_naming_why_and_nothing_is_stored() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let id = app.ready_character(&ada, "李白").await;
    let path = format!("/v1/characters/{id}/avatar");

    // A PNG header claiming 100,000 × 100,000 pixels: a decompression bomb, refused unread.
    let mut bomb = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(100_000u32.to_be_bytes());
    ihdr.extend(100_000u32.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    // An IHDR claiming 100,000 × 100,000 pixels, then a few bytes of pixel data.
    for (length, chunk) in [(13u32, ihdr), (8, [b"IDAT".as_slice(), &[0x78, 0x9c, 3, 0, 0, 0, 0, 1]].concat())] {
        bomb.extend(length.to_be_bytes());
        bomb.extend(&chunk);
        bomb.extend(crc32fast::hash(&chunk).to_be_bytes());
    }
    let mut truncated = encoded(&picture(300, 300), ImageFormat::Png);
    truncated.truncate(truncated.len() / 2);
    let bmp = [b"BM".as_slice(), &[0; 60]].concat();
    for (body, expected) in [
        (b"just some text".to_vec(), "not a PNG, JPEG, WebP or GIF"),
        (bomb, "100000 × 100000"),
        (truncated, "could not be decoded"),
        (bmp, "BMP"),
    ] {
        let refused = problem(put(&app, &ada, &path, "image/png", body).await, 422).await;
        assert_eq!(refused["type"], "/problems/invalid-image");
        assert!(refused["detail"].as_str().unwrap().contains(expected), "{refused}");
    }
    let huge = vec![0u8; 9 << 20];
    let refused = problem(put(&app, &ada, &path, "image/png", huge).await, 413).await;
    assert!(refused["detail"].as_str().unwrap().contains("8388608"), "{refused}");

    assert_eq!(app.db.count("select count(*) from character_avatars").await, 0, "nothing was stored");
    assert_eq!(app.get(&path, &ada).await.status(), 404);
    // A character that does not exist gets a 404 before its upload is decoded.
    let missing =
        put(&app, &ada, "/v1/characters/0190b0b0-0000-7000-8000-000000000000/avatar", "image/png", vec![1]).await;
    assert_eq!(missing.status(), 404);
    app.stop().await;
}
