-- What a chat reply's prompt is built from, as one row: the character, the user, the text of
-- the message answered, both memory layers (a JSON array of {layer, content, importance} in
-- layer and position order) and the session layer before the message (a JSON array of
-- {author, content}, oldest first: the newest `p_session_limit` uncompressed messages, each
-- reply after the message it answers). No row when the character, the user or the message is
-- gone, or the message is not the user's.
--
-- The one definition of a reply's context that two statements share: the read of a round of
-- replies' contexts, and the claim of a round of jobs, which reads a chat reply's context with
-- it (one round-trip fewer before the model's request). A `language sql`, `stable`, non-strict
-- set-returning function is inlined into the calling query by the planner, so it costs nothing
-- over writing the query out, and it reads from the calling statement's snapshot.
create function chat_reply_context(p_user_id uuid, p_character_id uuid, p_message_id uuid, p_session_limit bigint)
returns table (
    character_id uuid, character_user_id uuid, name text, status text, source jsonb, profile jsonb,
    brief text, language text, prompt_version text, source_snapshot jsonb, version bigint,
    created_at timestamptz, updated_at timestamptz, memory_version bigint,
    user_id uuid, username text, bio text, ctx_max_chat integer, ctx_max_stm integer, ctx_max_ltm integer,
    max_group_rounds integer, user_language text, is_admin boolean, user_created_at timestamptz,
    message text, memories jsonb, session jsonb
)
language sql stable as $$
    select c.character_id, c.user_id, c.name, c.status, c.source, c.profile,
           c.brief, c.language, c.prompt_version, c.source_snapshot, c.version,
           c.created_at, c.updated_at, c.memory_version,
           u.user_id, u.username, u.bio, u.ctx_max_chat, u.ctx_max_stm, u.ctx_max_ltm,
           u.max_group_rounds, u.language, u.is_admin, u.created_at,
           m.content,
           (select coalesce(jsonb_agg(jsonb_build_object('layer', e.layer, 'content', e.content,
                                                         'importance', e.importance)
                                      order by e.layer, e.position), '[]')
            from memories e where e.character_id = c.character_id),
           (select coalesce(jsonb_agg(jsonb_build_object('author', s.author, 'content', s.content)
                                      order by coalesce(s.reply_to, s.message_id), s.author = 'character'),
                            '[]')
            from (select author, content, message_id, reply_to from messages
                  where character_id = c.character_id and not compressed
                    and message_id <> p_message_id and not (author = 'user' and message_id > p_message_id)
                  order by coalesce(reply_to, message_id) desc, author = 'character' desc
                  limit p_session_limit) s)
    from characters c
    join users u on u.user_id = p_user_id
    join messages m on m.message_id = p_message_id and m.user_id = p_user_id
    where c.character_id = p_character_id
$$;
