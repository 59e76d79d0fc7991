//! Character Cards: a character out as a V2/V3 card (JSON or PNG) and back in unchanged; a real
//! card from another app imported and exported with what FastNPC does not model; malformed
//! files refused whole.

use std::io::Write as _;

use fastnpc_api::cards::png;
use fastnpc_tests::harness::{TestApp, TestUser};
use reqwest::{Method, Response};
use serde_json::{Value, json};

const SERAPHINA: &[u8] = include_bytes!("../fixtures/cards/sillytavern-seraphina.png");

async fn import(app: &TestApp, user: &TestUser, content_type: &str, body: Vec<u8>) -> Response {
    app.request(Method::POST, "/v1/characters/import", Some(user))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// The file as the one part of a `multipart/form-data` form, as a browser sends it.
pub(crate) fn form(file: &[u8], file_name: &str) -> (String, Vec<u8>) {
    let boundary = "fastnpc-test-boundary-7d1c";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn export(app: &TestApp, user: &TestUser, id: &str, query: &str) -> Response {
    let response = app.get(&format!("/v1/characters/{id}/card?{query}"), user).await;
    assert_eq!(response.status(), 200, "export {query}");
    response
}

async fn character(app: &TestApp, user: &TestUser, id: &str) -> Value {
    app.get(&format!("/v1/characters/{id}"), user).await.json::<Value>().await.unwrap()["character"].clone()
}

#[tokio::test]
async fn a_character_goes_out_as_a_card_and_comes_back_the_same_in_every_form() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let id = app.ready_character(&ada, "诸葛亮").await;
    let edit = json!({"profile": {"personality": {"traits": "谨慎（已编辑）"}}});
    let edited =
        app.request(Method::PATCH, &format!("/v1/characters/{id}"), Some(&ada)).json(&edit).send().await.unwrap();
    assert_eq!(edited.status(), 200);
    let original = character(&app, &ada, &id).await;

    let json_card = export(&app, &ada, &id, "format=json&spec=v2").await;
    let disposition = json_card.headers()["content-disposition"].to_str().unwrap().to_owned();
    assert!(disposition.starts_with("attachment;") && disposition.contains(".json"), "{disposition}");
    let card: Value = json_card.json().await.unwrap();
    assert_eq!(card["spec"], "chara_card_v2");
    assert_eq!(card["data"]["name"], "诸葛亮");
    assert!(card["data"]["personality"].as_str().unwrap().contains("谨慎（已编辑）"));
    assert_eq!(card["data"]["character_version"], "2");

    let png_card = export(&app, &ada, &id, "format=png&spec=v3").await;
    assert_eq!(png_card.headers()["content-type"], "image/png");
    let image = png_card.bytes().await.unwrap().to_vec();
    let keywords: Vec<String> = png::text_chunks(&image).unwrap().into_iter().map(|chunk| chunk.keyword).collect();
    assert_eq!(keywords, ["ccv3", "chara"], "V3 with a V2 copy for older readers");

    let (form_type, form_body) = form(&image, "诸葛亮.png");
    for (how, content_type, body) in [
        ("V2 JSON as the body", "application/json".to_owned(), card.to_string().into_bytes()),
        ("V3 PNG as the body", "image/png".to_owned(), image.clone()),
        ("V3 PNG in a form", form_type, form_body),
    ] {
        let response = import(&app, &ada, &content_type, body).await;
        assert_eq!(response.status(), 201, "{how}");
        assert_eq!(response.headers()["etag"], "\"1\"");
        let imported: Value = response.json().await.unwrap();
        let copy = &imported["character"];
        assert_ne!(copy["id"], original["id"]);
        assert_eq!(copy["status"], "ready", "{how}: ready at once");
        for field in ["name", "brief", "profile", "source", "language"] {
            assert_eq!(copy[field], original[field], "{how}: {field}");
        }
        let versions: Value = app
            .get(&format!("/v1/characters/{}/versions", copy["id"].as_str().unwrap()), &ada)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(versions["items"][0]["change"], "imported");
    }
    assert_eq!(app.sim.requests().iter().filter(|r| !r.stream).count(), 10, "no LLM call beyond the generation");
    app.stop().await;
}

#[tokio::test]
async fn sillytaverns_seraphina_comes_in_ready_to_chat_and_goes_out_with_her_lorebook() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let response = import(&app, &ada, "image/png", SERAPHINA.to_vec()).await;
    assert_eq!(response.status(), 201);
    let imported: Value = response.json().await.unwrap();
    let seraphina = &imported["character"];
    let id = seraphina["id"].as_str().unwrap();
    assert_eq!(
        (&seraphina["name"], &seraphina["status"], &seraphina["language"]),
        (&json!("Seraphina"), &json!("ready"), &json!("en"))
    );
    assert!(seraphina["profile"]["basic_identity"]["identity_background"].as_str().unwrap().contains("caring"));

    let reply = app.send_message(&ada, id, "Where am I?", Some(30)).await;
    assert_eq!(reply.status(), 200, "she can be talked to at once");
    // The card's image is her picture now.
    let avatar = app.get(&format!("/v1/characters/{id}/avatar"), &ada).await;
    assert_eq!(avatar.status(), 200);
    let avatar = image::load_from_memory(&avatar.bytes().await.unwrap()).unwrap();
    let card_image = image::load_from_memory(SERAPHINA).unwrap();
    assert_eq!(avatar.width().max(avatar.height()), card_image.width().max(card_image.height()).min(512));

    let original = fastnpc_api::cards::read(SERAPHINA).unwrap();
    let card: Value = export(&app, &ada, id, "spec=v2").await.json().await.unwrap();
    for field in ["description", "first_mes", "mes_example", "character_book", "creator", "alternate_greetings"] {
        assert_eq!(card["data"][field], original.data[field], "{field} goes back out as it came");
    }
    assert_eq!(card["data"]["extensions"]["world"], "Eldoria");
    assert_eq!(card["data"]["character_book"]["entries"].as_array().unwrap().len(), 4);

    // Once edited, the prose is written from the profile; the lorebook stays.
    let edit = json!({"profile": {"personality": {"traits": "Gentle, and now edited."}}});
    let edited =
        app.request(Method::PATCH, &format!("/v1/characters/{id}"), Some(&ada)).json(&edit).send().await.unwrap();
    assert_eq!(edited.status(), 200);
    let card: Value = export(&app, &ada, id, "spec=v3").await.json().await.unwrap();
    assert_eq!(card["spec"], "chara_card_v3");
    assert!(card["data"]["personality"].as_str().unwrap().contains("Gentle, and now edited."));
    assert_eq!(card["data"]["character_book"], original.data["character_book"]);
    assert_eq!(card["data"]["group_only_greetings"], json!([]));
    app.stop().await;
}

/// A real card distributed with another open-source character-chat app (origins and licences
/// in `tests/fixtures/cards/README.md`), and what it holds.
struct RealCard {
    file: &'static [u8],
    content_type: &'static str,
    name: &'static str,
    greeting: &'static str,
    description: &'static str,
    alternate_greetings: usize,
    lorebook_entries: usize,
    picture: bool,
}

const REAL_CARDS: [RealCard; 3] = [
    RealCard {
        file: include_bytes!("../fixtures/cards/choral-default-chan.png"),
        content_type: "image/png",
        name: "Default-chan",
        greeting: "*Default-chan appears with a friendly wave, her teal hair catching the light",
        description: "Default-chan is a cheerful and enthusiastic AI assistant who serves as the welcoming face of Choral",
        alternate_greetings: 2,
        lorebook_entries: 0,
        picture: true,
    },
    RealCard {
        file: include_bytes!("../fixtures/cards/neotavern-hazel.json"),
        content_type: "application/json",
        name: "Hazel",
        greeting: "*The rain hisses off the sign above Hazel's Bench, painting the alley in cyan and violet.",
        description: "[Hazel's Personality= \"sharp\", \"wry\"",
        alternate_greetings: 0,
        lorebook_entries: 4,
        picture: false,
    },
    RealCard {
        file: include_bytes!("../fixtures/cards/aicharlib-melina.png"),
        content_type: "image/png",
        name: "Melina",
        greeting: "*Somewhere in the middle of a field, with only a couple of trees and views of the ruined towers",
        description: "[character(\"Melina\")",
        alternate_greetings: 0,
        lorebook_entries: 0,
        picture: true,
    },
];

#[tokio::test]
async fn real_cards_from_other_apps_come_in_with_their_text_and_go_out_with_what_they_carried() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    for RealCard {
        file,
        content_type,
        name,
        greeting,
        description,
        alternate_greetings: alternates,
        lorebook_entries: entries,
        picture,
    } in REAL_CARDS
    {
        let response = import(&app, &ada, content_type, file.to_vec()).await;
        assert_eq!(response.status(), 201, "{name}: {}", response.text().await.unwrap());
        let imported: Value = response.json().await.unwrap();
        let character = &imported["character"];
        let id = character["id"].as_str().unwrap();
        assert_eq!((&character["name"], &character["status"]), (&json!(name), &json!("ready")));
        let profile = &character["profile"];
        assert!(
            profile["basic_identity"]["identity_background"].as_str().unwrap().starts_with(description),
            "{name}: the description is in the profile"
        );
        assert!(
            profile["dialogue_rules"]["interaction_pattern"].as_str().unwrap().contains(greeting),
            "{name}: the greeting is in the profile"
        );
        let avatar = app.get(&format!("/v1/characters/{id}/avatar"), &ada).await.status();
        assert_eq!(avatar == 200, picture, "{name}: a PNG card's image is the picture ({avatar})");

        let card: Value = export(&app, &ada, id, "spec=v3").await.json().await.unwrap();
        let data = &card["data"];
        assert!(data["first_mes"].as_str().unwrap().starts_with(greeting), "{name}: the greeting goes back out");
        assert!(data["description"].as_str().unwrap().starts_with(description), "{name}");
        assert_eq!(data["alternate_greetings"].as_array().map_or(0, Vec::len), alternates, "{name}");
        let book = data["character_book"]["entries"].as_array().map_or(0, Vec::len);
        assert_eq!(book, entries, "{name}: the lorebook goes back out");
        assert!(data["extensions"]["fastnpc"].is_object(), "{name}: and FastNPC's own record");
    }
    let melina: Value = export(&app, &ada, &last_character(&app, &ada).await, "spec=v2").await.json().await.unwrap();
    assert_eq!(
        melina["data"]["extensions"]["pygmalion_id"], "14c38904-58f7-4038-bac7-4a18d41abe03",
        "other apps' extensions are kept"
    );
    app.stop().await;
}

/// The id of the user's newest character.
async fn last_character(app: &TestApp, user: &TestUser) -> String {
    let listed: Value = app.get("/v1/characters", user).await.json().await.unwrap();
    listed["items"][0]["id"].as_str().unwrap().to_owned()
}

/// A PNG whose one text chunk is a `zTXt` of `inflated`.
fn with_ztxt(keyword: &str, inflated: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(inflated).unwrap();
    let mut data = keyword.as_bytes().to_vec();
    data.extend_from_slice(&[0, 0]);
    data.extend_from_slice(&encoder.finish().unwrap());
    let image = png::placeholder(2, [0, 0, 0]);
    let (head, iend) = image.split_at(image.len() - 12);
    let mut out = head.to_vec();
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(b"zTXt");
    out.extend_from_slice(&data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(b"zTXt");
    crc.update(&data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
    out.extend_from_slice(iend);
    out
}

#[tokio::test]
async fn malformed_card_files_are_refused_naming_the_fault_and_create_nothing() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let image = png::placeholder(16, [10, 20, 30]);
    let card = png::with_text_chunks(&image, &[("chara", "eyJzcGVjIjoiY2hhcmFfY2FyZF92MiJ9")]).unwrap();
    // A zTXt compressing 17 MB of text into a few KB.
    let bomb = with_ztxt("chara", &vec![b'A'; 17 << 20]);
    assert!(bomb.len() < 200_000);
    let tampered = json!({"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Mallory",
        "extensions": {"fastnpc": {"profile": {"powers": {"flight": true}}, "source": {"kind": "text", "text": "x".repeat(40)}}}}});
    let cases: [(&str, Vec<u8>, u16, &str); 9] = [
        ("a truncated chunk", SERAPHINA[..SERAPHINA.len() / 2].to_vec(), 422, "truncated"),
        (
            "a chara chunk that is not base64",
            png::with_text_chunks(&image, &[("chara", "not base64 at all!")]).unwrap(),
            422,
            "not base64",
        ),
        (
            "base64 that is not JSON",
            png::with_text_chunks(&image, &[("chara", "bm90IGpzb24=")]).unwrap(),
            422,
            "not JSON",
        ),
        ("a V2 card without data", card, 422, "without a `data` object"),
        ("a PNG without a card", image.clone(), 422, "no character card"),
        ("a JPEG renamed .png", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01".to_vec(), 422, "JPEG"),
        ("a zip bomb in zTXt", bomb, 422, "once inflated"),
        ("a card of ours whose profile does not fit", tampered.to_string().into_bytes(), 422, "extensions.fastnpc"),
        ("a 50 MB chunk", png::with_text_chunks(&image, &[("chara", &"A".repeat(50 << 20))]).unwrap(), 413, "at most"),
    ];
    for (what, body, status, named) in cases {
        let response = import(&app, &ada, "image/png", body).await;
        assert_eq!(response.status().as_u16(), status, "{what}");
        let problem: Value = response.json().await.unwrap();
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(named), "{what}: {detail}");
    }
    assert_eq!(app.db.count("select count(*) from characters").await, 0, "no character was created");
    app.stop().await;
}

#[tokio::test]
async fn long_term_memory_goes_out_as_a_lorebook_only_when_asked() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let id = app.ready_character(&ada, "王维").await;
    let memories =
        json!({"short_term": ["用户 | 喜欢 | 山水"], "long_term": [{"content": "用户 | 是 | 画家", "importance": 12}]});
    let put = app.request(Method::PUT, &format!("/v1/characters/{id}/memories"), Some(&ada)).json(&memories).send();
    assert_eq!(put.await.unwrap().status(), 200);

    let plain: Value = export(&app, &ada, &id, "spec=v3").await.json().await.unwrap();
    assert!(plain["data"].get("character_book").is_none(), "a shared card carries no memory unless asked");
    let with_memory: Value = export(&app, &ada, &id, "spec=v3&memory=true").await.json().await.unwrap();
    let entries = with_memory["data"]["character_book"]["entries"].as_array().unwrap();
    let contents: Vec<&str> = entries.iter().map(|entry| entry["content"].as_str().unwrap()).collect();
    assert_eq!(contents, ["用户 | 是 | 画家"], "the long-term layer only");
    assert_eq!(entries[0]["constant"], true);
    let refused = app.get(&format!("/v1/characters/{id}/card?memory=perhaps"), &ada).await;
    assert_eq!(refused.status(), 400);
    app.stop().await;
}
