//! Reading JSON out of what models really write.
//!
//! Even when asked for JSON only, models wrap it in prose and Markdown fences, think aloud in a
//! `<think>` block first, leave trailing commas, quote with `'`, break a string over raw
//! newlines, or run out of tokens mid-object; and a server that ignored the response format
//! gives no guarantee at all. This module finds the object and repairs its syntax — the
//! repairs are `llm_json`'s (a port of the widely used `json_repair`), not hand-written
//! regexes — and then [`coerce`] bends obvious shape slips towards the schema (a string where a
//! list of strings is wanted becomes a one-item list). What still does not fit is the caller's
//! to refuse, with an error message precise enough to send back to the model.

use serde_json::{Map, Value};

/// Why a reply holds no usable JSON object.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("the reply contains no JSON object")]
    NoObject,
    #[error("the reply is only reasoning, with no answer after it")]
    OnlyReasoning,
    #[error("the reply's JSON cannot be read: {0}")]
    Unreadable(String),
}

/// Blocks some models write before their answer.
const REASONING_TAGS: [(&str, &str); 3] =
    [("<think>", "</think>"), ("<thinking>", "</thinking>"), ("<reasoning>", "</reasoning>")];

/// How many `{` a reply may open before we stop looking for its object.
const MAX_CANDIDATES: usize = 16;

/// The first JSON object in `reply`, repaired if need be. Only outermost objects are
/// candidates (an object nested in a broken one is part of it, not the answer), and one that is
/// valid as written wins over one that needs repairs (`{placeholder}` in prose would "repair"
/// into an object).
pub fn json_object(reply: &str) -> Result<Map<String, Value>, ReplyError> {
    let answer = strip_reasoning(reply)?;
    let mut spans = Vec::new();
    let mut next = 0;
    while spans.len() < MAX_CANDIDATES
        && let Some(offset) = answer[next..].find('{')
    {
        let start = next + offset;
        let (span, consumed) = object_span(&answer[start..]);
        spans.push(span);
        next = start + consumed;
    }
    if let Some(object) = spans.iter().find_map(|span| match serde_json::from_str(span) {
        Ok(Value::Object(object)) => Some(object),
        _ => None,
    }) {
        return Ok(object);
    }
    let mut unreadable = None;
    for span in &spans {
        match llm_json::loads(span, &llm_json::RepairOptions::default()) {
            Ok(Value::Object(object)) if !object.is_empty() => return Ok(object),
            Ok(_) => {}
            Err(error) => unreadable = unreadable.or(Some(ReplyError::Unreadable(error.to_string()))),
        }
    }
    Err(unreadable.unwrap_or(ReplyError::NoObject))
}

/// Removes reasoning blocks. An unterminated one (the model ran out of tokens while thinking)
/// leaves nothing to read.
fn strip_reasoning(reply: &str) -> Result<String, ReplyError> {
    let mut text = reply.to_owned();
    for (open, close) in REASONING_TAGS {
        while let Some(start) = text.find(open) {
            match text[start..].find(close) {
                Some(end) => text.replace_range(start..start + end + close.len(), ""),
                None => {
                    text.truncate(start);
                    if !text.contains('{') {
                        return Err(ReplyError::OnlyReasoning);
                    }
                }
            }
        }
        // Some templates put the opening tag in the prompt, so only the close shows up.
        if let Some(end) = text.find(close) {
            text.replace_range(..end + close.len(), "");
        }
    }
    Ok(text)
}

/// The object starting at `text[0] == '{'`: up to its matching `}` (or to the end, if it never
/// closes), with raw control characters inside strings escaped — models break long strings
/// over lines, which JSON forbids. Returns the span and how many bytes of `text` it covers.
fn object_span(text: &str) -> (String, usize) {
    let mut span = String::with_capacity(text.len());
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (at, c) in text.char_indices() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                } else if c.is_control() {
                    span.push_str(&format!("\\u{:04x}", c as u32));
                    continue;
                }
            }
            None => match c {
                '"' | '\'' => quote = Some(c),
                '{' | '[' => depth += 1,
                '}' | ']' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        span.push(c);
                        return (span, at + c.len_utf8());
                    }
                }
                _ => {}
            },
        }
        span.push(c);
    }
    (span, text.len())
}

/// Bends `value` towards `schema` where the intent is unambiguous: a string (or number) where
/// a list of strings is wanted becomes a one-item list, a number or boolean where a string is
/// wanted becomes its text, a list of strings where one string is wanted is joined, a numeric
/// string where a number is wanted is parsed. Everything else is left for validation to refuse.
pub fn coerce(value: Value, schema: &Value) -> Value {
    let wanted = schema.get("type").and_then(Value::as_str);
    match (wanted, value) {
        (Some("object"), Value::Object(object)) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let object = match properties {
                Some(properties) => unwrap_schema_echo(object, properties),
                None => object,
            };
            Value::Object(
                object
                    .into_iter()
                    .map(|(key, value)| {
                        let value = match properties.and_then(|p| p.get(&key)) {
                            Some(property) => coerce(value, property),
                            None => value,
                        };
                        (key, value)
                    })
                    .collect(),
            )
        }
        (Some("array"), Value::Array(items)) => {
            let item_schema = schema.get("items").cloned().unwrap_or(Value::Null);
            Value::Array(items.into_iter().map(|item| coerce(item, &item_schema)).collect())
        }
        (Some("array"), scalar @ (Value::String(_) | Value::Number(_))) => {
            let item_schema = schema.get("items").cloned().unwrap_or(Value::Null);
            Value::Array(vec![coerce(scalar, &item_schema)])
        }
        (Some("string"), Value::Number(n)) => Value::String(n.to_string()),
        (Some("string"), Value::Bool(b)) => Value::String(b.to_string()),
        (Some("string"), Value::Array(items)) if items.iter().all(Value::is_string) => {
            let items: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
            let separator = if items.iter().any(|i| i.chars().any(is_cjk)) { "；" } else { "; " };
            Value::String(items.join(separator))
        }
        (Some("integer"), Value::String(s)) => s.trim().parse::<i64>().map_or(Value::String(s), Value::from),
        (Some("integer"), Value::Number(n)) if n.as_f64().is_some_and(|f| f.fract() == 0.0) && !n.is_i64() => {
            Value::from(n.as_f64().unwrap_or_default() as i64)
        }
        (Some("number"), Value::String(s)) => {
            s.trim().parse::<f64>().ok().and_then(serde_json::Number::from_f64).map_or(Value::String(s), Value::Number)
        }
        (_, value) => value,
    }
}

/// Small models often answer with the schema's own wrapper around their values
/// (`{"properties": {"name": …}}`, `{"additionalProperties": {…}}`). When no wanted key is at the
/// top but nested objects hold some, their entries are lifted (the first of a duplicate wins).
fn unwrap_schema_echo(object: Map<String, Value>, properties: &Map<String, Value>) -> Map<String, Value> {
    if object.keys().any(|key| properties.contains_key(key)) {
        return object;
    }
    let holds_wanted = |value: &Value| value.as_object().is_some_and(|o| o.keys().any(|k| properties.contains_key(k)));
    if !object.values().any(holds_wanted) {
        return object;
    }
    let mut lifted = Map::new();
    for value in object.into_values().filter(holds_wanted) {
        if let Value::Object(inner) = value {
            for (key, value) in inner {
                lifted.entry(key).or_insert(value);
            }
        }
    }
    lifted
}

fn is_cjk(c: char) -> bool {
    matches!(c, '\u{4e00}'..='\u{9fff}' | '\u{3400}'..='\u{4dbf}' | '\u{f900}'..='\u{faff}')
}

/// Reads a reply into `T`: the object, coerced to `schema`, then deserialised.
pub fn parse<T: serde::de::DeserializeOwned>(reply: &str, schema: &Value) -> Result<T, String> {
    let object = json_object(reply).map_err(|error| error.to_string())?;
    serde_json::from_value(coerce(Value::Object(object), schema)).map_err(|error| format!("wrong shape: {error}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(reply: &str) -> Value {
        Value::Object(json_object(reply).unwrap_or_else(|e| panic!("{reply:?}: {e}")))
    }

    #[test]
    fn prose_fences_and_reasoning_around_the_object_are_ignored() {
        assert_eq!(
            object("Sure! Here it is:\n```json\n{\"a\": \"x\"}\n```\nHope it helps {not json}"),
            json!({"a": "x"})
        );
        assert_eq!(object("<think>Maybe {\"a\": 1}? No.</think>\n{\"a\": \"real\"}"), json!({"a": "real"}));
        assert_eq!(object("Let me think.</think>{\"a\": 2}"), json!({"a": 2}));
        assert_eq!(object("The {placeholder} first, then {\"a\": 3}"), json!({"a": 3}));
        assert_eq!(json_object("<think>still thinking when the tokens ran out"), Err(ReplyError::OnlyReasoning));
        assert_eq!(json_object("No JSON here."), Err(ReplyError::NoObject));
    }

    #[test]
    fn syntax_slips_are_repaired() {
        assert_eq!(object(r#"{"a": "x", "b": ["1", "2",],}"#), json!({"a": "x", "b": ["1", "2"]}));
        assert_eq!(object("{'a': 'x', 'b': 'y'}"), json!({"a": "x", "b": "y"}));
        assert_eq!(object("{\"a\": \"line one\nline two\"}"), json!({"a": "line one\nline two"}));
        assert_eq!(object("{\"a\": \"中文，“引号”\"}"), json!({"a": "中文，“引号”"}));
        // Cut off by max_tokens: repaired to what was written; validation decides if it is enough.
        assert_eq!(object(r#"{"a": "x", "b": "trunc"#), json!({"a": "x", "b": "trunc"}));
    }

    #[test]
    fn obvious_shape_slips_are_coerced_to_the_schema() {
        let schema = json!({"type": "object", "properties": {
            "list": {"type": "array", "items": {"type": "string"}},
            "text": {"type": "string"},
            "zh": {"type": "string"},
            "count": {"type": "integer"},
            "score": {"type": "number"},
        }});
        let coerced = coerce(
            json!({"list": "only one", "text": ["a", "b"], "zh": ["甲", "乙"], "count": "7", "score": "0.5", "extra": 1}),
            &schema,
        );
        assert_eq!(
            coerced,
            json!({"list": ["only one"], "text": "a; b", "zh": "甲；乙", "count": 7, "score": 0.5, "extra": 1})
        );
        assert_eq!(coerce(json!({"text": 12}), &schema)["text"], "12");
        assert_eq!(coerce(json!({"count": 3.0}), &schema)["count"], 3);
        assert_eq!(coerce(json!({"count": "many"}), &schema)["count"], "many");
        let echoed =
            json!({"additionalProperties": {"text": "a"}, "properties": {"text": "b", "count": 2}, "required": []});
        assert_eq!(coerce(echoed, &schema), json!({"text": "a", "count": 2}));
    }

    #[test]
    fn an_object_nested_in_a_broken_one_is_not_the_answer() {
        let reply = "```json\n{\"outer\": {\"inner\": \"x\"},\n}\n```";
        assert_eq!(object(reply), json!({"outer": {"inner": "x"}}));
    }
}
