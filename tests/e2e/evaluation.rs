//! `fastnpc eval` runs end to end: generation, chat, fact checks and the judge, here against the
//! simulator (against a real model: `real_llm`). It must run and report; the simulator's scores
//! mean nothing.

use std::path::PathBuf;

use fastnpc::eval::{self, EvalOptions};
use fastnpc_shared::settings::Settings;

fn sources() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("eval/sources")
}

#[tokio::test]
async fn eval_generates_chats_checks_facts_scores_and_compares() {
    let data_dir = std::env::temp_dir().join(format!("fastnpc-eval-test-{}", uuid::Uuid::now_v7().simple()));
    // No LLM configured: the embedded system's simulator answers, and judges.
    let settings = Settings::from_lookup(|name| match name {
        "FASTNPC_DATA_DIR" => Some(data_dir.display().to_string()),
        _ => None,
    })
    .unwrap();
    let options = EvalOptions {
        sources: sources(),
        only: vec!["li-bai".into(), "ada-lovelace".into()],
        ..EvalOptions::default()
    };
    let report = eval::run(settings, &options).await.expect("the evaluation runs");

    assert_eq!(report.people.len(), 2);
    for person in &report.people {
        assert_eq!(person.outcome, "ready", "{person:?}");
        let source = eval::load_sources(&EvalOptions { only: vec![person.name.clone()], ..options.clone() }).unwrap();
        assert_eq!(person.facts_found.len() + person.facts_missing.len(), source[0].1.facts.len());
        // The simulator's profile does not know the source: the checks must say so, not pass.
        assert!(!person.facts_missing.is_empty(), "{person:?}");
        assert_eq!(person.chat.len(), 2);
        assert!(person.chat.iter().all(|turn| turn.reply.as_deref().is_some_and(|r| !r.is_empty())), "{person:?}");
        assert_eq!(person.scores.len(), 9, "one score per category: {person:?}");
        assert!(person.scores.values().all(|s| s.fidelity <= 10 && s.consistency <= 10 && s.in_character <= 10));
    }
    let table = eval::table(&report);
    assert!(table.contains("李白") && table.contains("Ada Lovelace"), "{table}");

    let mut later = report.clone();
    later.people[0].scores.values_mut().for_each(|s| s.fidelity = 10);
    let compared = eval::compare(&report, &later);
    assert!(compared.contains("Ada Lovelace") && compared.contains("李白"), "{compared}");
    assert!(compared.contains("→10.0"), "B's fidelity shows for the changed person: {compared}");
}
