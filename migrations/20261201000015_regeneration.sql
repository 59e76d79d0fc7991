-- Regeneration: a job that rewrites chosen categories of a ready character, and the parameters
-- a job runs with (which categories), kept on the job so a retry repeats the same request.
--
-- The widened check is added `not valid` and validated after, so the table is scanned under a
-- lock that lets other transactions go on, not under the exclusive lock `add constraint` takes.
alter table jobs drop constraint jobs_kind_check;
alter table jobs add constraint jobs_kind_check
    check (kind in ('generate_character', 'chat_reply', 'compress_memory', 'group_turn', 'compress_group_memory',
                    'regenerate_character')) not valid;
alter table jobs validate constraint jobs_kind_check;

alter table jobs add column params jsonb;
