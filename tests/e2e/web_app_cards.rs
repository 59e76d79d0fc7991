//! Character Cards in the browser: a real card file chosen in the list's "Import card" input
//! opens as its new character; a broken file says why and creates nothing; "Export card" on the
//! character page downloads the card (read back from Chromium's download folder: a PNG that
//! imports as the same character, the JSON the API writes); a card dropped on the list; both
//! controls at desktop and phone width. Waits are on page state, as in `web_app`, whose helpers
//! these tests share; screenshots go to the same folder.

use std::path::{Path, PathBuf};

use fastnpc_tests::{
    harness::{TestApp, TestUser},
    webdriver::Browser,
};
use reqwest::Method;
use serde_json::{Value, json};

use crate::web_app::{assert_every_control_is_labelled, assert_fits_the_width, count, open, sign_in, wait_for_page};

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/cards").join(name)
}

/// The user's characters, newest first, as the API lists them.
async fn listed(app: &TestApp, user: &TestUser) -> Vec<Value> {
    let listed: Value = app.get("/v1/characters", user).await.json().await.unwrap();
    listed["items"].as_array().unwrap().clone()
}

async fn character(app: &TestApp, user: &TestUser, id: &str) -> Value {
    let shown = app.get(&format!("/v1/characters/{id}"), user).await;
    assert_eq!(shown.status(), 200, "character {id}");
    shown.json::<Value>().await.unwrap()["character"].clone()
}

/// The id in the character page's address (`/characters/<id>`).
async fn character_in_url(browser: &Browser) -> String {
    let url = browser.current_url().await.unwrap();
    url.rsplit("/characters/").next().unwrap().trim_end_matches('/').to_owned()
}

/// Opens the export menu and downloads one of its four files; returns the status line's text.
async fn export(browser: &Browser, format: &str, spec: &str) -> String {
    browser.click("#export-card-toggle").await.unwrap();
    browser.click(&format!("#export-card-{format}-{spec}")).await.unwrap();
    browser.wait_until("the export done", "!document.getElementById('export-card').open").await.unwrap();
    browser.text("#export-card-status").await.unwrap()
}

#[tokio::test]
async fn a_card_file_is_imported_a_broken_one_refused_and_a_character_exported_as_png_and_json() {
    let app = TestApp::spawn().await;
    let user = app.user("carder").await;
    let dufu = app.ready_character(&user, "杜甫").await;
    let browser = Browser::start().await.unwrap();
    sign_in(&browser, &app, &user).await;
    assert_every_control_is_labelled(&browser, "characters").await;
    assert_eq!(browser.text("#import-card").await.unwrap(), "Import card");
    let accept = browser.attribute("#import-card-file", "accept").await.unwrap().unwrap_or_default();
    assert!(accept.contains(".png") && accept.contains(".json"), "{accept}");
    browser.screenshot("characters-import-desktop").await.unwrap();

    // SillyTavern's Seraphina, chosen in the file input: her page opens.
    browser.choose_file("#import-card-file", &fixture("sillytavern-seraphina.png")).await.unwrap();
    wait_for_page(&browser, "character").await;
    assert!(browser.text("h1").await.unwrap().starts_with("Seraphina"), "{}", browser.text("h1").await.unwrap());
    let seraphina = character_in_url(&browser).await;
    let imported = character(&app, &user, &seraphina).await;
    assert_eq!((imported["name"].as_str(), imported["status"].as_str()), (Some("Seraphina"), Some("ready")));
    assert_eq!(listed(&app, &user).await.len(), 2);

    // A PNG cut in half: the server's reason, on the list; nothing created, the list unchanged.
    let whole = std::fs::read(fixture("sillytavern-seraphina.png")).unwrap();
    let broken = browser.temp_dir().join("broken-card.png");
    std::fs::write(&broken, &whole[..whole.len() / 2]).unwrap();
    open(&browser, &app, "/", "characters").await;
    browser.choose_file("#import-card-file", &broken).await.unwrap();
    let error = browser.wait_for_text("#characters-error", "broken-card.png").await.unwrap().text().await.unwrap();
    assert!(error.contains("the PNG is truncated"), "the server's detail: {error}");
    assert_eq!(browser.execute("return document.body.dataset.page", &[]).await.unwrap(), json!("characters"));
    assert_eq!(listed(&app, &user).await.len(), 2, "a refused card creates nothing");
    assert_eq!(count(&browser, "[data-test=\"character-item\"]").await, 2);
    assert_eq!(browser.property("#import-card-file", "value").await.unwrap(), json!(""), "ready for another file");

    // Export: the menu offers four files; each is the API's card, saved under the character's name.
    open(&browser, &app, &format!("/characters/{dufu}"), "character").await;
    let downloads = browser.allow_downloads().await.unwrap();
    assert!(downloads.is_dir());
    browser.click("#export-card-toggle").await.unwrap();
    browser.wait_for("#export-card-png-v3").await.unwrap();
    let offered = browser
        .execute(
            "return [...document.querySelectorAll('[data-test=\"export-card-option\"]')].map(b => `${b.dataset.format} ${b.dataset.spec}`)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(offered, json!(["png v3", "png v2", "json v3", "json v2"]));
    assert_every_control_is_labelled(&browser, "character, export menu open").await;
    browser.screenshot("character-export-desktop").await.unwrap();
    browser.press_key(fastnpc_tests::webdriver::keys::ESCAPE).await.unwrap();
    browser.wait_until("the menu closed by Escape", "!document.getElementById('export-card').open").await.unwrap();

    // PNG V3: a PNG whose card imports back as the same character.
    let status = export(&browser, "png", "v3").await;
    assert!(status.contains("杜甫.card.png"), "{status}");
    let png = browser.downloaded("杜甫.card.png").await.unwrap();
    assert!(png.starts_with(PNG_SIGNATURE), "a PNG: {:?}", &png[..png.len().min(16)]);
    let reimported = app
        .request(Method::POST, "/v1/characters/import", Some(&user))
        .header("content-type", "image/png")
        .body(png)
        .send()
        .await
        .unwrap();
    assert_eq!(reimported.status(), 201);
    let reimported: Value = reimported.json().await.unwrap();
    let original = character(&app, &user, &dufu).await;
    assert_eq!(reimported["character"]["name"], "杜甫");
    assert_eq!(reimported["character"]["profile"], original["profile"], "the profile comes back whole");
    assert_eq!(reimported["character"]["brief"], original["brief"]);

    // JSON V2: the document the API writes, byte for byte.
    export(&browser, "json", "v2").await;
    let document = browser.downloaded("杜甫.card.json").await.unwrap();
    let served = app.get(&format!("/v1/characters/{dufu}/card?format=json&spec=v2"), &user).await;
    assert_eq!(served.status(), 200);
    assert_eq!(document, served.bytes().await.unwrap().to_vec());
    let card: Value = serde_json::from_slice(&document).unwrap();
    assert_eq!((card["spec"].as_str(), card["data"]["name"].as_str()), (Some("chara_card_v2"), Some("杜甫")));
    assert_eq!(std::fs::read_dir(&downloads).unwrap().count(), 0, "each download taken once");

    browser.assert_no_console_errors().await.unwrap();
    browser.close().await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn the_card_controls_fit_a_phone_in_chinese_and_a_card_dropped_on_the_list_is_imported() {
    let app = TestApp::spawn().await;
    let user = app.user("pocketcards").await;
    let libai = app.ready_character(&user, "李白").await;
    let browser = Browser::builder().chinese().start().await.unwrap();
    browser.emulate_phone(360, 780).await.unwrap();
    sign_in(&browser, &app, &user).await;

    assert_eq!(browser.text("#import-card").await.unwrap(), "导入角色卡");
    assert!(browser.text("#import-card-hint").await.unwrap().contains("8 MB"));
    assert_fits_the_width(&browser, "the list with the import control").await;
    browser.screenshot("characters-import-phone").await.unwrap();

    // A card dropped on the page (a V3 JSON card of 李白, as a file): its copy opens.
    let card = app.get(&format!("/v1/characters/{libai}/card?format=json&spec=v3"), &user).await;
    let card = card.text().await.unwrap();
    let drop = "const [text, name] = arguments;
        const transfer = new DataTransfer();
        transfer.items.add(new File([text], name, {type: 'application/json'}));
        const page = document.getElementById('page');
        page.dispatchEvent(new DragEvent('dragenter', {bubbles: true, cancelable: true, dataTransfer: transfer}));
        const shown = page.dataset.dropping === 'true';
        page.dispatchEvent(new DragEvent('drop', {bubbles: true, cancelable: true, dataTransfer: transfer}));
        return shown;";
    let shown = browser.execute(drop, &[json!(card), json!("libai.card.json")]).await.unwrap();
    assert_eq!(shown, json!(true), "a dragged file is announced over the page");
    wait_for_page(&browser, "character").await;
    let copy = character_in_url(&browser).await;
    assert_ne!(copy, libai, "a new character");
    assert_eq!(character(&app, &user, &copy).await["name"], "李白");
    assert_eq!(browser.attribute("#page", "data-dropping").await.unwrap(), None);

    // The export menu opens within the phone's width, in Chinese.
    open(&browser, &app, &format!("/characters/{libai}"), "character").await;
    assert_eq!(browser.text("#export-card-toggle").await.unwrap().trim_end_matches(['▾', '▴']), "导出角色卡");
    browser.click("#export-card-toggle").await.unwrap();
    browser.wait_for("#export-card-json-v2").await.unwrap();
    assert_eq!(browser.text("#export-card-png-v3").await.unwrap(), "PNG 图片，V3");
    assert_fits_the_width(&browser, "the character page with the export menu open").await;
    browser.screenshot("character-export-phone").await.unwrap();

    browser.assert_no_console_errors().await.unwrap();
    browser.close().await.unwrap();
    app.stop().await;
}
