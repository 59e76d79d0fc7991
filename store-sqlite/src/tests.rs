//! Tests against real SQLite files (one fresh file per test in the temp dir, opened through
//! [`crate::connect`] as embedded mode opens it), aimed at what the translation from Postgres
//! could break: guards in `where` clauses, cursors and ordering over blob ids, timestamps
//! compared as text, foreign keys and cascades, unique-violation detection, and concurrent
//! writers.

use std::{path::PathBuf, time::Duration};

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use fastnpc_shared::{
    ids::{CharacterId, GroupId, JobId, MessageId, UserId},
    jobs::{JobError, JobKind, JobStatus},
    llm::Usage,
    store::{
        NewCharacter,
        groups::NewGroupMessage,
        jobs::{CancelOutcome, Heartbeat, IDEMPOTENCY_KEY, NewJob, serial},
        memories::MemoryEntry,
        messages::NewReply,
        usage::DailyUsage,
        users::{SettingsPatch, USERNAME_KEY},
    },
};
use serde_json::{Value, json};
use sqlx::SqlitePool;

use crate::{
    SqliteStore, api_keys, begin_immediate, characters, connect, events, groups, is_unique_violation, jobs, memories,
    messages, migrate, minus, now, plus, stats, users,
};
use fastnpc_shared::store::prelude::*;

/// A migrated database file that is deleted (with its WAL files) when the test ends.
struct TestDb {
    pool: SqlitePool,
    path: PathBuf,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.path.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

async fn test_db() -> TestDb {
    let path = std::env::temp_dir().join(format!("fastnpc-store-sqlite-{}.db", uuid::Uuid::now_v7()));
    let pool = connect(&path, 4).await.expect("open the database");
    migrate(&pool).await.expect("migrate");
    TestDb { pool, path }
}

async fn user(pool: &SqlitePool, name: &str) -> UserId {
    let user_id = UserId::new();
    users::insert(pool, user_id, name, "hash").await.unwrap();
    user_id
}

async fn character(pool: &SqlitePool, user_id: UserId, name: &str) -> CharacterId {
    let character_id = CharacterId::new();
    let source = json!({"kind": "text", "text": name});
    characters::insert(pool, &NewCharacter::new(character_id, user_id, name, &source, "zh")).await.unwrap();
    character_id
}

fn new_job(user_id: UserId, kind: JobKind) -> NewJob<'static> {
    NewJob {
        job_id: JobId::new(),
        user_id,
        kind,
        character_id: None,
        message_id: None,
        group_id: None,
        serial_key: None,
        progress_total: 3,
        idempotency: None,
        params: None,
    }
}

async fn job(pool: &SqlitePool, user_id: UserId, serial_key: Option<&str>) -> JobId {
    let job = NewJob { serial_key: serial_key.map(str::to_owned), ..new_job(user_id, JobKind::ChatReply) };
    let job_id = job.job_id;
    jobs::insert(pool, job).await.unwrap();
    job_id
}

async fn job_status(pool: &SqlitePool, job_id: JobId) -> JobStatus {
    jobs::status(pool, job_id).await.unwrap().unwrap()
}

const LEASE: Duration = Duration::from_secs(60);

/// A connection of its own, for the functions that take one: outside a transaction each of
/// their statements commits by itself.
async fn connection(pool: &SqlitePool) -> sqlx::pool::PoolConnection<sqlx::Sqlite> {
    pool.acquire().await.unwrap()
}

/// Lets the clock pass a time stamped just before (they have microsecond resolution).
async fn tick() {
    tokio::time::sleep(Duration::from_millis(3)).await;
}

// ---- schema and connection -------------------------------------------------------------------

#[tokio::test]
async fn migrations_apply_and_every_connection_enforces_foreign_keys() {
    let db = test_db().await;
    // Again: already applied, nothing to do.
    migrate(&db.pool).await.unwrap();
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut conn = db.pool.acquire().await.unwrap();
        let foreign_keys: i64 = sqlx::query_scalar("pragma foreign_keys").fetch_one(&mut *conn).await.unwrap();
        assert_eq!(foreign_keys, 1);
        let journal: String = sqlx::query_scalar("pragma journal_mode").fetch_one(&mut *conn).await.unwrap();
        assert_eq!(journal, "wal");
        held.push(conn);
    }
    drop(held);
    // A character of a user that does not exist is refused.
    let error =
        characters::insert(&db.pool, &NewCharacter::new(CharacterId::new(), UserId::new(), "x", &json!({}), "zh"))
            .await
            .unwrap_err();
    assert!(matches!(&error, sqlx::Error::Database(e) if e.is_foreign_key_violation()), "{error}");
}

#[tokio::test]
async fn timestamps_are_stored_as_sqlx_text_that_sorts_in_time_order() {
    let db = test_db().await;
    let before = now();
    let user_id = user(&db.pool, "ada").await;
    let (kind, text): (String, String) =
        sqlx::query_as("select typeof(created_at), created_at from users where user_id = ?1")
            .bind(user_id.0)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(kind, "text");
    let stored = DateTime::parse_from_rfc3339(&text).unwrap().with_timezone(&Utc);
    assert!(stored >= before && stored <= now());
    assert_eq!(text, stored.to_rfc3339_opts(SecondsFormat::AutoSi, false), "the text sqlx writes");
    assert_eq!(users::get(&db.pool, user_id).await.unwrap().unwrap().created_at, stored);

    // sqlx drops a zero fraction and writes 3, 6 or 9 digits otherwise: text order must still be
    // time order, including across those lengths and across the clamped extremes.
    let base = Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap();
    let mut times = vec![
        base,
        base + chrono::TimeDelta::nanoseconds(1),
        base + chrono::TimeDelta::microseconds(1),
        base + chrono::TimeDelta::milliseconds(1),
        base + chrono::TimeDelta::microseconds(1500),
        base + chrono::TimeDelta::milliseconds(100),
        base + chrono::TimeDelta::milliseconds(999),
        base + chrono::TimeDelta::seconds(1),
        base - chrono::TimeDelta::microseconds(1),
        base + chrono::TimeDelta::days(400),
        plus(base, Duration::MAX),
        minus(base, Duration::MAX),
        plus(base, Duration::from_secs(1)),
    ];
    let mut conn = db.pool.acquire().await.unwrap();
    sqlx::query("create temp table stamps (n integer, at text)").execute(&mut *conn).await.unwrap();
    for (n, time) in times.iter().enumerate() {
        sqlx::query("insert into stamps values (?1, ?2)").bind(n as i64).bind(time).execute(&mut *conn).await.unwrap();
    }
    let by_text: Vec<DateTime<Utc>> =
        sqlx::query_scalar("select at from stamps order by at").fetch_all(&mut *conn).await.unwrap();
    times.sort();
    assert_eq!(by_text, times);
    // Comparisons with a bound time are text comparisons too.
    let later: i64 =
        sqlx::query_scalar("select count(*) from stamps where at > ?1").bind(base).fetch_one(&mut *conn).await.unwrap();
    assert_eq!(later, times.iter().filter(|t| **t > base).count() as i64);
}

#[test]
fn computed_times_saturate_within_four_digit_years() {
    let base = now();
    assert_eq!(plus(base, Duration::MAX).to_rfc3339(), "9999-12-31T23:59:59+00:00");
    assert_eq!(minus(base, Duration::MAX).to_rfc3339(), "0001-01-01T00:00:00+00:00");
    assert_eq!(plus(base, Duration::from_secs(60)) - base, chrono::TimeDelta::seconds(60));
}

// ---- users, sessions, admin -------------------------------------------------------------------

#[tokio::test]
async fn usernames_are_unique_case_insensitively_and_the_violation_is_recognised() {
    let db = test_db().await;
    let ada = user(&db.pool, "Ada").await;
    let error = users::insert(&db.pool, UserId::new(), "aDA", "h").await.unwrap_err();
    assert!(is_unique_violation(&error, USERNAME_KEY), "{error}");
    assert!(!is_unique_violation(&error, IDEMPOTENCY_KEY));
    // Unicode case folding too (SQLite's own lower() would let this through).
    user(&db.pool, "Élodie").await;
    let error = users::insert(&db.pool, UserId::new(), "éLODIE", "h").await.unwrap_err();
    assert!(is_unique_violation(&error, USERNAME_KEY), "{error}");
    // Some other unique violation is not a username conflict.
    let error = users::insert(&db.pool, ada, "someone-else", "h").await.unwrap_err();
    assert!(matches!(&error, sqlx::Error::Database(e) if e.is_unique_violation()));
    assert!(!is_unique_violation(&error, USERNAME_KEY));
    assert!(!is_unique_violation(&sqlx::Error::RowNotFound, USERNAME_KEY));

    let credentials = users::credentials(&db.pool, "ADA").await.unwrap().unwrap();
    assert_eq!(credentials.user_id, ada);
    assert_eq!(credentials.password_hash, "hash");
    assert!(!credentials.disabled);
    assert!(users::credentials(&db.pool, "nobody").await.unwrap().is_none());
    let record = users::get(&db.pool, ada).await.unwrap().unwrap();
    assert_eq!((record.username.as_str(), record.ctx_max_chat, record.max_group_rounds), ("Ada", 3000, 3));
    assert_eq!(record.language, "zh");
    assert!(!record.is_admin);
}

#[tokio::test]
async fn settings_patch_keeps_what_it_does_not_name_and_checks_ranges() {
    let db = test_db().await;
    let ada = user(&db.pool, "ada").await;
    let patch = SettingsPatch {
        bio: Some("mathematician"),
        ctx_max_chat: None,
        ctx_max_stm: Some(1000),
        ctx_max_ltm: None,
        max_group_rounds: None,
        language: Some("en"),
    };
    users::update_settings(&db.pool, ada, patch).await.unwrap();
    let record = users::get(&db.pool, ada).await.unwrap().unwrap();
    assert_eq!((record.bio.as_str(), record.ctx_max_chat, record.ctx_max_stm), ("mathematician", 3000, 1000));
    assert_eq!(record.language, "en");
    let bad = SettingsPatch {
        bio: None,
        ctx_max_chat: Some(10),
        ctx_max_stm: None,
        ctx_max_ltm: None,
        max_group_rounds: None,
        language: None,
    };
    let error = users::update_settings(&db.pool, ada, bad).await.unwrap_err();
    assert!(matches!(&error, sqlx::Error::Database(e) if e.is_check_violation()), "{error}");
    let bad = SettingsPatch {
        bio: None,
        ctx_max_chat: None,
        ctx_max_stm: None,
        ctx_max_ltm: None,
        max_group_rounds: None,
        language: Some("fr"),
    };
    let error = users::update_settings(&db.pool, ada, bad).await.unwrap_err();
    assert!(matches!(&error, sqlx::Error::Database(e) if e.is_check_violation()), "{error}");
    assert_eq!(users::get(&db.pool, ada).await.unwrap().unwrap().language, "en");
    assert_eq!(users::password_hash(&db.pool, ada).await.unwrap().as_deref(), Some("hash"));
}

#[tokio::test]
async fn sessions_expire_are_revoked_and_end_with_a_disabled_account() {
    let db = test_db().await;
    let ada = user(&db.pool, "ada").await;
    let expired = minus(now(), Duration::from_secs(1));
    let later = plus(now(), Duration::from_secs(3600));
    users::insert_session(&db.pool, b"old", ada, expired).await.unwrap();
    users::insert_session(&db.pool, b"live", ada, later).await.unwrap();
    users::insert_session(&db.pool, b"other", ada, later).await.unwrap();
    assert_eq!(users::session_user(&db.pool, b"old").await.unwrap(), None);
    assert_eq!(users::session_user(&db.pool, b"live").await.unwrap(), Some(ada));
    assert_eq!(users::session_user(&db.pool, b"unknown").await.unwrap(), None);

    users::revoke_session(&db.pool, b"other").await.unwrap();
    users::revoke_session(&db.pool, b"other").await.unwrap();
    assert_eq!(users::session_user(&db.pool, b"other").await.unwrap(), None);

    // A password change keeps only the session that made it.
    users::insert_session(&db.pool, b"phone", ada, later).await.unwrap();
    users::change_password(&db.pool, ada, "new-hash", Some(b"live")).await.unwrap();
    assert_eq!(users::session_user(&db.pool, b"live").await.unwrap(), Some(ada));
    assert_eq!(users::session_user(&db.pool, b"phone").await.unwrap(), None);
    assert_eq!(users::password_hash(&db.pool, ada).await.unwrap().as_deref(), Some("new-hash"));
    users::change_password(&db.pool, ada, "newer-hash", None).await.unwrap();
    assert_eq!(users::session_user(&db.pool, b"live").await.unwrap(), None);

    users::insert_session(&db.pool, b"s1", ada, later).await.unwrap();
    users::insert_session(&db.pool, b"s2", ada, later).await.unwrap();
    assert!(users::is_enabled(&db.pool, ada).await.unwrap());
    assert_eq!(users::disable(&db.pool, ada).await.unwrap(), Some(2));
    assert!(!users::is_enabled(&db.pool, ada).await.unwrap());
    assert!(users::credentials(&db.pool, "ada").await.unwrap().unwrap().disabled);
    assert_eq!(users::session_user(&db.pool, b"s1").await.unwrap(), None);
    assert_eq!(users::disable(&db.pool, UserId::new()).await.unwrap(), None);
    // Enabled again: old sessions stay revoked, new ones work.
    assert!(users::enable(&db.pool, ada).await.unwrap());
    assert_eq!(users::session_user(&db.pool, b"s1").await.unwrap(), None);
    users::insert_session(&db.pool, b"s3", ada, later).await.unwrap();
    users::disable(&db.pool, ada).await.unwrap();
    users::enable(&db.pool, ada).await.unwrap();
    assert_eq!(users::session_user(&db.pool, b"s3").await.unwrap(), None);

    // Only what ended more than a day ago is purged.
    users::insert_session(&db.pool, b"ancient", ada, minus(now(), Duration::from_secs(2 * 86400))).await.unwrap();
    assert_eq!(users::purge_sessions(&db.pool).await.unwrap(), 1);
    assert!(users::delete(&db.pool, ada).await.unwrap());
    assert!(!users::delete(&db.pool, ada).await.unwrap());
    let left: i64 = sqlx::query_scalar("select count(*) from sessions").fetch_one(&db.pool).await.unwrap();
    assert_eq!(left, 0, "sessions are deleted with their user");
}

#[tokio::test]
async fn one_admin_and_the_account_listing() {
    let db = test_db().await;
    let ada = user(&db.pool, "ada").await;
    let bob = user(&db.pool, "bob").await;
    let eve = user(&db.pool, "eve").await;
    users::make_sole_admin(&db.pool, ada).await.unwrap();
    assert!(users::is_admin(&db.pool, ada).await.unwrap());
    users::disable(&db.pool, bob).await.unwrap();
    users::make_sole_admin(&db.pool, bob).await.unwrap();
    assert!(!users::is_admin(&db.pool, ada).await.unwrap());
    assert!(users::is_admin(&db.pool, bob).await.unwrap(), "made admin and enabled");
    assert!(users::is_enabled(&db.pool, bob).await.unwrap());
    users::disable(&db.pool, bob).await.unwrap();
    assert!(!users::is_admin(&db.pool, bob).await.unwrap(), "a disabled admin is no admin");
    assert_eq!(users::clear_admins(&db.pool).await.unwrap(), 1);

    character(&db.pool, eve, "c1").await;
    character(&db.pool, eve, "c2").await;
    job(&db.pool, eve, None).await;
    let finished = job(&db.pool, eve, None).await;
    jobs::fail_unclaimed(&db.pool, finished, &JobError::new("x", "y")).await.unwrap();

    let page = users::list(&db.pool, None, 2).await.unwrap();
    assert_eq!(page.iter().map(|u| u.user_id).collect::<Vec<_>>(), [ada, bob]);
    assert!(page[1].disabled_at.is_some());
    let rest = users::list(&db.pool, Some(bob), 2).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!((rest[0].user_id, rest[0].characters, rest[0].active_jobs), (eve, 2, 1));
    let summary = users::summary(&db.pool, eve).await.unwrap().unwrap();
    assert_eq!((summary.username.as_str(), summary.characters, summary.active_jobs), ("eve", 2, 1));
    assert!(users::summary(&db.pool, UserId::new()).await.unwrap().is_none());
}

// ---- API keys ---------------------------------------------------------------------------------

#[tokio::test]
async fn api_keys_authenticate_until_revoked_or_disabled() {
    let db = test_db().await;
    let ada = user(&db.pool, "ada").await;
    let eve = user(&db.pool, "eve").await;
    let first = uuid::Uuid::now_v7();
    let second = uuid::Uuid::now_v7();
    api_keys::insert(&db.pool, first, ada, "ci", "fk_1", b"hash-1").await.unwrap();
    api_keys::insert(&db.pool, second, ada, "laptop", "fk_2", b"hash-2").await.unwrap();
    assert_eq!(api_keys::user_of(&db.pool, b"hash-1").await.unwrap(), Some(ada));
    assert_eq!(api_keys::user_of(&db.pool, b"nope").await.unwrap(), None);
    let listed = api_keys::list(&db.pool, ada).await.unwrap();
    assert_eq!(listed.iter().map(|k| k.key_id).collect::<Vec<_>>(), [second, first], "newest first");
    assert!(listed[1].last_used_at.is_some() && listed[0].last_used_at.is_none());
    assert!(api_keys::list(&db.pool, eve).await.unwrap().is_empty());

    assert!(!api_keys::revoke(&db.pool, eve, first).await.unwrap(), "another user's key");
    assert_eq!(api_keys::user_of(&db.pool, b"hash-1").await.unwrap(), Some(ada));
    assert!(api_keys::revoke(&db.pool, ada, first).await.unwrap());
    assert!(api_keys::revoke(&db.pool, ada, first).await.unwrap(), "twice is harmless");
    assert_eq!(api_keys::user_of(&db.pool, b"hash-1").await.unwrap(), None);

    users::disable(&db.pool, ada).await.unwrap();
    assert_eq!(api_keys::user_of(&db.pool, b"hash-2").await.unwrap(), None);
    users::enable(&db.pool, ada).await.unwrap();
    assert_eq!(api_keys::user_of(&db.pool, b"hash-2").await.unwrap(), Some(ada));
}

// ---- characters -------------------------------------------------------------------------------

#[tokio::test]
async fn characters_are_owner_scoped_paged_by_id_and_cascade() {
    let db = test_db().await;
    let ada = user(&db.pool, "ada").await;
    let eve = user(&db.pool, "eve").await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(character(&db.pool, ada, &format!("c{n}")).await);
    }
    character(&db.pool, eve, "not-ada's").await;
    let record = characters::get(&db.pool, ada, ids[0]).await.unwrap().unwrap();
    assert_eq!((record.name.as_str(), record.status.as_str()), ("c0", "generating"));
    assert_eq!(record.source, json!({"kind": "text", "text": "c0"}));
    assert!(record.profile.is_none());
    assert_eq!((record.language.as_str(), record.prompt_version.as_deref()), ("zh", None));
    assert!(characters::get(&db.pool, eve, ids[0]).await.unwrap().is_none());
    assert!(characters::get_by_id(&db.pool, ids[0]).await.unwrap().is_some());

    let first = characters::list(&db.pool, ada, None, 2).await.unwrap();
    assert_eq!(first.iter().map(|c| c.character_id).collect::<Vec<_>>(), [ids[4], ids[3]]);
    let second = characters::list(&db.pool, ada, Some(ids[3]), 2).await.unwrap();
    assert_eq!(second.iter().map(|c| c.character_id).collect::<Vec<_>>(), [ids[2], ids[1]]);
    let last = characters::list(&db.pool, ada, Some(ids[1]), 2).await.unwrap();
    assert_eq!(last.iter().map(|c| c.character_id).collect::<Vec<_>>(), [ids[0]]);
    assert_eq!(characters::count(&db.pool, ada).await.unwrap(), 5);

    assert!(
        characters::mark_ready(
            &mut db.pool.acquire().await.unwrap(),
            ids[0],
            &json!({"traits": ["curious"]}),
            "A brief.",
            Some("zh-1")
        )
        .await
        .unwrap()
    );
    let ready = characters::get(&db.pool, ada, ids[0]).await.unwrap().unwrap();
    assert_eq!((ready.status.as_str(), ready.brief.as_deref()), ("ready", Some("A brief.")));
    assert_eq!(ready.profile, Some(json!({"traits": ["curious"]})));
    assert_eq!(ready.prompt_version.as_deref(), Some("zh-1"));
    characters::mark_failed(&db.pool, ids[0]).await.unwrap();
    assert_eq!(characters::get(&db.pool, ada, ids[0]).await.unwrap().unwrap().status, "ready", "only generating fails");
    characters::mark_failed(&db.pool, ids[1]).await.unwrap();
    assert!(!characters::mark_generating(&db.pool, eve, ids[1]).await.unwrap());
    assert!(characters::mark_generating(&db.pool, ada, ids[1]).await.unwrap());
    assert!(!characters::mark_generating(&db.pool, ada, ids[1]).await.unwrap(), "no longer failed");

    // Deleting a character takes its jobs, messages, memories and memberships with it.
    let generation = NewJob { character_id: Some(ids[2]), ..new_job(ada, JobKind::GenerateCharacter) };
    jobs::insert(&db.pool, generation).await.unwrap();
    messages::insert_user_message(&db.pool, MessageId::new(), ada, ids[2], "hi").await.unwrap();
    let group_id = GroupId::new();
    groups::insert(&db.pool, group_id, ada, "g").await.unwrap();
    groups::add_members(&db.pool, ada, group_id, &[ids[2]]).await.unwrap();
    let mut tx = begin_immediate(&db.pool).await.unwrap();
    memories::replace(&mut tx, ids[2], None, &[MemoryEntry::new("a")], &[]).await.unwrap();
    tx.commit().await.unwrap();

    assert!(!characters::delete(&db.pool, eve, ids[2]).await.unwrap(), "not eve's");
    assert!(characters::delete(&db.pool, ada, ids[2]).await.unwrap());
    for table in ["jobs", "messages", "memories", "group_members"] {
        let left: i64 = sqlx::query_scalar(&format!("select count(*) from {table}")).fetch_one(&db.pool).await.unwrap();
        assert_eq!(left, 0, "{table}");
    }
    assert!(!characters::delete(&db.pool, ada, ids[2]).await.unwrap());
}

// ---- jobs -------------------------------------------------------------------------------------

#[tokio::test]
async fn idempotency_keys_are_unique_per_user() {
    let db = test_db().await;
    let ada = user(&db.pool, "ada").await;
    let eve = user(&db.pool, "eve").await;
    let first = NewJob { idempotency: Some(("key-1", b"body-a")), ..new_job(ada, JobKind::GenerateCharacter) };
    let first_id = first.job_id;
    jobs::insert(&db.pool, first).await.unwrap();
    let again = NewJob { idempotency: Some(("key-1", b"body-b")), ..new_job(ada, JobKind::GenerateCharacter) };
    let error = jobs::insert(&db.pool, again).await.unwrap_err();
    assert!(is_unique_violation(&error, IDEMPOTENCY_KEY), "{error}");
    assert!(!is_unique_violation(&error, USERNAME_KEY));
    // Another user may use the same key, and jobs without a key never conflict.
    jobs::insert(&db.pool, NewJob { idempotency: Some(("key-1", b"x")), ..new_job(eve, JobKind::ChatReply) })
        .await
        .unwrap();
    jobs::insert(&db.pool, new_job(ada, JobKind::ChatReply)).await.unwrap();
    jobs::insert(&db.pool, new_job(ada, JobKind::ChatReply)).await.unwrap();

    let (found, fingerprint) = jobs::find_by_idempotency_key(&db.pool, ada, "key-1").await.unwrap().unwrap();
    assert_eq!((found, fingerprint.as_slice()), (first_id, &b"body-a"[..]));
    assert!(jobs::find_by_idempotency_key(&db.pool, ada, "key-2").await.unwrap().is_none());

    let record = jobs::get(&db.pool, ada, first_id).await.unwrap().unwrap();
    assert_eq!(
        (record.kind, record.status, record.attempts, record.progress_total),
        (JobKind::GenerateCharacter, JobStatus::Queued, 0, 3)
    );
    assert!(jobs::get(&db.pool, eve, first_id).await.unwrap().is_none(), "another user's job is missing");
}

#[tokio::test]
async fn claims_lease_and_fence_out_a_worker_that_lost_its_lease() {
    let db = test_db().await;
    let ada = user(&db.pool, "ada").await;
    let job_id = job(&db.pool, ada, None).await;

    let before = now();
    let first = jobs::claim(&db.pool, job_id, Duration::ZERO).await.unwrap().expect("a queued job is claimed");
    assert_eq!((first.job_id, first.user_id, first.kind, first.attempt), (job_id, ada, JobKind::ChatReply, 1));
    assert!(!first.cancel_requested);
    let record = jobs::get(&db.pool, ada, job_id).await.unwrap().unwrap();
    assert_eq!((record.status, record.attempts), (JobStatus::Running, 1));
    let started = record.started_at.unwrap();
    assert!(started >= before);

    // The lease (zero long) has run out: another worker takes over.
    tick().await;
    let second = jobs::claim(&db.pool, job_id, LEASE).await.unwrap().expect("an expired lease is taken over");
    assert_eq!(second.attempt, 2);
    assert_eq!(jobs::get(&db.pool, ada, job_id).await.unwrap().unwrap().started_at, Some(started), "kept");
    assert!(jobs::claim(&db.pool, job_id, LEASE).await.unwrap().is_none(), "a live lease is refused");

    // The first worker wakes up: every write of its claim is refused.
    assert_eq!(jobs::renew_lease(&db.pool, &first, LEASE).await.unwrap(), Heartbeat::Lost);
    assert!(!jobs::set_progress(&db.pool, &first, 2).await.unwrap());
    assert!(!jobs::succeed(&mut *connection(&db.pool).await, &first, &json!({"stale": true})).await.unwrap());
    assert!(!jobs::fail(&mut *connection(&db.pool).await, &first, &JobError::new("stale", "stale")).await.unwrap());
    assert!(!jobs::cancel(&mut *connection(&db.pool).await, &first, &json!({})).await.unwrap());
    assert!(!jobs::release(&mut *connection(&db.pool).await, &first).await.unwrap());
    assert_eq!(job_status(&db.pool, job_id).await, JobStatus::Running);

    // The live claim's progress only moves forward.
    assert_eq!(jobs::renew_lease(&db.pool, &second, LEASE).await.unwrap(), Heartbeat::Renewed);
    assert!(jobs::set_progress(&db.pool, &second, 2).await.unwrap());
    assert!(jobs::set_progress(&db.pool, &second, 1).await.unwrap());
    assert_eq!(jobs::get(&db.pool, ada, job_id).await.unwrap().unwrap().progress_done, 2);
    assert!(jobs::succeed(&mut *connection(&db.pool).await, &second, &json!({"ok": true})).await.unwrap());
    let done = jobs::get(&db.pool, ada, job_id).await.unwrap().unwrap();
    assert_eq!((done.status, done.progress_done, done.result), (JobStatus::Succeeded, 3, Some(json!({"ok": true}))));
    assert!(done.finished_at.is_some());
    // Terminal is final.
    assert!(!jobs::succeed(&mut *connection(&db.pool).await, &second, &json!({})).await.unwrap());
    assert!(jobs::claim(&db.pool, job_id, LEASE).await.unwrap().is_none());
    assert!(!jobs::fail_unclaimed(&db.pool, job_id, &JobError::new("x", "y")).await.unwrap());
}

#[tokio::test]
async fn a_released_job_is_claimed_again_at_once_and_failures_are_recorded() {
    let db = test_db().await;
    let ada = user(&db.pool, "ada").await;
    let job_id = job(&db.pool, ada, None).await;
    jobs::mark_published(&db.pool, job_id).await.unwrap();
    let claim = jobs::claim(&db.pool, job_id, LEASE).await.unwrap().unwrap();
    assert!(jobs::release(&mut *connection(&db.pool).await, &claim).await.unwrap());
    assert_eq!(job_status(&db.pool, job_id).await, JobStatus::Queued);
    // Released means unpublished: the re-publisher picks it up.
    assert_eq!(jobs::unpublished(&db.pool, Duration::ZERO, LEASE, 10).await.unwrap(), [job_id]);
    let claim = jobs::claim(&db.pool, job_id, LEASE).await.unwrap().unwrap();
    assert_eq!(claim.attempt, 2);
    assert!(
        jobs::fail(&mut *connection(&db.pool).await, &claim, &JobError::new("llm_error", "the model failed"))
            .await
            .unwrap()
    );
    let failed = jobs::get(&db.pool, ada, job_id).await.unwrap().unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.error, Some(json!({"code": "llm_error", "message": "the model failed"})));
}

#[tokio::test]
async fn jobs_of_one_serial_key_run_one_at_a_time_in_order() {
    let db = test_db().await;
    let ada = user(&db.pool, "ada").await;
    let key = serial::chat(CharacterId::new());
    let first = job(&db.pool, ada, Some(&key)).await;
    let second = job(&db.pool, ada, Some(&key)).await;
    let unrelated = job(&db.pool, ada, Some("chat:other")).await;

    assert!(jobs::claim(&db.pool, second, LEASE).await.unwrap().is_none(), "an earlier job is queued");
    assert_eq!(jobs::next_in_series(&db.pool, &key).await.unwrap(), Some(first));
    assert!(jobs::successor_waiting(&db.pool, &key, first).await.unwrap());
    let claim = jobs::claim(&db.pool, first, LEASE).await.unwrap().unwrap();
    assert!(jobs::claim(&db.pool, second, LEASE).await.unwrap().is_none(), "the first is running");
    assert!(jobs::claim(&db.pool, unrelated, LEASE).await.unwrap().is_some(), "other keys are not held up");
    assert_eq!(jobs::next_in_series(&db.pool, &key).await.unwrap(), Some(second));
    jobs::mark_unpublished(&db.pool, second).await.unwrap();

    assert!(jobs::succeed(&mut *connection(&db.pool).await, &claim, &json!({})).await.unwrap());
    assert!(!jobs::successor_waiting(&db.pool, &key, second).await.unwrap());
    let next = jobs::claim(&db.pool, second, LEASE).await.unwrap().expect("its turn");
    assert_eq!(next.serial_key.as_deref(), Some(key.as_str()));
    assert_eq!(jobs::next_in_series(&db.pool, &key).await.unwrap(), None);

    // A running job blocks its key whatever the ids' order (ids are made before commit).
    let group_key = serial::group(GroupId::new());
    let early = job(&db.pool, ada, Some(&group_key)).await;
    let late = job(&db.pool, ada, Some(&group_key)).await;
    let early_claim = jobs::claim(&db.pool, early, LEASE).await.unwrap().unwrap();
    assert!(jobs::release(&mut *connection(&db.pool).await, &early_claim).await.unwrap());
    sqlx::query("update jobs set status = 'running', lease_until = ?2 where job_id = ?1")
        .bind(late.0)
        .bind(plus(now(), LEASE))
        .execute(&db.pool)
        .await
        .unwrap();
    assert!(jobs::claim(&db.pool, early, LEASE).await.unwrap().is_none());
}

/// A round of claims is one statement: each answer in the order asked, as if claimed one after
/// the other — a series' later job refused beside its earlier one (asked first or last), a job
/// asked for twice claimed once, a job of another series and a finished job as alone.
#[tokio::test]
async fn a_round_of_claims_answers_each_as_if_claimed_in_turn() {
    let db = test_db().await;
    let ada = user(&db.pool, "ada").await;
    let key = serial::chat(CharacterId::new());
    let (first, second) = (job(&db.pool, ada, Some(&key)).await, job(&db.pool, ada, Some(&key)).await);
    let other = job(&db.pool, ada, Some("chat:other")).await;
    let done = job(&db.pool, ada, None).await;
    jobs::fail_unclaimed(&db.pool, done, &JobError::new("x", "y")).await.unwrap();

    let round = [second, other, first, done, first];
    let claims = jobs::claim_all(&db.pool, &round, LEASE).await.unwrap();
    let claimed: Vec<Option<JobId>> = claims.iter().map(|claim| claim.as_ref().map(|claim| claim.job_id)).collect();
    assert_eq!(claimed, [None, Some(other), Some(first), None, None]);
    assert_eq!(claims[2].as_ref().unwrap().attempt, 1, "claimed once");
    assert_eq!(
        (job_status(&db.pool, first).await, job_status(&db.pool, second).await),
        (JobStatus::Running, JobStatus::Queued)
    );

    // With the head of the series asked for first, the same.
    let (head, behind) = (job(&db.pool, ada, Some("chat:third")).await, job(&db.pool, ada, Some("chat:third")).await);
    let claims = jobs::claim_all(&db.pool, &[head, behind], LEASE).await.unwrap();
    assert_eq!(claims.iter().map(Option::is_some).collect::<Vec<_>>(), [true, false]);
}

#[tokio::test]
async fn the_republisher_finds_unconfirmed_stale_and_abandoned_jobs_only() {
    let db = test_db().await;
    let ada = user(&db.pool, "ada").await;
    let hour = Duration::from_secs(3600);
    let unconfirmed = job(&db.pool, ada, None).await;
    let confirmed = job(&db.pool, ada, None).await;
    jobs::mark_published(&db.pool, confirmed).await.unwrap();
    tick().await;
    // Within the grace period nothing is due.
    assert!(jobs::unpublished(&db.pool, hour, hour, 10).await.unwrap().is_empty());
    assert_eq!(jobs::unpublished(&db.pool, Duration::ZERO, hour, 10).await.unwrap(), [unconfirmed]);

    // A serial head published long ago but unclaimed is re-sent; the one behind it is not.
    let key = serial::memory(CharacterId::new());
    let head = job(&db.pool, ada, Some(&key)).await;
    let behind = job(&db.pool, ada, Some(&key)).await;
    jobs::mark_published(&db.pool, head).await.unwrap();
    jobs::mark_published(&db.pool, behind).await.unwrap();
    tick().await;
    assert_eq!(jobs::unpublished(&db.pool, hour, Duration::ZERO, 10).await.unwrap(), [head]);
    assert!(jobs::unpublished(&db.pool, hour, hour, 10).await.unwrap().is_empty());

    // A running job whose lease expired and that was not published since.
    let abandoned = job(&db.pool, ada, None).await;
    jobs::mark_published(&db.pool, abandoned).await.unwrap();
    tick().await;
    jobs::claim(&db.pool, abandoned, Duration::ZERO).await.unwrap().unwrap();
    tick().await;
    let due = jobs::unpublished(&db.pool, Duration::ZERO, hour, 10).await.unwrap();
    assert!(due.contains(&abandoned) && due.contains(&unconfirmed), "{due:?}");
    assert!(!jobs::unpublished(&db.pool, hour, hour, 10).await.unwrap().contains(&abandoned));
    jobs::mark_published(&db.pool, abandoned).await.unwrap();
    assert!(!jobs::unpublished(&db.pool, Duration::ZERO, hour, 10).await.unwrap().contains(&abandoned));
    assert_eq!(jobs::unpublished(&db.pool, Duration::ZERO, hour, 1).await.unwrap(), [unconfirmed], "oldest first");
}

#[tokio::test]
async fn cancellation_of_queued_running_and_finished_jobs() {
    let db = test_db().await;
    let ada = user(&db.pool, "ada").await;
    let queued = job(&db.pool, ada, None).await;
    let running = job(&db.pool, ada, None).await;
    let claim = jobs::claim(&db.pool, running, LEASE).await.unwrap().unwrap();
    assert_eq!(jobs::active_count(&db.pool, ada).await.unwrap(), 2);
    assert_eq!(jobs::active_of(&db.pool, ada).await.unwrap(), [queued, running]);

    let mut tx = begin_immediate(&db.pool).await.unwrap();
    assert_eq!(jobs::request_cancel(&mut tx, queued).await.unwrap(), CancelOutcome::Cancelled);
    assert_eq!(jobs::request_cancel(&mut tx, running).await.unwrap(), CancelOutcome::Requested);
    tx.commit().await.unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    assert_eq!(jobs::request_cancel(&mut conn, queued).await.unwrap(), CancelOutcome::AlreadyFinished);
    assert_eq!(jobs::request_cancel(&mut conn, running).await.unwrap(), CancelOutcome::Requested, "idempotent");
    assert_eq!(jobs::request_cancel(&mut conn, JobId::new()).await.unwrap(), CancelOutcome::AlreadyFinished);
    drop(conn);
    let cancelled = jobs::get(&db.pool, ada, queued).await.unwrap().unwrap();
    assert_eq!((cancelled.status, cancelled.result), (JobStatus::Cancelled, Some(json!({"stopped": "cancelled"}))));

    assert_eq!(jobs::renew_lease(&db.pool, &claim, LEASE).await.unwrap(), Heartbeat::CancelRequested);
    assert!(jobs::cancel(&mut *connection(&db.pool).await, &claim, &json!({"stopped": "cancelled"})).await.unwrap());
    assert_eq!(job_status(&db.pool, running).await, JobStatus::Cancelled);
    assert_eq!(jobs::active_count(&db.pool, ada).await.unwrap(), 0);

    // A job cancelled while no worker held it is claimed with the request visible.
    let orphan = job(&db.pool, ada, None).await;
    jobs::claim(&db.pool, orphan, Duration::ZERO).await.unwrap().unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    jobs::request_cancel(&mut conn, orphan).await.unwrap();
    drop(conn);
    tick().await;
    assert!(jobs::claim(&db.pool, orphan, LEASE).await.unwrap().unwrap().cancel_requested);
}

#[tokio::test]
async fn reopen_requeues_a_failed_job_and_its_character() {
    let db = test_db().await;
    let ada = user(&db.pool, "ada").await;
    let character_id = character(&db.pool, ada, "c").await;
    let new = NewJob { character_id: Some(character_id), ..new_job(ada, JobKind::GenerateCharacter) };
    let job_id = new.job_id;
    jobs::insert(&db.pool, new).await.unwrap();
    assert!(!jobs::reopen(&db.pool, job_id).await.unwrap(), "only failed jobs reopen");
    let claim = jobs::claim(&db.pool, job_id, LEASE).await.unwrap().unwrap();
    jobs::fail(&mut *connection(&db.pool).await, &claim, &JobError::new("x", "y")).await.unwrap();
    characters::mark_failed(&db.pool, character_id).await.unwrap();

    assert!(jobs::reopen(&db.pool, job_id).await.unwrap());
    let record = jobs::get(&db.pool, ada, job_id).await.unwrap().unwrap();
    assert_eq!((record.status, record.attempts, record.error, record.finished_at), (JobStatus::Queued, 0, None, None));
    assert_eq!(characters::get(&db.pool, ada, character_id).await.unwrap().unwrap().status, "generating");
    assert_eq!(jobs::claim(&db.pool, job_id, LEASE).await.unwrap().unwrap().attempt, 1);

    let unclaimed = job(&db.pool, ada, None).await;
    assert!(jobs::fail_unclaimed(&db.pool, unclaimed, &JobError::new("bad_message", "undecodable")).await.unwrap());
    assert_eq!(job_status(&db.pool, unclaimed).await, JobStatus::Failed);
}

#[tokio::test]
async fn compression_and_answer_checks() {
    let db = test_db().await;
    let ada = user(&db.pool, "ada").await;
    let character_id = character(&db.pool, ada, "c").await;
    let group_id = GroupId::new();
    groups::insert(&db.pool, group_id, ada, "g").await.unwrap();
    let single = NewJob { character_id: Some(character_id), ..new_job(ada, JobKind::CompressMemory) };
    jobs::insert(&db.pool, single).await.unwrap();
    assert!(jobs::compression_queued(&db.pool, character_id, None).await.unwrap());
    assert!(!jobs::compression_queued(&db.pool, character_id, Some(group_id)).await.unwrap());
    let in_group = NewJob {
        character_id: Some(character_id),
        group_id: Some(group_id),
        ..new_job(ada, JobKind::CompressGroupMemory)
    };
    jobs::insert(&db.pool, in_group).await.unwrap();
    assert!(jobs::compression_queued(&db.pool, character_id, Some(group_id)).await.unwrap());

    let message_id = MessageId::new();
    messages::insert_user_message(&db.pool, message_id, ada, character_id, "hello").await.unwrap();
    assert!(!jobs::message_answered_or_pending(&db.pool, message_id).await.unwrap());
    let reply = NewJob { message_id: Some(message_id), ..new_job(ada, JobKind::ChatReply) };
    let reply_id = reply.job_id;
    let mut tx = begin_immediate(&db.pool).await.unwrap();
    jobs::lock_message(&mut *tx, message_id).await.unwrap();
    jobs::insert(&mut *tx, reply).await.unwrap();
    tx.commit().await.unwrap();
    assert!(jobs::message_answered_or_pending(&db.pool, message_id).await.unwrap());
    jobs::fail_unclaimed(&db.pool, reply_id, &JobError::new("x", "y")).await.unwrap();
    assert!(!jobs::message_answered_or_pending(&db.pool, message_id).await.unwrap(), "a failed answer may be retried");
}

// ---- LLM usage --------------------------------------------------------------------------------

/// The store itself over the test's file: usage is written by the port's units of work.
async fn store_of(db: &TestDb) -> SqliteStore {
    SqliteStore::open(&db.path, 4).await.unwrap()
}

fn spent(calls: u32, prompt_tokens: u64, completion_tokens: u64) -> Usage {
    Usage { calls, prompt_tokens, completion_tokens }
}

#[tokio::test]
async fn usage_of_a_users_jobs_adds_up_per_day_and_outlives_the_jobs() {
    let db = test_db().await;
    let store = store_of(&db).await;
    let ada = user(&db.pool, "ada").await;
    let eve = user(&db.pool, "eve").await;
    let character_id = character(&db.pool, ada, "c").await;
    let generation = NewJob { character_id: Some(character_id), ..new_job(ada, JobKind::GenerateCharacter) };
    let first = generation.job_id;
    jobs::insert(&db.pool, generation).await.unwrap();
    let second = job(&db.pool, ada, None).await;

    let claim = store.claim_job(first, LEASE).await.unwrap().unwrap();
    assert_eq!(claim.usage.total(), Usage::default(), "a claim starts with a fresh meter");
    claim.usage.add(Usage::call(100, 20));
    claim.clone().usage.add(Usage::call(100, 20));
    assert!(store.succeed_job(&claim, &json!({})).await.unwrap());
    let claim = store.claim_job(second, LEASE).await.unwrap().unwrap();
    claim.usage.add(Usage::call(50, 5));
    assert!(store.fail_job(&claim, &JobError::new("x", "y")).await.unwrap());

    assert_eq!(store.job(ada, first).await.unwrap().unwrap().usage, spent(2, 200, 40));
    assert_eq!(store.job(ada, second).await.unwrap().unwrap().usage, spent(1, 50, 5));
    let today = now().date_naive();
    let days = store.daily_usage(ada, 30).await.unwrap();
    assert_eq!(days, [DailyUsage { day: today, usage: spent(3, 250, 45) }]);
    assert_eq!(store.tokens_today(ada).await.unwrap(), 295);
    assert!(store.daily_usage(eve, 30).await.unwrap().is_empty(), "another user spent nothing");
    assert_eq!(store.tokens_today(eve).await.unwrap(), 0);

    // The generation's job goes with its character; the day's spend stays.
    assert!(store.delete_character(ada, character_id).await.unwrap());
    assert!(store.job(ada, first).await.unwrap().is_none());
    assert_eq!(store.tokens_today(ada).await.unwrap(), 295);

    // The window: `days` UTC days back from today, newest first; the budget counts today only.
    for (days_ago, tokens) in [(2, 7), (29, 11), (30, 13)] {
        let day = today.checked_sub_days(chrono::Days::new(days_ago)).unwrap();
        sqlx::query("insert into llm_usage_daily (user_id, day, calls, prompt_tokens, completion_tokens) values (?1, ?2, 1, ?3, 0)")
            .bind(ada.0)
            .bind(day)
            .bind(tokens)
            .execute(&db.pool)
            .await
            .unwrap();
    }
    let window: Vec<(u64, u64)> = store
        .daily_usage(ada, 30)
        .await
        .unwrap()
        .iter()
        .map(|d| ((today - d.day).num_days() as u64, d.usage.prompt_tokens))
        .collect();
    assert_eq!(window, [(0, 250), (2, 7), (29, 11)]);
    assert_eq!(store.daily_usage(ada, 1).await.unwrap().len(), 1);
    assert_eq!(store.tokens_today(ada).await.unwrap(), 295);
}

#[tokio::test]
async fn a_handed_back_attempt_counts_and_a_lost_claim_adds_nothing() {
    let db = test_db().await;
    let store = store_of(&db).await;
    let ada = user(&db.pool, "ada").await;
    let job_id = job(&db.pool, ada, None).await;

    // Handed back (a transient failure): its tokens were spent all the same.
    let first = store.claim_job(job_id, LEASE).await.unwrap().unwrap();
    first.usage.add(Usage::call(10, 1));
    assert!(store.release_job(&first).await.unwrap());
    assert_eq!(store.job(ada, job_id).await.unwrap().unwrap().usage, spent(1, 10, 1));
    assert_eq!(store.tokens_today(ada).await.unwrap(), 11);

    // A second attempt stalls past its lease and a third takes over: the stalled worker's
    // writes are refused, and its meter is not added anywhere.
    let stalled = store.claim_job(job_id, Duration::ZERO).await.unwrap().unwrap();
    stalled.usage.add(Usage::call(1000, 100));
    tick().await;
    let third = store.claim_job(job_id, LEASE).await.unwrap().unwrap();
    assert_eq!(third.usage.total(), Usage::default(), "not the stalled attempt's meter");
    assert!(!store.succeed_job(&stalled, &json!({})).await.unwrap());
    assert!(!store.fail_job(&stalled, &JobError::new("x", "y")).await.unwrap());
    assert!(!store.cancel_claimed_job(&stalled, &json!({})).await.unwrap());
    assert!(!store.release_job(&stalled).await.unwrap());
    assert_eq!(store.job(ada, job_id).await.unwrap().unwrap().usage, spent(1, 10, 1));
    assert_eq!(store.tokens_today(ada).await.unwrap(), 11);

    // The live attempt ends cancelled, and counts.
    third.usage.add(Usage::call(3, 2));
    assert!(store.cancel_claimed_job(&third, &json!({"stopped": "cancelled"})).await.unwrap());
    assert_eq!(store.job(ada, job_id).await.unwrap().unwrap().usage, spent(2, 13, 3));
    assert_eq!(store.daily_usage(ada, 1).await.unwrap()[0].usage, spent(2, 13, 3));

    // A reply whose claim was lost stores neither the reply nor the usage.
    let character_id = character(&db.pool, ada, "c").await;
    let message_id = MessageId::new();
    messages::insert_user_message(&db.pool, message_id, ada, character_id, "hi").await.unwrap();
    let reply_job = NewJob { message_id: Some(message_id), ..new_job(ada, JobKind::ChatReply) };
    let reply_job_id = reply_job.job_id;
    jobs::insert(&db.pool, reply_job).await.unwrap();
    let lost = store.claim_job(reply_job_id, Duration::ZERO).await.unwrap().unwrap();
    lost.usage.add(Usage::call(500, 50));
    tick().await;
    let winner = store.claim_job(reply_job_id, LEASE).await.unwrap().unwrap();
    let reply = |content| NewReply {
        message_id: MessageId::new(),
        user_id: ada,
        character_id,
        reply_to: message_id,
        content,
        job_id: reply_job_id,
        prompt_snapshot: "p",
        truncated: false,
        prompt_version: None,
        created_at: fastnpc_shared::store::stamp(),
    };
    assert!(store.finish_reply(&lost, reply("late"), &json!({})).await.unwrap().is_none());
    assert!(store.reply_of_job(reply_job_id).await.unwrap().is_none());
    assert_eq!(store.tokens_today(ada).await.unwrap(), 13 + 3);
    winner.usage.add(Usage::call(4, 4));
    let stored = store.finish_reply(&winner, reply("on time"), &json!({})).await.unwrap();
    assert_eq!(stored.map(|s| s.session_chars), Some(2 + 7), "the message and the reply, in characters");
    assert_eq!(store.job(ada, reply_job_id).await.unwrap().unwrap().usage, spent(1, 4, 4));
    assert_eq!(store.tokens_today(ada).await.unwrap(), 13 + 3 + 8);

    // An attempt that made no call leaves no row for its day.
    let eve = user(&db.pool, "eve").await;
    let idle = job(&db.pool, eve, None).await;
    let claim = store.claim_job(idle, LEASE).await.unwrap().unwrap();
    assert!(store.succeed_job(&claim, &json!({})).await.unwrap());
    assert!(store.daily_usage(eve, 30).await.unwrap().is_empty());
}

// ---- messages and memories --------------------------------------------------------------------

#[tokio::test]
async fn conversation_history_session_layer_and_compression() {
    let db = test_db().await;
    let ada = user(&db.pool, "ada").await;
    let eve = user(&db.pool, "eve").await;
    let character_id = character(&db.pool, ada, "c").await;
    // u1, u2 sent before r1 (the reply to u1) was stored; then r2, u3.
    let u1 = MessageId::new();
    let u2 = MessageId::new();
    messages::insert_user_message(&db.pool, u1, ada, character_id, "héllo").await.unwrap();
    messages::insert_user_message(&db.pool, u2, ada, character_id, "are you there").await.unwrap();
    let reply = |message_id, reply_to, job_id, content| NewReply {
        message_id,
        user_id: ada,
        character_id,
        reply_to,
        content,
        job_id,
        prompt_snapshot: "system prompt",
        truncated: false,
        prompt_version: None,
        created_at: fastnpc_shared::store::stamp(),
    };
    let (r1, j1) = (MessageId::new(), JobId::new());
    messages::insert_reply(&db.pool, reply(r1, u1, j1, "hi")).await.unwrap();
    let (r2, j2) = (MessageId::new(), JobId::new());
    let cut = NewReply { truncated: true, prompt_version: Some("zh-1"), ..reply(r2, u2, j2, "yes") };
    messages::insert_reply(&db.pool, cut).await.unwrap();
    let u3 = MessageId::new();
    messages::insert_user_message(&db.pool, u3, ada, character_id, "good").await.unwrap();

    // One reply per job and per message.
    let error = messages::insert_reply(&db.pool, reply(MessageId::new(), u3, j1, "again")).await.unwrap_err();
    assert!(is_unique_violation(&error, "messages_job_id_key"), "{error}");
    let error = messages::insert_reply(&db.pool, reply(MessageId::new(), u1, JobId::new(), "again")).await.unwrap_err();
    assert!(is_unique_violation(&error, "messages_reply_to_key"), "{error}");

    let ids = |records: Vec<fastnpc_shared::store::messages::MessageRecord>| {
        records.into_iter().map(|m| m.message_id).collect::<Vec<_>>()
    };
    assert_eq!(ids(messages::history(&db.pool, ada, character_id, None, 2).await.unwrap()), [u3, r2]);
    assert_eq!(ids(messages::history(&db.pool, ada, character_id, Some(r2), 10).await.unwrap()), [r1, u2, u1]);
    assert!(messages::history(&db.pool, eve, character_id, None, 10).await.unwrap().is_empty());
    assert!(messages::get(&db.pool, eve, u1).await.unwrap().is_none());
    let stored = messages::get(&db.pool, ada, r1).await.unwrap().unwrap();
    assert_eq!(
        (stored.author.as_str(), stored.reply_to, stored.job_id, stored.compressed),
        ("character", Some(u1), Some(j1), false)
    );
    assert_eq!((stored.truncated, stored.prompt_version), (false, None));
    let cut = messages::reply_of_job(&db.pool, j2).await.unwrap().unwrap();
    assert_eq!((cut.message_id, cut.truncated, cut.prompt_version.as_deref()), (r2, true, Some("zh-1")));
    assert!(messages::reply_of_job(&db.pool, JobId::new()).await.unwrap().is_none());

    // Conversation order puts each reply right after its message.
    assert_eq!(ids(messages::uncompressed(&db.pool, character_id, None, 10).await.unwrap()), [u1, r1, u2, r2, u3]);
    assert_eq!(ids(messages::uncompressed(&db.pool, character_id, None, 2).await.unwrap()), [r2, u3], "the newest");
    // The context of u2's reply: not u2 itself, nor user messages after it.
    assert_eq!(ids(messages::uncompressed(&db.pool, character_id, Some(u2), 10).await.unwrap()), [u1, r1, r2]);
    assert_eq!(ids(messages::oldest_uncompressed(&db.pool, character_id, 3).await.unwrap()), [u1, r1, u2]);
    // Characters, not bytes ("héllo" is 5).
    assert_eq!(messages::uncompressed_chars(&db.pool, character_id).await.unwrap(), 5 + 13 + 2 + 3 + 4);

    assert_eq!(messages::mark_compressed(&db.pool, &[u1, r1, MessageId::new()]).await.unwrap(), 2);
    assert_eq!(messages::mark_compressed(&db.pool, &[u1, r1, u2]).await.unwrap(), 1, "only the still uncompressed");
    assert_eq!(messages::mark_compressed(&db.pool, &[]).await.unwrap(), 0);
    assert_eq!(ids(messages::uncompressed(&db.pool, character_id, None, 10).await.unwrap()), [r2, u3]);
    assert_eq!(messages::uncompressed_chars(&db.pool, character_id).await.unwrap(), 3 + 4);
    assert!(messages::get(&db.pool, ada, u1).await.unwrap().unwrap().compressed);
}

/// A chat context read piece by piece, as the embedded store read it before its rounds, for
/// comparing with a round.
async fn context_piece_by_piece(
    pool: &SqlitePool,
    (user_id, character_id, message_id): fastnpc_shared::store::messages::ContextKey,
    limit: i64,
) -> Option<String> {
    let character = characters::get_by_id(pool, character_id).await.unwrap()?;
    let user = users::get(pool, user_id).await.unwrap()?;
    let message = messages::get(pool, user_id, message_id).await.unwrap()?;
    let memories = memories::load(pool, character_id).await.unwrap();
    let session = messages::uncompressed(pool, character_id, Some(message_id), limit).await.unwrap();
    let transcript: Vec<(bool, String)> = session.into_iter().map(|m| (m.author == "user", m.content)).collect();
    Some(format!("{character:?} {user:?} {:?} {memories:?} {transcript:?}", message.content))
}

#[tokio::test]
async fn a_round_of_chat_contexts_gives_each_reply_what_it_would_read_alone() {
    let db = test_db().await;
    let ada = user(&db.pool, "ada").await;
    let eve = user(&db.pool, "eve").await;
    let talkative = character(&db.pool, ada, "talkative").await;
    let quiet = character(&db.pool, eve, "quiet").await;
    let mut said = Vec::new();
    for (turn, text) in ["héllo", "are you there", "tell me \"more\"", "bye"].into_iter().enumerate() {
        let message_id = MessageId::new();
        messages::insert_user_message(&db.pool, message_id, ada, talkative, text).await.unwrap();
        if turn < 2 {
            let reply = NewReply {
                message_id: MessageId::new(),
                user_id: ada,
                character_id: talkative,
                reply_to: message_id,
                content: &format!("answer {turn}"),
                job_id: JobId::new(),
                prompt_snapshot: "system prompt",
                truncated: false,
                prompt_version: None,
                created_at: fastnpc_shared::store::stamp(),
            };
            messages::insert_reply(&db.pool, reply).await.unwrap();
        }
        said.push(message_id);
    }
    let eves = MessageId::new();
    messages::insert_user_message(&db.pool, eves, eve, quiet, "hi").await.unwrap();
    let short = [MemoryEntry::new("ada | met | talkative"), MemoryEntry::new("ada | likes | tea")];
    let long = [MemoryEntry { content: "ada is a mathematician".into(), importance: Some(12) }];
    let mut tx = begin_immediate(&db.pool).await.unwrap();
    assert!(memories::replace(&mut tx, talkative, Some(0), &short, &long).await.unwrap());
    tx.commit().await.unwrap();

    let keys = [
        (ada, talkative, said[3]),
        (eve, talkative, said[1]), // not eve's message
        (ada, talkative, said[1]),
        (ada, CharacterId::new(), said[0]), // no such character
        (eve, quiet, eves),
        (ada, talkative, said[2]),
        (ada, talkative, said[3]), // asked twice in one round
    ];
    for limit in [3, 50] {
        let round = messages::chat_contexts(&db.pool, &keys, limit).await.unwrap();
        assert_eq!(round.len(), keys.len());
        for (key, context) in keys.iter().zip(round) {
            let alone = context_piece_by_piece(&db.pool, *key, limit).await;
            let in_round = context
                .map(|c| format!("{:?} {:?} {:?} {:?} {:?}", c.character, c.user, c.message, c.memories, c.transcript));
            assert_eq!(in_round, alone, "{key:?} with a session window of {limit}");
        }
    }
    let first = messages::chat_contexts(&db.pool, &keys[..1], 50).await.unwrap().remove(0).unwrap();
    assert_eq!((first.memories.version, first.memories.short_term.len(), first.transcript.len()), (1, 2, 5));
    assert!(messages::chat_contexts(&db.pool, &[], 50).await.unwrap().is_empty());
}

#[tokio::test]
async fn memories_are_replaced_whole_unless_the_version_moved() {
    let db = test_db().await;
    let ada = user(&db.pool, "ada").await;
    let character_id = character(&db.pool, ada, "c").await;
    let empty = memories::load(&db.pool, character_id).await.unwrap();
    assert_eq!((empty.version, empty.short_term.len(), empty.long_term.len()), (0, 0, 0));

    let short = [MemoryEntry::new("ada | met | c"), MemoryEntry::new("ada | likes | tea")];
    let long = [MemoryEntry { content: "ada is a mathematician".into(), importance: Some(12) }];
    let mut tx = begin_immediate(&db.pool).await.unwrap();
    assert!(memories::replace(&mut tx, character_id, Some(0), &short, &long).await.unwrap());
    tx.commit().await.unwrap();
    let loaded = memories::load(&db.pool, character_id).await.unwrap();
    assert_eq!(loaded.version, 1);
    assert_eq!(loaded.short_term, short);
    assert_eq!(loaded.long_term, long);

    // A compression that read version 0 is refused and changes nothing.
    let mut tx = begin_immediate(&db.pool).await.unwrap();
    assert!(!memories::replace(&mut tx, character_id, Some(0), &[], &[]).await.unwrap());
    tx.commit().await.unwrap();
    assert_eq!(memories::load(&db.pool, character_id).await.unwrap().short_term, short);
    // A user's edit is unconditional.
    let mut tx = begin_immediate(&db.pool).await.unwrap();
    assert!(memories::replace(&mut tx, character_id, None, &[MemoryEntry::new("only")], &[]).await.unwrap());
    tx.commit().await.unwrap();
    let edited = memories::load(&db.pool, character_id).await.unwrap();
    assert_eq!((edited.version, edited.short_term.len(), edited.long_term.len()), (2, 1, 0));
    let mut tx = begin_immediate(&db.pool).await.unwrap();
    assert!(!memories::replace(&mut tx, CharacterId::new(), None, &[], &[]).await.unwrap(), "no such character");
}

// ---- groups -----------------------------------------------------------------------------------

#[tokio::test]
async fn groups_members_transcript_and_memory_cursors() {
    let db = test_db().await;
    let ada = user(&db.pool, "ada").await;
    let eve = user(&db.pool, "eve").await;
    let alice = character(&db.pool, ada, "alice").await;
    let bob = character(&db.pool, ada, "bob").await;
    let mallory = character(&db.pool, eve, "mallory").await;
    let group_id = GroupId::new();
    groups::insert(&db.pool, group_id, ada, "tea party").await.unwrap();

    assert_eq!(groups::count_owned_characters(&db.pool, ada, &[alice, bob, mallory, alice]).await.unwrap(), 2);
    assert_eq!(groups::add_members(&db.pool, ada, group_id, &[alice, mallory]).await.unwrap(), 1, "not eve's");
    assert_eq!(groups::add_members(&db.pool, eve, group_id, &[mallory]).await.unwrap(), 0, "not eve's group");
    assert_eq!(groups::add_members(&db.pool, ada, group_id, &[alice]).await.unwrap(), 0, "already a member");

    let user_message = |message_id, content| NewGroupMessage {
        message_id,
        group_id,
        user_id: ada,
        character_id: None,
        speaker_name: "ada",
        content,
        moderator: None,
        prompt_snapshot: None,
        job_round: None,
        truncated: false,
        prompt_version: None,
    };
    let m1 = MessageId::new();
    groups::insert_message(&db.pool, user_message(m1, "hello all")).await.unwrap();
    let turn = JobId::new();
    let decision = json!({"next_speaker": "alice", "confidence": 0.9});
    let m2 = MessageId::new();
    let spoken = NewGroupMessage {
        message_id: m2,
        group_id,
        user_id: ada,
        character_id: Some(alice),
        speaker_name: "alice",
        content: "hi ada",
        moderator: Some(&decision),
        prompt_snapshot: Some("prompt"),
        job_round: Some((turn, 1)),
        truncated: true,
        prompt_version: Some("zh-1"),
    };
    groups::insert_message(&db.pool, spoken).await.unwrap();
    let again = NewGroupMessage { message_id: MessageId::new(), ..user_message(MessageId::new(), "x") };
    let again = NewGroupMessage { character_id: Some(alice), job_round: Some((turn, 1)), ..again };
    let error = groups::insert_message(&db.pool, again).await.unwrap_err();
    assert!(is_unique_violation(&error, "group_messages_job_id_round_key"), "{error}");
    assert_eq!(groups::rounds_done(&db.pool, turn).await.unwrap(), 1);
    assert_eq!(groups::rounds_done(&db.pool, JobId::new()).await.unwrap(), 0);

    // Bob joins later: his memory starts at the newest message.
    assert_eq!(groups::add_members(&db.pool, ada, group_id, &[bob]).await.unwrap(), 1);
    let members = groups::members(&db.pool, group_id).await.unwrap();
    assert_eq!(members.iter().map(|m| m.character_id).collect::<Vec<_>>(), [alice, bob], "in joining order");
    assert_eq!((members[0].absorbed_upto, members[1].absorbed_upto), (None, Some(m2)));

    let m3 = MessageId::new();
    groups::insert_message(&db.pool, user_message(m3, "ünïcode")).await.unwrap();
    let history = groups::history(&db.pool, group_id, None, 2).await.unwrap();
    assert_eq!(history.iter().map(|m| m.message_id).collect::<Vec<_>>(), [m3, m2]);
    assert_eq!((history[1].author.as_str(), history[1].round, history[1].job_id), ("character", Some(1), Some(turn)));
    assert_eq!(history[1].moderator, Some(decision.clone()));
    assert_eq!((history[1].truncated, history[1].prompt_version.as_deref()), (true, Some("zh-1")));
    assert_eq!((history[0].truncated, history[0].prompt_version.as_deref()), (false, None));
    let older = groups::history(&db.pool, group_id, Some(m2), 2).await.unwrap();
    assert_eq!(older.iter().map(|m| m.message_id).collect::<Vec<_>>(), [m1]);
    let after = groups::messages_after(&db.pool, group_id, Some(m1), 10).await.unwrap();
    assert_eq!(after.iter().map(|m| m.message_id).collect::<Vec<_>>(), [m2, m3]);
    assert_eq!(groups::messages_after(&db.pool, group_id, None, 1).await.unwrap()[0].message_id, m1);
    assert_eq!(groups::pending_size(&db.pool, group_id, None).await.unwrap(), (3, 9 + 6 + 7));
    assert_eq!(groups::pending_size(&db.pool, group_id, Some(m2)).await.unwrap(), (1, 7));
    // The turn that m3 started.
    let later_turn = JobId::new();
    assert_eq!(groups::message_of_turn(&db.pool, group_id, later_turn).await.unwrap().unwrap().message_id, m3);
    assert_eq!(groups::message_of_turn(&db.pool, group_id, turn).await.unwrap().unwrap().message_id, m1);

    // Memory cursors move only from where the mover read them (null included).
    assert!(!groups::advance_absorbed(&db.pool, group_id, alice, Some(m1), m2).await.unwrap());
    assert!(groups::advance_absorbed(&db.pool, group_id, alice, None, m2).await.unwrap());
    assert!(!groups::advance_absorbed(&db.pool, group_id, alice, None, m3).await.unwrap());
    assert!(groups::advance_absorbed(&db.pool, group_id, alice, Some(m2), m3).await.unwrap());

    // Owner scoping.
    assert!(groups::get(&db.pool, eve, group_id).await.unwrap().is_none());
    assert!(!groups::rename(&db.pool, eve, group_id, "mine").await.unwrap());
    assert!(!groups::remove_member(&db.pool, eve, group_id, alice).await.unwrap());
    assert!(!groups::delete(&db.pool, eve, group_id).await.unwrap());
    assert!(groups::rename(&db.pool, ada, group_id, "book club").await.unwrap());
    assert_eq!(groups::get(&db.pool, ada, group_id).await.unwrap().unwrap().name, "book club");
    let second = GroupId::new();
    groups::insert(&db.pool, second, ada, "second").await.unwrap();
    let listed = groups::list(&db.pool, ada).await.unwrap();
    assert_eq!(listed.iter().map(|g| g.group_id).collect::<Vec<_>>(), [second, group_id]);
    assert!(groups::list(&db.pool, eve).await.unwrap().is_empty());
    assert_eq!(groups::count(&db.pool, ada).await.unwrap(), 2);

    assert!(groups::remove_member(&db.pool, ada, group_id, alice).await.unwrap());
    assert!(!groups::remove_member(&db.pool, ada, group_id, alice).await.unwrap());
    assert!(groups::delete(&db.pool, ada, group_id).await.unwrap());
    let left: i64 = sqlx::query_scalar("select count(*) from group_messages").fetch_one(&db.pool).await.unwrap();
    assert_eq!(left, 0, "the transcript goes with its group");
}

// ---- stats ------------------------------------------------------------------------------------

#[tokio::test]
async fn stats_count_across_users() {
    let db = test_db().await;
    let ada = user(&db.pool, "ada").await;
    let eve = user(&db.pool, "eve").await;
    users::make_sole_admin(&db.pool, ada).await.unwrap();
    users::disable(&db.pool, eve).await.unwrap();
    let c1 = character(&db.pool, ada, "c1").await;
    character(&db.pool, eve, "c2").await;
    characters::mark_ready(&mut db.pool.acquire().await.unwrap(), c1, &json!({}), "b", None).await.unwrap();
    messages::insert_user_message(&db.pool, MessageId::new(), ada, c1, "hi").await.unwrap();
    let done = job(&db.pool, ada, None).await;
    let claim = jobs::claim(&db.pool, done, LEASE).await.unwrap().unwrap();
    jobs::succeed(&mut *connection(&db.pool).await, &claim, &json!({})).await.unwrap();
    let failed = job(&db.pool, ada, None).await;
    jobs::fail_unclaimed(&db.pool, failed, &JobError::new("x", "y")).await.unwrap();
    job(&db.pool, eve, None).await;
    // Finished two hours ago: not in the last hour.
    let old = job(&db.pool, ada, None).await;
    jobs::fail_unclaimed(&db.pool, old, &JobError::new("x", "y")).await.unwrap();
    sqlx::query("update jobs set finished_at = ?2 where job_id = ?1")
        .bind(old.0)
        .bind(minus(now(), Duration::from_secs(7200)))
        .execute(&db.pool)
        .await
        .unwrap();

    let totals = stats::totals(&db.pool).await.unwrap();
    assert_eq!((totals.users, totals.disabled_users, totals.admins, totals.messages), (2, 1, 1, 1));
    assert_eq!((totals.groups, totals.group_messages), (0, 0));
    assert_eq!((totals.jobs_finished_last_hour, totals.jobs_failed_last_hour), (2, 1));
    let by_status = stats::characters_by_status(&db.pool).await.unwrap();
    assert_eq!(by_status.into_iter().collect::<Vec<_>>(), [("generating".to_owned(), 1), ("ready".to_owned(), 1)]);
    let by_kind = stats::jobs_by_kind_and_status(&db.pool).await.unwrap();
    let chat = &by_kind["chat_reply"];
    assert_eq!((chat["succeeded"], chat["failed"], chat["queued"]), (1, 2, 1));
}

// ---- the event log ----------------------------------------------------------------------------

#[tokio::test]
async fn event_logs_number_per_job_resume_and_prune() {
    let db = test_db().await;
    let ada = user(&db.pool, "ada").await;
    let first = job(&db.pool, ada, None).await;
    let second = job(&db.pool, ada, None).await;
    for n in 1..=3u64 {
        assert_eq!(events::append(&db.pool, first, "progress", &json!({"done": n})).await.unwrap(), n);
    }
    assert_eq!(events::append(&db.pool, second, "status", &json!({"status": "queued"})).await.unwrap(), 1);
    let error = events::append(&db.pool, JobId::new(), "status", &json!({})).await.unwrap_err();
    assert!(matches!(&error, sqlx::Error::Database(e) if e.is_foreign_key_violation()), "{error}");

    let all = events::read_after(&db.pool, first, 0, 100).await.unwrap();
    assert_eq!(all.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(all[0], (1, "progress".to_owned(), json!({"done": 1})));
    let resumed = events::read_after(&db.pool, first, 1, 1).await.unwrap();
    assert_eq!(resumed, [(2, "progress".to_owned(), json!({"done": 2}))]);
    assert!(events::read_after(&db.pool, first, 3, 100).await.unwrap().is_empty());
    assert!(events::read_after(&db.pool, first, u64::MAX, 100).await.unwrap().is_empty());

    // Only logs of jobs finished before the cut-off go.
    jobs::fail_unclaimed(&db.pool, first, &JobError::new("x", "y")).await.unwrap();
    assert_eq!(events::prune(&db.pool, minus(now(), Duration::from_secs(60))).await.unwrap(), 0);
    tick().await;
    assert_eq!(events::prune(&db.pool, now()).await.unwrap(), 3);
    assert!(events::read_after(&db.pool, first, 0, 100).await.unwrap().is_empty());
    assert_eq!(events::read_after(&db.pool, second, 0, 100).await.unwrap().len(), 1, "still queued");

    // And a job's log goes with the job.
    let character_id = character(&db.pool, ada, "c").await;
    let owned = NewJob { character_id: Some(character_id), ..new_job(ada, JobKind::GenerateCharacter) };
    let owned_id = owned.job_id;
    jobs::insert(&db.pool, owned).await.unwrap();
    events::append(&db.pool, owned_id, "status", &json!({})).await.unwrap();
    characters::delete(&db.pool, ada, character_id).await.unwrap();
    let left: i64 = sqlx::query_scalar("select count(*) from job_events where job_id = ?1")
        .bind(owned_id.0)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

/// One statement appends a batch: a job's events in it continue its numbering in the order
/// given, however they interleave with other jobs' (a first job appears first, a later one
/// between), and an event of a gone job stores nothing of the batch.
#[tokio::test]
async fn events_appended_in_one_statement_continue_each_jobs_numbering_in_order() {
    let db = test_db().await;
    let ada = user(&db.pool, "ada").await;
    let (first, second) = (job(&db.pool, ada, None).await, job(&db.pool, ada, None).await);
    for n in 1..=2 {
        events::append(&db.pool, first, "progress", &json!({"done": n})).await.unwrap();
    }
    let data: Vec<Value> = (0..6).map(|n| json!({"n": n, "text": format!("第{n}个")})).collect();
    let order = [second, first, second, first, first, second];
    let batch: Vec<events::NewEvent<'_>> =
        order.iter().zip(&data).map(|(&job_id, data)| events::NewEvent { job_id, event_type: "token", data }).collect();
    let seqs = events::append_all(&db.pool, &batch).await.unwrap();
    assert_eq!(seqs, [1, 3, 2, 4, 5, 3], "each job's numbers follow its own last one, in batch order");
    let logged = |seqs_and_data: &[(u64, usize)]| -> Vec<(u64, String, Value)> {
        seqs_and_data.iter().map(|&(seq, n)| (seq, "token".to_owned(), data[n].clone())).collect()
    };
    assert_eq!(events::read_after(&db.pool, first, 2, 100).await.unwrap(), logged(&[(3, 1), (4, 3), (5, 4)]));
    assert_eq!(events::read_after(&db.pool, second, 0, 100).await.unwrap(), logged(&[(1, 0), (2, 2), (3, 5)]));

    let gone = JobId::new();
    let refused = [
        events::NewEvent { job_id: first, event_type: "token", data: &data[0] },
        events::NewEvent { job_id: gone, event_type: "token", data: &data[1] },
    ];
    let error = events::append_all(&db.pool, &refused).await.unwrap_err();
    assert!(matches!(&error, sqlx::Error::Database(e) if e.is_foreign_key_violation()), "{error}");
    assert_eq!(events::read_after(&db.pool, first, 0, 100).await.unwrap().len(), 5, "nothing of the batch stored");
}

// ---- concurrency ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_queue_for_the_lock_instead_of_failing() {
    let db = test_db().await;
    let ada = user(&db.pool, "ada").await;
    let log = job(&db.pool, ada, None).await;
    let contested = job(&db.pool, ada, None).await;
    let character_id = character(&db.pool, ada, "c").await;

    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..20 {
        let pool = db.pool.clone();
        tasks.spawn(async move {
            // An event, a claim of one shared job, and a read-then-write transaction each.
            let seq = events::append(&pool, log, "token", &json!({"n": n})).await?;
            let claimed = jobs::claim(&pool, contested, LEASE).await?.is_some();
            let mut tx = begin_immediate(&pool).await?;
            let memory = memories::load(&mut *tx, character_id).await?;
            let entry = MemoryEntry::new(format!("entry {n}"));
            let replaced = memories::replace(&mut tx, character_id, Some(memory.version), &[entry], &[]).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>((seq, claimed, replaced))
        });
    }
    let mut seqs = Vec::new();
    let mut claims = 0;
    while let Some(outcome) = tasks.join_next().await {
        let (seq, claimed, replaced) = outcome.unwrap().expect("no SQLITE_BUSY");
        seqs.push(seq);
        claims += usize::from(claimed);
        assert!(replaced, "an immediate transaction's read is still current when it writes");
    }
    seqs.sort();
    assert_eq!(seqs, (1..=20).collect::<Vec<u64>>());
    assert_eq!(claims, 1, "exactly one worker wins a job");
    assert_eq!(memories::load(&db.pool, character_id).await.unwrap().version, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_message_holds_off_other_writers_until_the_transaction_ends() {
    let db = test_db().await;
    let ada = user(&db.pool, "ada").await;
    let character_id = character(&db.pool, ada, "c").await;
    let message_id = MessageId::new();
    messages::insert_user_message(&db.pool, message_id, ada, character_id, "retry me").await.unwrap();

    // Even in a deferred transaction (as `pool.begin()` makes), the lock is taken at once.
    let mut tx = db.pool.begin().await.unwrap();
    jobs::lock_message(&mut *tx, message_id).await.unwrap();

    // A writer that does not wait (busy timeout 0, on a connection of its own that never goes
    // back to the pool) is refused at once with SQLITE_BUSY while the lock is held: no sleep.
    let mut impatient = connection(&db.pool).await.detach();
    sqlx::query("PRAGMA busy_timeout = 0").execute(&mut impatient).await.unwrap();
    let retry = || NewJob { message_id: Some(message_id), ..new_job(ada, JobKind::ChatReply) };
    let error = jobs::insert(&mut impatient, retry()).await.expect_err("the lock holder keeps other writers out");
    let code = error.as_database_error().and_then(|e| e.code()).and_then(|code| code.parse::<u32>().ok());
    assert_eq!(code.map(|code| code & 0xff), Some(5), "SQLITE_BUSY, not another error: {error}");

    // A writer that waits (the pool's busy timeout) queues behind the lock holder.
    let pool = db.pool.clone();
    let other = tokio::spawn(async move {
        let retry = NewJob { message_id: Some(message_id), ..new_job(ada, JobKind::ChatReply) };
        jobs::insert(&pool, retry).await
    });
    assert!(!jobs::message_answered_or_pending(&mut *tx, message_id).await.unwrap());
    let first = NewJob { message_id: Some(message_id), ..new_job(ada, JobKind::ChatReply) };
    jobs::insert(&mut *tx, first).await.unwrap();
    tx.commit().await.unwrap();
    other.await.unwrap().expect("the waiting writer goes on once the transaction ends");
    jobs::insert(&mut impatient, retry()).await.expect("the lock is free after the commit");
    assert_eq!(jobs::active_count(&db.pool, ada).await.unwrap(), 3);
}

// ---- the event log's writer -------------------------------------------------------------------

/// Many jobs appending at once land in shared batches: each job's events must still be numbered
/// 1, 2, 3, … without gaps, reach listeners in that order after they are stored, and an append
/// that fails (its job is gone) must fail alone, not take its batch with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_appends_keep_each_jobs_order_and_fail_alone() {
    use fastnpc_shared::{
        event_bus::{EventHub, EventLog},
        events::EventPayload,
    };
    let db = test_db().await;
    let store = store_of(&db).await;
    let ada = user(&db.pool, "ada").await;
    let hub = EventHub::in_process();
    let log = crate::SqliteEventLog::new(&store, hub.clone());
    const JOBS: usize = 40;
    const EVENTS: u64 = 30;
    let mut job_ids = Vec::new();
    for _ in 0..JOBS {
        job_ids.push(job(&db.pool, ada, None).await);
    }
    let mut listeners: Vec<_> = job_ids.iter().map(|&job_id| hub.subscribe(job_id)).collect();

    let token = |n: u64| EventPayload::Token { text: format!("{n} "), speaker: None };
    let mut appenders = tokio::task::JoinSet::new();
    for &job_id in &job_ids {
        let log = log.clone();
        appenders.spawn(async move {
            let mut seqs = Vec::new();
            for n in 1..=EVENTS {
                seqs.push(log.append(job_id, &token(n)).await.expect("append"));
            }
            seqs
        });
    }
    // Appends to a job that does not exist, racing the others into their batches.
    let mut strays = tokio::task::JoinSet::new();
    for n in 0..20 {
        let log = log.clone();
        strays.spawn(async move { log.append(JobId::new(), &token(n)).await });
    }
    while let Some(seqs) = appenders.join_next().await {
        assert_eq!(seqs.unwrap(), (1..=EVENTS).collect::<Vec<_>>(), "each job's appends numbered in order");
    }
    while let Some(stray) = strays.join_next().await {
        let error = stray.unwrap().expect_err("an append to a missing job fails");
        assert!(error.to_string().contains("FOREIGN KEY"), "{error}");
    }

    for (job_id, listener) in job_ids.iter().zip(&mut listeners) {
        let stored = log.read_after(*job_id, 0).await.unwrap();
        let texts: Vec<_> = stored.iter().map(|event| event.payload.clone()).collect();
        assert_eq!(texts, (1..=EVENTS).map(token).collect::<Vec<_>>());
        for seq in 1..=EVENTS {
            let live = listener.events.try_recv().expect("every stored event reached the listener");
            assert_eq!((live.seq, &live.payload), (seq, &token(seq)), "live events in the stored order");
        }
    }
    let total: i64 = sqlx::query_scalar("select count(*) from job_events").fetch_one(&db.pool).await.unwrap();
    assert_eq!(total, (JOBS as u64 * EVENTS) as i64, "nothing stored for the missing job, nothing lost");
}
