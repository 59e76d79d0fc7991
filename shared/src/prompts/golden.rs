//! Golden files: every prompt of every set rendered from fixed samples, checked in.
//!
//! They pin the exact bytes sent to the model, so a refactor cannot change a prompt unnoticed,
//! and they make a prompt change visible in review as a readable diff. Each file starts with the
//! set's version: changing a prompt's text without bumping the version fails here, because the
//! version is what ties a result to the texts that produced it.
//!
//! After an intended change: bump the version, then run
//! `FASTNPC_BLESS_PROMPTS=1 cargo test -p fastnpc-shared --lib prompts` to rewrite the files.

use std::path::PathBuf;

use serde_json::json;

use super::{ChatPrompt, GroupPrompt, Language, PromptSet};
use crate::domain::{CATEGORIES, Profile};

const BLESS: &str = "FASTNPC_BLESS_PROMPTS";

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// The inputs every prompt is rendered from, written in the set's language.
struct Samples {
    name: &'static str,
    user: &'static str,
    user_bio: &'static str,
    group_user_bio: &'static str,
    brief: &'static str,
    category_source: &'static str,
    brief_source: &'static str,
    profile: Profile,
    long_term: Vec<String>,
    short_term: Vec<String>,
    transcript: Vec<(bool, String)>,
    /// Small enough to cut the transcript to its newest lines.
    session_budget: usize,
    overlap: &'static str,
    conversation: &'static str,
    others: Vec<(String, String)>,
    group_transcript: Vec<String>,
    group_overlap: &'static str,
    group_conversation: &'static str,
}

fn profile(value: serde_json::Value) -> Profile {
    value.as_object().cloned().unwrap_or_default()
}

fn samples(language: Language) -> Samples {
    match language {
        Language::Zh => Samples {
            name: "诸葛亮",
            user: "ada",
            user_bio: "  学生，喜欢历史  ",
            group_user_bio: "学生",
            brief: "蜀汉丞相。",
            category_source: "# 诸葛亮\n\n{资料}",
            brief_source: "# 诸葛亮\n\n琅琊阳都人。",
            profile: profile(json!({
                "basic_identity": {
                    "name": "诸葛亮，字孔明",
                    "age": "  五十四岁（181—234）  ",
                    "gender": "",
                    "occupation": "蜀汉丞相",
                },
                "background": {
                    "experiences": ["隐居隆中", "三顾茅庐后出山", "五次北伐"],
                    "relationships": [],
                    "secrets": "   ",
                },
                "knowledge": {"skills": 42},
            })),
            long_term: strings(&["ada | 喜欢 | 兵法", "ada | 住在 | 成都，常来草庐请教治国之道"]),
            short_term: strings(&["ada | 答应 | 明天来访"]),
            transcript: vec![
                (true, "先生好".to_owned()),
                (false, "幸会".to_owned()),
                (true, "先生以为天下大势如何？".to_owned()),
                (false, "三分天下，已成定局。".to_owned()),
            ],
            session_budget: 20,
            overlap: "ada: 先生好",
            conversation: "ada: 我明天再来\n诸葛亮: 恭候",
            others: vec![("杜甫".to_owned(), "唐代诗人。".repeat(50)), ("李白".to_owned(), "  ".to_owned())],
            group_transcript: strings(&["ada: 诸位好", "杜甫: 幸会", "李白: 先饮一杯"]),
            group_overlap: "ada: 诸位好",
            group_conversation: "杜甫: 幸会",
        },
        Language::En => Samples {
            name: "Zhuge Liang",
            user: "ada",
            user_bio: "  A student who loves history  ",
            group_user_bio: "A student",
            brief: "Chancellor of Shu Han.",
            category_source: "# Zhuge Liang\n\n{source}",
            brief_source: "# Zhuge Liang\n\nBorn in Yangdu, Langya.",
            profile: profile(json!({
                "basic_identity": {
                    "name": "Zhuge Liang, courtesy name Kongming",
                    "age": "  53 (181–234)  ",
                    "gender": "",
                    "occupation": "Chancellor of Shu Han",
                },
                "background": {
                    "experiences": ["Lived in seclusion at Longzhong", "Joined Liu Bei after his three visits", "Led five northern expeditions"],
                    "relationships": [],
                    "secrets": "   ",
                },
                "knowledge": {"skills": 42},
            })),
            long_term: strings(&[
                "ada | likes | strategy",
                "ada | lives in | Chengdu and often visits to ask about statecraft",
            ]),
            short_term: strings(&["ada | promised | to visit tomorrow"]),
            transcript: vec![
                (true, "Good day, sir".to_owned()),
                (false, "Well met".to_owned()),
                (true, "How do you see the state of the realm?".to_owned()),
                (false, "It is split in three, and will stay so.".to_owned()),
            ],
            session_budget: 60,
            overlap: "ada: Good day, sir",
            conversation: "ada: I will come again tomorrow\nZhuge Liang: I will be waiting",
            others: vec![("Du Fu".to_owned(), "A Tang poet. ".repeat(60)), ("Li Bai".to_owned(), "  ".to_owned())],
            group_transcript: strings(&["ada: Hello, everyone", "Du Fu: Well met", "Li Bai: A cup of wine first"]),
            group_overlap: "ada: Hello, everyone",
            group_conversation: "Du Fu: Well met",
        },
    }
}

/// Every prompt of a set, rendered from its samples, as `(name, text)`.
fn render(set: &dyn PromptSet) -> Vec<(String, String)> {
    let s = samples(set.language());
    let mut out = Vec::new();
    let mut push = |name: &str, text: String| out.push((name.to_owned(), text));

    push("profile_system", set.profile_system().to_owned());
    for category in &CATEGORIES {
        push(&format!("profile_category/{}", category.key), set.profile_category(category, s.name, s.category_source));
    }
    push("brief_system", set.brief_system().to_owned());
    push("brief", set.brief(s.name, s.brief_source));
    push(
        "chat_system_prompt/full",
        set.chat_system_prompt(&ChatPrompt {
            character_name: s.name,
            user_name: s.user,
            user_bio: s.user_bio,
            profile: &s.profile,
            long_term: &s.long_term,
            short_term: &s.short_term,
            transcript: &s.transcript,
            ltm_budget: 20,
            stm_budget: 3000,
            session_budget: s.session_budget,
        }),
    );
    push(
        "chat_system_prompt/empty",
        set.chat_system_prompt(&ChatPrompt {
            character_name: s.name,
            user_name: s.user,
            user_bio: " ",
            profile: &Profile::new(),
            long_term: &[],
            short_term: &[],
            transcript: &[],
            ltm_budget: 4000,
            stm_budget: 3000,
            session_budget: 3000,
        }),
    );
    push("stm_system", set.stm_system().to_owned());
    push("stm_compression", set.stm_compression(s.name, s.user, s.overlap, s.conversation));
    push("ltm_system", set.ltm_system().to_owned());
    push("ltm_integration/full", set.ltm_integration(s.name, s.brief, &s.short_term, &s.long_term));
    push("ltm_integration/empty", set.ltm_integration(s.name, s.brief, &[], &[]));
    push(
        "group_system_prompt/full",
        set.group_system_prompt(&GroupPrompt {
            character_name: s.name,
            user_name: s.user,
            user_bio: s.group_user_bio,
            profile: &s.profile,
            long_term: &s.long_term,
            short_term: &s.short_term,
            others: &s.others,
            transcript: &s.group_transcript,
        }),
    );
    push(
        "group_system_prompt/alone",
        set.group_system_prompt(&GroupPrompt {
            character_name: s.name,
            user_name: s.user,
            user_bio: "",
            profile: &Profile::new(),
            long_term: &[],
            short_term: &[],
            others: &[],
            transcript: &[],
        }),
    );
    push("group_user_turn", set.group_user_turn(s.name, &s.group_transcript));
    push("moderator_system", set.moderator_system().to_owned());
    push("moderator", set.moderator(&s.others, &s.group_transcript));
    let mut participants = vec![s.user.to_owned()];
    participants.extend(s.others.iter().map(|(name, _)| name.clone()));
    push(
        "group_stm_compression",
        set.group_stm_compression(
            s.name,
            &participants.join(set.name_separator()),
            s.group_overlap,
            s.group_conversation,
        ),
    );
    out
}

fn golden_path(code: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("src/prompts/golden/{code}.txt"))
}

/// The file format: a version line, then each prompt under a `=== name ===` header, its text
/// followed by one newline (so a text's own trailing newline stays visible as a blank line).
fn serialize(version: &str, prompts: &[(String, String)]) -> String {
    let mut file = format!("version: {version}\n");
    for (name, text) in prompts {
        file.push_str(&format!("=== {name} ===\n{text}\n"));
    }
    file
}

fn version_of(file: &str) -> Option<&str> {
    file.lines().next()?.strip_prefix("version: ")
}

/// The first prompt whose text differs from the file's, for a readable failure.
fn first_difference(file: &str, prompts: &[(String, String)]) -> Option<(String, String, String)> {
    for (index, (name, text)) in prompts.iter().enumerate() {
        let header = format!("=== {name} ===\n");
        let stored = file.find(&header).map(|start| {
            let body = &file[start + header.len()..];
            let end = prompts
                .get(index + 1)
                .and_then(|(next, _)| body.find(&format!("\n=== {next} ===\n")).map(|at| at + 1))
                .unwrap_or(body.len());
            body[..end].strip_suffix('\n').unwrap_or(&body[..end]).to_owned()
        });
        match stored {
            Some(stored) if stored == *text => {}
            stored => return Some((name.clone(), stored.unwrap_or_default(), text.clone())),
        }
    }
    None
}

fn check(code: &str, version: &str, prompts: &[(String, String)]) {
    let path = golden_path(code);
    let rendered = serialize(version, prompts);
    let stored = std::fs::read_to_string(&path).unwrap_or_default();
    if rendered == stored {
        return;
    }
    if std::env::var_os(BLESS).is_some() {
        assert!(
            version_of(&stored) != Some(version),
            "{code} prompts changed but the version is still {version}: bump it, then bless again"
        );
        std::fs::write(&path, rendered).expect("write the golden file");
        return;
    }
    assert!(!stored.is_empty(), "{} is missing; create it with {BLESS}=1", path.display());
    assert_eq!(
        version_of(&stored),
        Some(version),
        "{code}: the version changed; if the prompts were meant to change, rerun with {BLESS}=1"
    );
    if let Some((name, stored, rendered)) = first_difference(&stored, prompts) {
        assert_eq!(
            rendered,
            stored,
            "{code} prompt {name} differs from {}; if intended, bump the version and rerun with {BLESS}=1",
            path.display()
        );
    }
    panic!("{} is out of date (prompts added or removed); rerun with {BLESS}=1", path.display());
}

#[test]
fn every_set_matches_its_golden_file() {
    for language in Language::ALL {
        let set = language.prompts();
        check(language.code(), set.version(), &render(set));
    }
}
