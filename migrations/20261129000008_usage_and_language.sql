-- What the LLM costs, what it cut short, and which language and prompt set wrote what.

-- Tokens a job's LLM calls spent, summed over all its attempts: an attempt that was handed back
-- (shutdown, a transient failure) spent real tokens too. Added in the same statement that ends or
-- hands back an attempt, so a worker that lost its claim adds nothing.
alter table jobs
    add column usage_calls             bigint not null default 0,
    add column usage_prompt_tokens     bigint not null default 0,
    add column usage_completion_tokens bigint not null default 0;

-- A user's spend per UTC day: what the daily token budget (FASTNPC_LIMIT_DAILY_TOKENS) and
-- GET /v1/me/usage read. A table of its own rather than a sum over jobs, because jobs are deleted
-- with their character: the spend must not vanish with them, or deleting a character would
-- reset the budget. Written in the same statement as the job's usage.
create table llm_usage_daily (
    user_id           uuid not null references users (user_id) on delete cascade,
    -- The UTC calendar day the attempts ended on.
    day               date not null,
    calls             bigint not null default 0,
    prompt_tokens     bigint not null default 0,
    completion_tokens bigint not null default 0,
    primary key (user_id, day)
);

-- truncated: the reply stopped at the output limit (finish reason `length`), so the user can be
-- told it is cut rather than left wondering. prompt_version: the prompt set that wrote the reply,
-- to tell replies of different prompt revisions apart; null for user messages and for replies
-- written before prompts were versioned.
alter table messages
    add column truncated      boolean not null default false,
    add column prompt_version text;
alter table group_messages
    add column truncated      boolean not null default false,
    add column prompt_version text;

-- language: the language the character's profile is written in and the character speaks; every
-- character before this migration was generated with the Chinese prompts. prompt_version: the
-- prompt set that wrote the profile (null until generated), so profiles written by an older set
-- can be found and regenerated.
alter table characters
    add column language       text not null default 'zh' check (language in ('zh', 'en')),
    add column prompt_version text;
