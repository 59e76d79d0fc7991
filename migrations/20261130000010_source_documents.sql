-- Sources fetched from the web (issue 13).
--
-- characters.source_snapshot: the document a character was built from (URL, revision, time,
-- size, hash, the Markdown itself), so its owner can see what the persona rests on and a retried
-- job does not fetch again. Null for pasted text, and until the job fetched it.
--
-- source_documents: fetched documents by the address they were fetched from, reused for another
-- character of the same source while younger than the configured age (FASTNPC_SOURCE_CACHE_SECS).
-- Not per user: what a public address answers is the same for everyone who names it.
alter table characters add column source_snapshot jsonb;

create table source_documents (
    url text primary key,
    snapshot jsonb not null,
    fetched_at timestamptz not null
);

create index source_documents_fetched_at on source_documents (fetched_at);
