//! Pictures in the browser: a character's picture chosen on its page shows there (the API's
//! address, decoded by the browser) and as the list's thumbnail; a file that is not a picture is
//! refused with the server's reason and stores nothing (nor replaces the picture there was);
//! "Remove picture" brings the initial back; the user's own picture on the settings page; the
//! controls at phone width, in Chinese, with the 8 MB check made before sending. Waits are on
//! page state, as in `web_app`, whose helpers these tests share; screenshots go to the same
//! folder.

use std::{io::Cursor, path::PathBuf};

use fastnpc_tests::{
    harness::{TestApp, TestUser},
    webdriver::Browser,
};
use image::{DynamicImage, ImageBuffer, ImageFormat, Rgb};
use reqwest::Method;
use serde_json::{Value, json};

use crate::web_app::{assert_every_control_is_labelled, assert_fits_the_width, open, sign_in, wait_for_page};

/// A `width`×`height` picture (a gradient), encoded as `format`.
fn picture(width: u32, height: u32, format: ImageFormat) -> Vec<u8> {
    let pixels =
        ImageBuffer::from_fn(width, height, |x, y| Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 160]));
    let mut bytes = Vec::new();
    DynamicImage::ImageRgb8(pixels).write_to(&mut Cursor::new(&mut bytes), format).unwrap();
    bytes
}

/// Writes `bytes` as `name` in the browser's temporary folder (where a file dialog would pick it).
fn file(browser: &Browser, name: &str, bytes: &[u8]) -> PathBuf {
    let path = browser.temp_dir().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The character's `avatar_url` as the API names it (null: no picture).
async fn avatar_url(app: &TestApp, user: &TestUser, id: &str) -> Value {
    let shown: Value = app.get(&format!("/v1/characters/{id}"), user).await.json().await.unwrap();
    shown["character"]["avatar_url"].clone()
}

/// Waits until the `<img>` matching `css` is loaded and decoded (`naturalWidth` > 0); returns
/// its `src` as written (the address the page chose) and its natural size.
async fn shown_picture(browser: &Browser, css: &str) -> (String, u64, u64) {
    let condition = format!(
        "(() => {{ const img = document.querySelector({css:?}); return Boolean(img && img.complete && img.naturalWidth > 0); }})()"
    );
    browser.wait_until(&format!("the picture {css}, decoded"), &condition).await.unwrap();
    let script = "const img = document.querySelector(arguments[0]); return [img.getAttribute('src'), img.naturalWidth, img.naturalHeight]";
    let shown = browser.execute(script, &[json!(css)]).await.unwrap();
    (shown[0].as_str().unwrap().to_owned(), shown[1].as_u64().unwrap(), shown[2].as_u64().unwrap())
}

/// Waits until the picture block `#<prefix>` is in `state` (`picture` or `none`).
async fn wait_for_state(browser: &Browser, prefix: &str, state: &str) {
    let condition = format!("document.getElementById('{prefix}')?.dataset.state === '{state}'");
    browser.wait_until(&format!("#{prefix} in state {state}"), &condition).await.unwrap();
}

/// Whether the element matching `css` is displayed.
async fn displayed(browser: &Browser, css: &str) -> bool {
    browser.find(css).await.unwrap().is_displayed().await.unwrap()
}

#[tokio::test]
async fn a_character_picture_is_uploaded_shown_in_the_list_refused_when_not_a_picture_and_removed_and_so_is_yours() {
    let app = TestApp::spawn().await;
    let user = app.user("portraitist").await;
    let id = app.ready_character(&user, "杜甫").await;
    let browser = Browser::start().await.unwrap();
    sign_in(&browser, &app, &user).await;
    let item = format!("[data-test=\"character-item\"][data-id=\"{id}\"]");

    // No picture yet: the list and the page show the initial.
    assert_eq!(browser.text(&format!("{item} [data-test=\"character-avatar-placeholder\"]")).await.unwrap(), "杜");
    open(&browser, &app, &format!("/characters/{id}"), "character").await;
    wait_for_state(&browser, "character-avatar", "none").await;
    assert_eq!(browser.text("#character-avatar-placeholder").await.unwrap(), "杜");
    assert_eq!(
        browser.attribute("#character-avatar-placeholder", "aria-label").await.unwrap().as_deref(),
        Some("杜甫 has no picture yet")
    );
    assert_eq!(browser.text("#character-avatar-change").await.unwrap(), "Change picture");
    assert_eq!(
        browser.attribute("#character-avatar-file", "accept").await.unwrap().as_deref(),
        Some("image/png,image/jpeg,image/webp,image/gif")
    );
    assert!(!displayed(&browser, "#character-avatar-remove").await, "nothing to remove");
    assert_every_control_is_labelled(&browser, "character, no picture").await;

    // A file that is not a picture: the server's reason, and nothing stored.
    let text = file(&browser, "notes.txt", b"hello, world: not a picture");
    browser.choose_file("#character-avatar-file", &text).await.unwrap();
    let error = browser.wait_for_text("#character-error", "notes.txt").await.unwrap().text().await.unwrap();
    assert!(error.contains("the file is not a PNG, JPEG, WebP or GIF image"), "the server's detail: {error}");
    assert_eq!(avatar_url(&app, &user, &id).await, Value::Null, "a refused file stores nothing");
    assert_eq!(browser.attribute("#character-avatar", "data-state").await.unwrap().as_deref(), Some("none"));
    assert_eq!(browser.property("#character-avatar-file", "value").await.unwrap(), json!(""), "ready for another file");

    // A PNG: shown at once from the API's address, the error gone.
    let png = file(&browser, "portrait.png", &picture(300, 200, ImageFormat::Png));
    browser.choose_file("#character-avatar-file", &png).await.unwrap();
    wait_for_state(&browser, "character-avatar", "picture").await;
    let (src, width, height) = shown_picture(&browser, "#character-avatar-image").await;
    let stored = avatar_url(&app, &user, &id).await;
    assert_eq!(Some(src.as_str()), stored.as_str(), "the picture shown is the one stored");
    assert_eq!((width, height), (300, 200));
    assert_eq!(browser.attribute("#character-avatar-image", "alt").await.unwrap().as_deref(), Some("Picture of 杜甫"));
    assert!(!displayed(&browser, "#character-error").await, "the earlier refusal is cleared");
    assert_eq!(browser.text("#character-avatar-status").await.unwrap(), "Picture saved.");
    assert!(displayed(&browser, "#character-avatar-remove").await);
    assert_every_control_is_labelled(&browser, "character, with a picture").await;
    browser.screenshot("character-avatar-desktop").await.unwrap();

    // A PNG cut short is refused too, and the picture there was stays (shown and stored).
    let whole = picture(300, 300, ImageFormat::Png);
    let broken = file(&browser, "broken.png", &whole[..whole.len() / 2]);
    browser.choose_file("#character-avatar-file", &broken).await.unwrap();
    let error = browser.wait_for_text("#character-error", "broken.png").await.unwrap().text().await.unwrap();
    assert!(error.contains("could not be decoded"), "the server's detail: {error}");
    assert_eq!(avatar_url(&app, &user, &id).await, stored, "the old picture is kept");
    assert_eq!(shown_picture(&browser, "#character-avatar-image").await.0, src, "and still shown");

    // A whole JPEG replaces it: a new address (scaled to fit 512 px).
    let jpeg = file(&browser, "portrait.jpg", &picture(640, 480, ImageFormat::Jpeg));
    browser.choose_file("#character-avatar-file", &jpeg).await.unwrap();
    browser
        .wait_until(
            "the new picture",
            &format!("document.getElementById('character-avatar-image')?.getAttribute('src') !== {src:?}"),
        )
        .await
        .unwrap();
    let (src, width, height) = shown_picture(&browser, "#character-avatar-image").await;
    let stored = avatar_url(&app, &user, &id).await;
    assert_eq!(Some(src.as_str()), stored.as_str());
    assert_eq!((width, height), (512, 384));

    // The list's thumbnail: the same address, decoded; decorative beside the name.
    open(&browser, &app, "/", "characters").await;
    let thumbnail = format!("{item} img[data-test=\"character-avatar\"]");
    let (thumb, width, _) = shown_picture(&browser, &thumbnail).await;
    assert_eq!((thumb.as_str(), width), (src.as_str(), 512));
    assert_eq!(browser.attribute(&thumbnail, "alt").await.unwrap().as_deref(), Some(""));
    let size = browser
        .execute("return document.querySelector(arguments[0]).getBoundingClientRect().width", &[json!(thumbnail)])
        .await
        .unwrap();
    assert!(size.as_f64().unwrap() <= 48.0, "a small thumbnail: {size} px");

    // Remove, confirmed: the initial again, and the API has no picture.
    open(&browser, &app, &format!("/characters/{id}"), "character").await;
    shown_picture(&browser, "#character-avatar-image").await;
    browser.click("#character-avatar-remove").await.unwrap();
    browser.wait_for("#confirm-dialog").await.unwrap();
    assert_eq!(browser.text("#confirm-title").await.unwrap(), "Remove the picture?");
    browser.click("#confirm-ok").await.unwrap();
    wait_for_state(&browser, "character-avatar", "none").await;
    assert_eq!(browser.text("#character-avatar-placeholder").await.unwrap(), "杜");
    assert_eq!(browser.text("#character-avatar-status").await.unwrap(), "Picture removed.");
    assert!(!displayed(&browser, "#character-avatar-remove").await);
    assert_eq!(avatar_url(&app, &user, &id).await, Value::Null);
    assert_eq!(app.get(&format!("/v1/characters/{id}/avatar"), &user).await.status(), 404);
    open(&browser, &app, "/", "characters").await;
    assert_eq!(browser.text(&format!("{item} [data-test=\"character-avatar-placeholder\"]")).await.unwrap(), "杜");

    // Your own picture, on the settings page: none, then the uploaded one, still there after a
    // reload (the page asks the API whether there is one; no <img> of a missing picture).
    open(&browser, &app, "/settings", "settings").await;
    wait_for_state(&browser, "my-avatar", "none").await;
    assert_eq!(browser.text("#my-avatar-placeholder").await.unwrap(), "P");
    assert_every_control_is_labelled(&browser, "settings").await;
    browser.choose_file("#my-avatar-file", &png).await.unwrap();
    wait_for_state(&browser, "my-avatar", "picture").await;
    let (mine, width, _) = shown_picture(&browser, "#my-avatar-image").await;
    assert!(mine.starts_with("/v1/me/avatar?v="), "{mine}");
    assert_eq!(width, 300);
    let served = app.get("/v1/me/avatar", &user).await;
    assert_eq!(served.status(), 200, "stored for the user");
    let etag = served.headers()["etag"].to_str().unwrap().trim_matches('"').to_owned();
    assert_eq!(mine, format!("/v1/me/avatar?v={etag}"));
    browser.refresh().await.unwrap();
    wait_for_page(&browser, "settings").await;
    assert_eq!(shown_picture(&browser, "#my-avatar-image").await.0, mine, "after a reload, the same address");
    assert_eq!(browser.attribute("#my-avatar-image", "alt").await.unwrap().as_deref(), Some("Your picture"));
    browser.screenshot("settings-avatar-desktop").await.unwrap();
    browser.click("#my-avatar-remove").await.unwrap();
    browser.click("#confirm-ok").await.unwrap();
    wait_for_state(&browser, "my-avatar", "none").await;
    assert_eq!(app.get("/v1/me/avatar", &user).await.status(), 404);

    browser.assert_no_console_errors().await.unwrap();
    browser.close().await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn the_picture_controls_fit_a_phone_in_chinese_and_a_file_over_8_mb_is_refused_before_sending() {
    let app = TestApp::spawn().await;
    let user = app.user("pocketportraits").await;
    let id = app.ready_character(&user, "李白").await;
    // A picture stored through the API (the raw body, its own content type).
    let stored = app
        .request(Method::PUT, &format!("/v1/characters/{id}/avatar"), Some(&user))
        .header("content-type", "image/png")
        .body(picture(400, 400, ImageFormat::Png))
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), 200);
    let url = avatar_url(&app, &user, &id).await;
    let browser = Browser::builder().chinese().start().await.unwrap();
    browser.emulate_phone(360, 780).await.unwrap();
    sign_in(&browser, &app, &user).await;

    let thumbnail = format!("[data-test=\"character-item\"][data-id=\"{id}\"] img[data-test=\"character-avatar\"]");
    assert_eq!(Some(shown_picture(&browser, &thumbnail).await.0.as_str()), url.as_str());
    assert_fits_the_width(&browser, "the list with thumbnails").await;
    browser.screenshot("characters-avatars-phone").await.unwrap();

    open(&browser, &app, &format!("/characters/{id}"), "character").await;
    let (src, _, _) = shown_picture(&browser, "#character-avatar-image").await;
    assert_eq!(Some(src.as_str()), url.as_str());
    assert_eq!(browser.text("#character-avatar-change").await.unwrap(), "更换头像");
    assert_eq!(browser.text("#character-avatar-remove").await.unwrap(), "移除头像");
    assert_eq!(browser.attribute("#character-avatar-image", "alt").await.unwrap().as_deref(), Some("李白的头像"));
    assert_fits_the_width(&browser, "the character page with its picture").await;
    let inside = browser
        .execute(
            "return ['character-avatar-image', 'character-avatar-change', 'character-avatar-remove'].map(id => {
                const box = document.getElementById(id).getBoundingClientRect();
                return box.width > 0 && box.left >= 0 && box.right <= window.innerWidth;
            })",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(inside, json!([true, true, true]), "the picture and its controls within 360 px");
    browser.screenshot("character-avatar-phone").await.unwrap();

    // Over 8 MB: refused by the page, nothing sent, the picture kept.
    let large = file(&browser, "huge.png", &vec![0u8; 8 * 1024 * 1024 + 1]);
    browser.choose_file("#character-avatar-file", &large).await.unwrap();
    let error = browser.wait_for_text("#character-error", "huge.png").await.unwrap().text().await.unwrap();
    assert!(error.contains("8 MB"), "{error}");
    assert_eq!(
        browser.property("#character-avatar-status", "textContent").await.unwrap(),
        json!(""),
        "no upload started"
    );
    assert_eq!(avatar_url(&app, &user, &id).await, url);
    assert_eq!(shown_picture(&browser, "#character-avatar-image").await.0, src);

    browser.assert_no_console_errors().await.unwrap();
    browser.close().await.unwrap();
    app.stop().await;
}
