//! The persona profile: eight persona categories plus source metadata.
//!
//! The categories and fields are the original FastNPC's (`pipeline/structure/prompts.py`), kept
//! in one table so the JSON schema sent to the LLM, the strict parser of its reply, the stored
//! document and the prompt renderer can never disagree. Stored keys are English; each field keeps
//! its original Chinese label (`zh`), which is what prompts show the model and what the chat
//! prompt renders.

use serde_json::{Map, Value, json};

use crate::prompts::Language;

/// One field of a category.
#[derive(Debug)]
pub struct FieldSpec {
    /// Stored key (English, snake_case).
    pub key: &'static str,
    /// The original Chinese field name, as prompts present it.
    pub zh: &'static str,
    /// What the model should write there (from the original's prompt guidance).
    pub guidance: &'static str,
    /// A list of strings (the original's 经历 and 关系网络) rather than one string.
    pub list: bool,
}

/// One category: one concurrent LLM call during generation.
#[derive(Debug)]
pub struct CategorySpec {
    /// Stored key of the category in the profile document.
    pub key: &'static str,
    /// The original Chinese category name.
    pub zh: &'static str,
    pub fields: &'static [FieldSpec],
}

const fn text(key: &'static str, zh: &'static str, guidance: &'static str) -> FieldSpec {
    FieldSpec { key, zh, guidance, list: false }
}

const fn list(key: &'static str, zh: &'static str, guidance: &'static str) -> FieldSpec {
    FieldSpec { key, zh, guidance, list: true }
}

/// The key of the source-metadata category, which the pipeline patches with facts it knows
/// better than the model (the source's address and size).
pub const SOURCE_CATEGORY: &str = "source";

/// The nine categories, in the order the original renders them.
pub static CATEGORIES: [CategorySpec; 9] = [
    CategorySpec {
        key: "basic_identity",
        zh: "基础身份信息",
        fields: &[
            text("name", "姓名", "姓名，含常用别名、字号"),
            text("age", "年龄", "年龄或所处年龄段（可写生卒年）"),
            text("gender", "性别", "性别"),
            text("occupation", "职业", "职业或社会角色"),
            text("identity_background", "身份背景", "社会身份、出身地、民族、阶层"),
            text("appearance", "外貌特征", "外貌特征"),
            text("titles", "称谓/头衔", "称谓、头衔、封号"),
        ],
    },
    CategorySpec {
        key: "personality",
        zh: "个性与行为设定",
        fields: &[
            text("traits", "性格特质", "性格特质，1-3 句自然语言"),
            text("values", "价值观", "价值观，1-3 句自然语言"),
            text("emotion_style", "情绪风格", "情绪表达风格，1-3 句"),
            text("speaking_style", "说话方式", "说话方式、口头禅，1-3 句"),
            text("preferences", "偏好", "喜欢的事物，1-3 句"),
            text("dislikes", "厌恶", "厌恶的事物，1-3 句"),
            text("motivation_goals", "动机与目标", "动机与目标，1-3 句"),
        ],
    },
    CategorySpec {
        key: "background",
        zh: "背景故事",
        fields: &[
            text("origin", "出身", "出身与早年"),
            list("experiences", "经历", "关键经历，按时间顺序，每条一句"),
            text("current_situation", "当前处境", "当前处境"),
            list("relationships", "关系网络", "人际关系，每条形如“关系：姓名”"),
            text("secrets", "秘密", "不为人知的秘密或心结"),
        ],
    },
    CategorySpec {
        key: "knowledge",
        zh: "知识与能力",
        fields: &[
            text("knowledge_domain", "知识领域", "擅长的知识领域"),
            text("skills", "技能", "技能"),
            text("limitations", "限制", "能力与认知的局限（例如不知道其时代之后的事）"),
        ],
    },
    CategorySpec {
        key: "dialogue_rules",
        zh: "对话与交互规范",
        fields: &[
            text("tone", "语气", "语气"),
            text("language_style", "语言风格", "语言风格（文白、用词、句式）"),
            text("behavior_constraints", "行为约束", "对话中必须遵守的行为约束"),
            text("interaction_pattern", "互动模式", "与对话者的互动模式"),
        ],
    },
    CategorySpec {
        key: "tasks",
        zh: "任务/功能性信息",
        fields: &[
            text("task_goal", "任务目标", "在对话中的任务目标"),
            text("dialogue_intent", "对话意图", "对话意图"),
            text("interaction_limits", "交互限制", "交互限制"),
            text("trigger_conditions", "触发条件", "触发特定反应的条件"),
        ],
    },
    CategorySpec {
        key: "worldview",
        zh: "环境与世界观",
        fields: &[
            text("worldview", "世界观", "人物所处世界的世界观"),
            text("timeline", "时间线", "时代与时间线"),
            text("social_rules", "社会规则", "所处社会的规则与礼法"),
            text("external_resources", "外部资源", "可调动的外部资源"),
        ],
    },
    CategorySpec {
        key: "system_params",
        zh: "系统与控制参数",
        fields: &[
            text("consistency_control", "一致性控制", "保持人设一致的要求"),
            text("preference_control", "偏好控制", "回答偏好的控制"),
            text("safety_limits", "安全限制", "安全限制"),
            text("deduction_range", "演绎范围", "允许演绎与发挥的范围"),
        ],
    },
    CategorySpec {
        key: SOURCE_CATEGORY,
        zh: "来源",
        fields: &[
            text("unique_id", "唯一标识", "人物的唯一标识（如“姓名-朝代-身份”）"),
            text("source_url", "链接", "资料链接，没有则留空字符串"),
            text("source_size", "来源信息量", "资料信息量，形如“约N字”"),
        ],
    },
];

/// How many LLM calls the profile takes (one per category).
pub const CATEGORY_COUNT: usize = CATEGORIES.len();

impl CategorySpec {
    /// Looks a category up by its stored key.
    pub fn by_key(key: &str) -> Option<&'static CategorySpec> {
        CATEGORIES.iter().find(|c| c.key == key)
    }

    /// The JSON Schema the category's reply must satisfy, sent as a `json_schema` response
    /// format, its descriptions in `language`. Every field is required and nothing else is
    /// allowed, so a conforming reply is a complete category.
    pub fn json_schema(&self, language: Language) -> Value {
        let prompts = language.prompts();
        let properties: Map<String, Value> = self
            .fields
            .iter()
            .map(|field| {
                let description = format!("{}: {}", prompts.field_label(field), prompts.field_guidance(field));
                let schema = if field.list {
                    json!({"type": "array", "items": {"type": "string"}, "description": description})
                } else {
                    json!({"type": "string", "description": description})
                };
                (field.key.to_owned(), schema)
            })
            .collect();
        let required: Vec<&str> = self.fields.iter().map(|f| f.key).collect();
        json!({
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": false,
        })
    }

    /// Parses a model reply into this category's stored object. The JSON object is found and
    /// repaired tolerantly ([`crate::llm::reply`]: prose, fences, reasoning blocks, trailing
    /// commas), fields written under their label (in any prompt language) are taken as the field, and obvious
    /// shape slips are coerced to the schema (one string where a list is wanted); then every
    /// field must be there with the right shape. Keys that are not fields are dropped. Anything
    /// else is an error the caller sends back to the model, never an empty `{}`.
    pub fn parse_reply(&self, reply: &str) -> Result<Map<String, Value>, ProfileError> {
        let mut object = crate::llm::reply::json_object(reply)
            .map_err(|error| ProfileError::NotJson { category: self.key, reason: error.to_string() })?;
        for field in self.fields {
            if object.contains_key(field.key) {
                continue;
            }
            let labels = Language::ALL.map(|language| language.prompts().field_label(field));
            if let Some(value) = labels.iter().find_map(|label| object.remove(*label)) {
                object.insert(field.key.to_owned(), value);
            }
        }
        let Value::Object(mut object) =
            crate::llm::reply::coerce(Value::Object(object), &self.json_schema(Language::default()))
        else {
            unreachable!("coercing an object to an object schema keeps it an object");
        };
        let mut parsed = Map::new();
        for field in self.fields {
            let value =
                object.remove(field.key).ok_or(ProfileError::MissingField { category: self.key, field: field.key })?;
            let value = match (field.list, value) {
                (false, Value::String(s)) => Value::String(s),
                (true, Value::Array(items)) if items.iter().all(Value::is_string) => Value::Array(items),
                _ => return Err(ProfileError::WrongType { category: self.key, field: field.key }),
            };
            parsed.insert(field.key.to_owned(), value);
        }
        Ok(parsed)
    }
}

/// A model reply that does not make a category.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error("category {category}: reply is not JSON ({reason})")]
    NotJson { category: &'static str, reason: String },
    #[error("category {category}: field {field} is missing")]
    MissingField { category: &'static str, field: &'static str },
    #[error("category {category}: field {field} has the wrong type")]
    WrongType { category: &'static str, field: &'static str },
}

/// A complete profile: one object per category key, as stored in `characters.profile`.
pub type Profile = Map<String, Value>;

/// A complete profile with every field empty (`""`, or `[]` for a list): what a profile from
/// outside the generation (a card, an edit's validation) is filled into.
pub fn empty_profile() -> Profile {
    CATEGORIES
        .iter()
        .map(|category| {
            let fields: Map<String, Value> = category
                .fields
                .iter()
                .map(|field| (field.key.to_owned(), if field.list { json!([]) } else { json!("") }))
                .collect();
            (category.key.to_owned(), Value::Object(fields))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn there_are_eight_persona_categories_and_source_metadata() {
        assert_eq!(CATEGORY_COUNT, 9);
        assert_eq!(CATEGORIES.iter().filter(|c| c.key != SOURCE_CATEGORY).count(), 8);
        let mut keys: Vec<_> = CATEGORIES.iter().map(|c| c.key).collect();
        keys.dedup();
        assert_eq!(keys.len(), 9);
    }

    #[test]
    fn schema_requires_every_field() {
        let background = CategorySpec::by_key("background").unwrap();
        let schema = background.json_schema(Language::En);
        assert_eq!(schema["required"].as_array().unwrap().len(), background.fields.len());
        assert_eq!(schema["properties"]["experiences"]["type"], "array");
        assert_eq!(schema["additionalProperties"], false);
    }

    #[test]
    fn parse_accepts_a_complete_fenced_reply() {
        let knowledge = CategorySpec::by_key("knowledge").unwrap();
        let reply = "```json\n{\"knowledge_domain\":\"兵法\",\"skills\":\"治国\",\"limitations\":\"不知后世\",\"extra\":1}\n```";
        let parsed = knowledge.parse_reply(reply).unwrap();
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed["skills"], "治国");
    }

    #[test]
    fn parse_rejects_incomplete_or_wrong_replies() {
        let knowledge = CategorySpec::by_key("knowledge").unwrap();
        assert!(matches!(knowledge.parse_reply("Sorry, I cannot."), Err(ProfileError::NotJson { .. })));
        assert!(matches!(knowledge.parse_reply("[1]"), Err(ProfileError::NotJson { .. })));
        assert!(matches!(knowledge.parse_reply("Sure! {broken"), Err(ProfileError::MissingField { .. })));
        assert_eq!(
            knowledge.parse_reply(r#"{"knowledge_domain":"a","skills":"b"}"#),
            Err(ProfileError::MissingField { category: "knowledge", field: "limitations" })
        );
        let background = CategorySpec::by_key("background").unwrap();
        let wrong =
            r#"{"origin":"a","experiences":{"year":1},"current_situation":"c","relationships":[],"secrets":"s"}"#;
        assert!(matches!(background.parse_reply(wrong), Err(ProfileError::WrongType { field: "experiences", .. })));
    }

    #[test]
    fn parse_takes_chinese_labels_and_coerces_obvious_slips() {
        let background = CategorySpec::by_key("background").unwrap();
        let reply = "好的，以下是JSON：\n{\"出身\": \"琅琊阳都\", \"experiences\": \"隆中对\", \"current_situation\": \"丞相\", \
                     \"relationships\": [\"主公：刘备\"], \"secrets\": 7,}";
        let parsed = background.parse_reply(reply).unwrap();
        assert_eq!(parsed["origin"], "琅琊阳都");
        assert_eq!(parsed["experiences"], serde_json::json!(["隆中对"]));
        assert_eq!(parsed["secrets"], "7");
        let english = r#"{"Origins": "Langya", "experiences": [], "current_situation": "c", "relationships": [], "secrets": "s"}"#;
        assert_eq!(background.parse_reply(english).unwrap()["origin"], "Langya");
    }

    /// Real replies of a real small model (tests/fixtures/llm-replies, with their origin): what
    /// the reader makes of each. Most are refused — the model is tiny — but with a reason precise
    /// enough to send back, and the grammar-constrained reply of the `json_object` rung is read.
    #[test]
    fn recorded_small_model_replies_are_read_or_refused_with_a_reason() {
        use ProfileError::{MissingField, NotJson, WrongType};
        type Check = fn(&Result<Map<String, Value>, ProfileError>) -> bool;
        let expected: [(&str, &str, Check); 14] = [
            ("01-en-basic-identity", "basic_identity", |r| matches!(r, Err(WrongType { field: "titles", .. }))),
            ("02-en-basic-identity", "basic_identity", |r| matches!(r, Err(MissingField { field: "occupation", .. }))),
            ("03-en-basic-identity", "basic_identity", |r| matches!(r, Err(MissingField { field: "appearance", .. }))),
            ("04-en-background", "background", |r| matches!(r, Err(MissingField { field: "origin", .. }))),
            ("05-en-source", "source", |r| matches!(r, Err(MissingField { field: "unique_id", .. }))),
            ("06-en-personality", "personality", |r| matches!(r, Err(MissingField { field: "traits", .. }))),
            ("07-en-personality", "personality", |r| matches!(r, Err(MissingField { field: "traits", .. }))),
            ("08-en-knowledge", "knowledge", |r| matches!(r, Err(NotJson { .. }))),
            ("09-zh-basic-identity", "basic_identity", |r| matches!(r, Err(NotJson { .. }))),
            ("10-zh-personality", "personality", |r| matches!(r, Err(NotJson { .. }))),
            ("11-zh-background", "background", |r| matches!(r, Err(NotJson { .. }))),
            ("12-zh-background", "background", |r| matches!(r, Err(MissingField { field: "origin", .. }))),
            ("13-zh-background", "background", |r| matches!(r, Err(MissingField { field: "relationships", .. }))),
            ("14-en-basic-identity", "basic_identity", |r| r.as_ref().is_ok_and(|fields| fields.len() == 7)),
        ];
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llm-replies");
        for (prefix, category, check) in expected {
            let file = std::fs::read_dir(&dir)
                .unwrap()
                .map(|entry| entry.unwrap().path())
                .find(|path| path.file_name().unwrap().to_string_lossy().starts_with(&format!("smollm2-135m-{prefix}")))
                .unwrap_or_else(|| panic!("fixture {prefix}"));
            let reply = std::fs::read_to_string(&file).unwrap();
            let parsed = CategorySpec::by_key(category).unwrap().parse_reply(&reply);
            assert!(check(&parsed), "{}: {parsed:?}", file.display());
        }
    }
}
