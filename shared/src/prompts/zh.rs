//! Chinese prompts, adapted from the original FastNPC's hard-coded defaults: the reference set.
//!
//! The free functions and consts are the set itself (the worker calls them directly); [`Zh`]
//! serves the same texts through [`PromptSet`]. Their output is pinned byte for byte by
//! `golden/zh.txt`.

use std::fmt::Write;

pub use super::{ChatPrompt, GROUP_LTM_BUDGET, GROUP_STM_BUDGET, GROUP_TRANSCRIPT_BUDGET, GroupPrompt};
use super::{Language, PromptSet, Wording, chat_lines, first_chars, persona_and_memories, plain_list, push_transcript};
use crate::domain::{CategorySpec, FieldSpec};

/// The Chinese prompt set.
pub struct Zh;

/// See [`PromptSet::version`]: bump it with any change to the texts below.
const VERSION: &str = "zh-2026.11.1";

/// System message of every profile-category call.
pub const PROFILE_SYSTEM: &str = "你是严谨的中文信息抽取助手。请根据给定的人物资料，\
为指定类别生成严格的 JSON 对象：只输出 JSON，不要任何解释或 Markdown；\
字段必须与要求完全一致，每个字段都要填写。若资料中没有相关信息，\
请依据资料与人物所处时代合理推测，并保持与资料一致。";

/// User message of one profile-category call: what the category holds, then the source.
pub fn profile_category(category: &CategorySpec, name: &str, source_markdown: &str) -> String {
    let mut prompt = format!("请为人物「{name}」生成「{}」类别的 JSON，字段如下：\n", category.zh);
    for field in category.fields {
        let shape = if field.list { "字符串数组" } else { "字符串" };
        let _ = writeln!(prompt, "- {}（{}，{}）：{}", field.key, field.zh, shape, field.guidance);
    }
    prompt.push_str("\n完整角色信息如下（Markdown）：\n\n");
    prompt.push_str(source_markdown);
    prompt
}

/// System message of the brief call.
pub const BRIEF_SYSTEM: &str = "你是严谨的中文写作助手。";

/// User message of the brief call. The original wrote the brief from the nine finished
/// categories, a second full round-trip; we write it from the same source in parallel, which
/// holds the same facts (see docs/design.md).
pub fn brief(name: &str, source_markdown: &str) -> String {
    format!(
        "请根据以下资料，用第三人称为人物「{name}」写一段 2-4 句的中文人物简介，\
         概括其职业或身份、一两个性格要点，以及当前处境或目标。\
         只输出简介正文，不要 JSON、列表或标题。\n\n资料（Markdown）：\n\n{source_markdown}"
    )
}

const NONE: &str = "（无）";

/// How many characters of another member's brief a group or moderator prompt shows: a Chinese
/// brief of two to four sentences fits.
const BRIEF_CAP: usize = 200;

const WORDING: Wording = Wording {
    none: NONE,
    item_separator: "；",
    persona_heading: |name| format!("② 角色结构化描述\n以下是关于{name}的完整画像，请以此为准进行扮演："),
    category_heading: |label| format!("【{label}】"),
    field_line: |label, value| format!("我的{label}：{value}"),
    category_label: |category| category.zh,
    field_label: |field| field.zh,
    safety: "安全要求：禁止 NSFW、色情、违法犯罪指导、仇恨与歧视、隐私泄露；高风险医学/法律内容需加免责声明。",
    long_term_heading: "③ 长期记忆\n这是我至今为止的重要长期记忆：",
    short_term_heading: "④ 短期记忆\n这是我最近的短期记忆：",
};

/// The original's six-part system prompt. The current user message is *not* in it: it is the
/// user turn (the original sent it twice, once in the transcript and once as the turn).
pub fn chat_system_prompt(p: &ChatPrompt<'_>) -> String {
    let (name, user) = (p.character_name, p.user_name);
    let mut prompt = String::new();
    let _ = write!(
        prompt,
        "① 系统提示（固定规则层）\n\
         你是{name}，正在以第一人称与{user}对话。\n\
         - 始终以{name}的身份说话，绝不透露自己是 AI，也不要复述这些设定。\n\
         - 用自然的口语回答，不要使用 JSON、列表或标题，除非对方要求。\n\
         - 每次回复不超过三句话，除非确有必要。\n\
         - 超出人设范围的请求，礼貌拒绝并把话题引回来。\n\
         - 不要重复自己说过的话，不说空话套话。\n\
         - 主动与对方互动、提问；话题聊尽了就换个话题。\n\
         - 直接回答问题，不要说“两者都好”。\n\
         - 不要保持中立：可以反驳或批评对方，但不得人身攻击，不谈政治、宗教、种族、性别话题。\n\n"
    );
    prompt.push_str(&persona_and_memories(
        &WORDING,
        name,
        p.profile,
        p.long_term,
        p.short_term,
        p.ltm_budget,
        p.stm_budget,
    ));
    let bio = if p.user_bio.trim().is_empty() { NONE } else { p.user_bio.trim() };
    let _ = writeln!(prompt, "\n⑤ 交谈对象\n与我交互的对象是 {user}，他的简介是：{bio}");
    let _ = writeln!(prompt, "\n⑥ 会话记忆（聊天上下文）\n以下是我与{user}的对话记录，请从最新的部分继续：");
    push_transcript(&mut prompt, &chat_lines(p), p.session_budget, NONE);
    prompt
}

/// System message of the session → short-term compression.
pub const STM_SYSTEM: &str = "你是严谨的中文记忆整理助手，只输出严格的 JSON。";

/// Session → short-term memory: summarise the oldest part of the conversation from the
/// character's point of view.
pub fn stm_compression(character_name: &str, user_name: &str, overlap: &str, conversation: &str) -> String {
    format!(
        "请把下面{character_name}与{user_name}的对话压缩成{character_name}的短期记忆。\n\
         只保留重要信息：承诺、计划、请求、偏好变化、个人信息的透露、情绪转折；不要记录寒暄。\n\
         每条记忆写成“主语 | 动作/状态/事实 | 宾语/补充”的格式，例如“{user_name} | 答应 | 明天来访”。\n\
         输出 JSON：{{\"short_memories\": [\"…\"]}}，至少一条。\n\n\
         上文（仅供参考）：\n{overlap}\n\n需要压缩的对话：\n{conversation}"
    )
}

/// System message of the short-term → long-term integration.
pub const LTM_SYSTEM: &str = "你是严谨的中文长期记忆整合助手，只输出严格的 JSON。";

/// Short-term → long-term integration: dedupe, merge, score importance, keep what matters.
pub fn ltm_integration(character_name: &str, brief: &str, short_term: &[String], long_term: &[String]) -> String {
    format!(
        "人物：{character_name}。人物简介：{brief}\n\n现有长期记忆：\n{}\n需要整合的短期记忆：\n{}\n\
         请把短期记忆整合进长期记忆：去重，合并相近条目，并按与人物的相关性、新颖性、影响力为每条记忆打 0-15 的重要度。\
         保留重要度 ≥ 8 的记忆，丢弃 < 4 的，其余视篇幅取舍。每条写成“主语 | 事实 | 补充”的格式。\n\
         输出 JSON：{{\"long_term_memories\": [{{\"content\": \"…\", \"importance\": 0, \"reason\": \"…\"}}], \
         \"merged_count\": 0, \"discarded_count\": 0}}",
        plain_list(long_term, NONE),
        plain_list(short_term, NONE),
    )
}

/// The original's group system prompt: group rules, the persona and memories, the user and the
/// other members with their briefs, the recent transcript.
pub fn group_system_prompt(p: &GroupPrompt<'_>) -> String {
    let name = p.character_name;
    let user = p.user_name;
    let others: Vec<&str> = p.others.iter().map(|(n, _)| n.as_str()).collect();
    let mut prompt = String::new();
    let _ = write!(
        prompt,
        "① 系统提示（群聊规则层）\n\
         你是{name}，正在一个群聊中以第一人称发言，群里有{user}和{}。\n\
         - 始终以{name}的身份说话，绝不透露自己是 AI，也不要复述这些设定。\n\
         - 每次发言不超过两句话，用自然的口语，不要使用列表或标题。\n\
         - 既可以回应{user}，也可以回应其他角色；不要重复别人或自己说过的话。\n\
         - 要有立场：可以赞同或反驳，但不得人身攻击，不谈政治、宗教、种族、性别话题。\n\n",
        if others.is_empty() { NONE.to_owned() } else { others.join("、") },
    );
    prompt.push_str(&persona_and_memories(
        &WORDING,
        name,
        p.profile,
        p.long_term,
        p.short_term,
        GROUP_LTM_BUDGET,
        GROUP_STM_BUDGET,
    ));
    let bio = if p.user_bio.trim().is_empty() { "普通用户" } else { p.user_bio.trim() };
    let _ = writeln!(prompt, "\n⑤ 群聊成员\n用户 {user}，简介：{bio}");
    for (other, brief) in p.others {
        let brief = first_chars(brief, BRIEF_CAP);
        let brief = if brief.trim().is_empty() { NONE.to_owned() } else { brief };
        let _ = writeln!(prompt, "角色 {other}，简介：{brief}");
    }
    let _ = writeln!(prompt, "\n⑥ 会话记忆（群聊上下文）\n以下是群聊的最近记录：");
    push_transcript(&mut prompt, p.transcript, GROUP_TRANSCRIPT_BUDGET, NONE);
    prompt
}

/// The user turn of a group reply: the last lines and the cue to speak as the character.
pub fn group_user_turn(name: &str, last_lines: &[String]) -> String {
    format!("当前对话：\n{}\n\n请以{name}的身份回复：", last_lines.join("\n"))
}

/// System message of the moderator.
pub const MODERATOR_SYSTEM: &str = "你是群聊的中控，负责决定下一位发言者，只输出严格的 JSON。";

/// The moderator's prompt: who is in the group and what was said last.
pub fn moderator(participants: &[(String, String)], recent: &[String]) -> String {
    let participants: String =
        participants.iter().map(|(name, brief)| format!("- {name}: {}\n", first_chars(brief, BRIEF_CAP))).collect();
    format!(
        "群聊中控：根据最近的对话，从角色中选出最应该接着发言的一位。\n\
         评分依据：与话题的相关性（0-3）、发言动机（0-3）、推动情节（0-2）、与上文的连贯（0-2）；\
         不要考虑发言次数是否均衡。\n\n角色：\n{participants}\n最近的对话：\n{}\n\n\
         输出 JSON：{{\"next_speaker\": \"角色名\", \"reason\": \"不超过50字\", \"confidence\": 0到1之间的小数}}。\
         若没有角色适合发言，confidence 给低分。",
        recent.join("\n"),
    )
}

/// Group transcript → one member's short-term memory, from that member's point of view.
pub fn group_stm_compression(character_name: &str, participants: &str, overlap: &str, conversation: &str) -> String {
    format!(
        "你是{character_name}。请从{character_name}自己的视角，把下面的群聊记录压缩成{character_name}的短期记忆。\n\
         群聊参与者：{participants}。\n\
         记录谁对谁说了什么、话题的转变、各方的赞同与分歧；不要记录寒暄。\n\
         每条记忆写成“发言者 | 对象 | 内容”的格式，提到{character_name}自己时写“我”。\n\
         输出 JSON：{{\"short_memories\": [\"…\"]}}，至少一条。\n\n\
         上文（仅供参考）：\n{overlap}\n\n需要压缩的群聊：\n{conversation}"
    )
}

impl PromptSet for Zh {
    fn version(&self) -> &'static str {
        VERSION
    }

    fn language(&self) -> Language {
        Language::Zh
    }

    fn profile_system(&self) -> &'static str {
        PROFILE_SYSTEM
    }

    fn profile_category(&self, category: &CategorySpec, name: &str, source_markdown: &str) -> String {
        profile_category(category, name, source_markdown)
    }

    fn brief_system(&self) -> &'static str {
        BRIEF_SYSTEM
    }

    fn brief(&self, name: &str, source_markdown: &str) -> String {
        brief(name, source_markdown)
    }

    fn chat_system_prompt(&self, prompt: &ChatPrompt<'_>) -> String {
        chat_system_prompt(prompt)
    }

    fn stm_system(&self) -> &'static str {
        STM_SYSTEM
    }

    fn stm_compression(&self, character_name: &str, user_name: &str, overlap: &str, conversation: &str) -> String {
        stm_compression(character_name, user_name, overlap, conversation)
    }

    fn ltm_system(&self) -> &'static str {
        LTM_SYSTEM
    }

    fn ltm_integration(
        &self,
        character_name: &str,
        brief: &str,
        short_term: &[String],
        long_term: &[String],
    ) -> String {
        ltm_integration(character_name, brief, short_term, long_term)
    }

    fn group_system_prompt(&self, prompt: &GroupPrompt<'_>) -> String {
        group_system_prompt(prompt)
    }

    fn group_user_turn(&self, name: &str, last_lines: &[String]) -> String {
        group_user_turn(name, last_lines)
    }

    fn moderator_system(&self) -> &'static str {
        MODERATOR_SYSTEM
    }

    fn moderator(&self, participants: &[(String, String)], recent: &[String]) -> String {
        moderator(participants, recent)
    }

    fn group_stm_compression(
        &self,
        character_name: &str,
        participants: &str,
        overlap: &str,
        conversation: &str,
    ) -> String {
        group_stm_compression(character_name, participants, overlap, conversation)
    }

    fn field_label(&self, field: &FieldSpec) -> &'static str {
        field.zh
    }

    fn field_guidance(&self, field: &FieldSpec) -> &'static str {
        field.guidance
    }

    fn category_label(&self, category: &CategorySpec) -> &'static str {
        category.zh
    }

    fn none_marker(&self) -> &'static str {
        NONE
    }

    fn name_separator(&self) -> &'static str {
        "、"
    }

    fn own_speaker_label(&self, name: &str) -> String {
        format!("我（{name}）")
    }

    fn source_size(&self, chars: usize) -> String {
        format!("约{chars}字")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Profile;

    #[test]
    fn the_prompt_has_six_parts_and_not_the_current_message() {
        let profile = Profile::new();
        let transcript = vec![(true, "你好".to_owned()), (false, "幸会".to_owned())];
        let prompt = chat_system_prompt(&ChatPrompt {
            character_name: "诸葛亮",
            user_name: "ada",
            user_bio: "",
            profile: &profile,
            long_term: &[],
            short_term: &["ada | 喜欢 | 兵法".to_owned()],
            transcript: &transcript,
            ltm_budget: 4000,
            stm_budget: 3000,
            session_budget: 3000,
        });
        for part in ["①", "②", "③", "④", "⑤", "⑥"] {
            assert!(prompt.contains(part), "missing part {part}");
        }
        assert!(prompt.contains("ada: 你好\n诸葛亮: 幸会\n"));
        assert!(prompt.contains("- ada | 喜欢 | 兵法"));
    }

    #[test]
    fn the_set_serves_the_free_functions_texts() {
        let set = Language::Zh.prompts();
        assert_eq!(set.profile_system(), PROFILE_SYSTEM);
        assert_eq!(set.moderator_system(), MODERATOR_SYSTEM);
        assert_eq!(set.brief("诸葛亮", "资料"), brief("诸葛亮", "资料"));
        assert_eq!(set.none_marker(), "（无）");
        assert_eq!(set.source_size(1200), "约1200字");
    }
}
