-- What the LLM costs, what it cut short, and which language and prompt set wrote what (SQLite
-- translation of migrations/20261129000008_usage_and_language.sql; the reasons are there).
--
-- SQLite adds one column per statement. The jobs' usage is added by the statement that ends or
-- hands back an attempt; the day's row is upserted in the same transaction.

alter table jobs add column usage_calls integer not null default 0;
alter table jobs add column usage_prompt_tokens integer not null default 0;
alter table jobs add column usage_completion_tokens integer not null default 0;

-- `day` is the UTC date as `YYYY-MM-DD` text (what sqlx writes for a `NaiveDate`), computed in
-- Rust like every time here; that text sorts in date order.
create table llm_usage_daily (
    user_id           blob not null references users (user_id) on delete cascade,
    day               text not null check (day glob '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'),
    calls             integer not null default 0,
    prompt_tokens     integer not null default 0,
    completion_tokens integer not null default 0,
    primary key (user_id, day)
) strict, without rowid;

alter table messages add column truncated integer not null default 0 check (truncated in (0, 1));
alter table messages add column prompt_version text;
alter table group_messages add column truncated integer not null default 0 check (truncated in (0, 1));
alter table group_messages add column prompt_version text;

alter table characters add column language text not null default 'zh' check (language in ('zh', 'en'));
alter table characters add column prompt_version text;
