//! Chinese prompts, adapted from the original FastNPC's hard-coded defaults.

use std::fmt::Write;

use crate::domain::CategorySpec;

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
