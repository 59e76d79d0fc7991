-- Sources fetched from the web (issue 13); see the Postgres migration of the same name.
alter table characters add column source_snapshot text;

create table source_documents (
    url text primary key,
    snapshot text not null,
    fetched_at text not null
);

create index source_documents_fetched_at on source_documents (fetched_at);
