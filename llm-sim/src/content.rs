//! What the simulator says: deterministic free text and schema-driven JSON.
//!
//! Everything is drawn from an RNG seeded by `(seed, request index)`, so a run can be replayed
//! and a streamed reply can be compared with the non-streamed reply to the same request index.
//! Replies are a list of *tokens*; their concatenation is the message content and streaming
//! sends them in chunks, which is what keeps the two modes identical.

use std::collections::HashSet;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value};

/// Words and characters the free text is made of. The product is Chinese-first, so replies
/// mix in CJK runs to exercise UTF-8 handling (chunk boundaries, byte vs char lengths).
const WORDS: &[&str] = &[
    "the", "village", "elder", "smiles", "and", "says", "welcome", "traveler", "lantern", "river", "market", "story",
    "quiet", "tea", "sword", "merchant", "moon", "road", "friend", "listen", "old", "mountain", "rain", "gate",
    "remember", "autumn", "letter", "journey", "bright", "wind",
];
const CJK: &[&str] = &[
    "你", "好", "欢", "迎", "来", "到", "村", "子", "我", "们", "的", "茶", "馆", "月", "亮", "江", "湖", "朋", "友",
    "故", "事", "山", "雨", "风", "路", "客", "人", "听", "说", "书",
];

/// Recursion limit for schemas; past it only required properties and `minItems` items are
/// generated, so recursive `$ref`s terminate.
const MAX_DEPTH: usize = 8;

/// The schema `true`, which accepts anything; stands in for missing `items` and dangling refs.
static ANY: Value = Value::Bool(true);

/// The RNG for one request. Mixing the index through a multiplicative hash keeps neighbouring
/// requests from getting related streams.
pub(crate) fn rng_for(seed: u64, request_index: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ request_index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// `n` tokens of natural-looking mixed English/Chinese text. Each English word carries its
/// leading space (except at the very start) and consecutive CJK characters none, so the
/// concatenation reads naturally. With `punctuate`, the last token ends the sentence.
pub(crate) fn text_tokens(rng: &mut impl Rng, n: usize, punctuate: bool) -> Vec<String> {
    let mut tokens: Vec<String> = Vec::with_capacity(n);
    let mut previous_cjk = false;
    while tokens.len() < n {
        let cjk = rng.random_bool(0.3);
        let run = if cjk { rng.random_range(2..=4) } else { rng.random_range(3..=7) };
        for _ in 0..run.min(n - tokens.len()) {
            let lead = if tokens.is_empty() || (cjk && previous_cjk) { "" } else { " " };
            let pool = if cjk { CJK } else { WORDS };
            let word = pool[rng.random_range(0..pool.len())];
            tokens.push(format!("{lead}{word}"));
            previous_cjk = cjk;
        }
    }
    if let Some(first) = tokens.first_mut() {
        capitalize(first);
    }
    if punctuate && let Some(last) = tokens.last_mut() {
        last.push(if previous_cjk { '。' } else { '.' });
    }
    tokens
}

fn capitalize(word: &mut String) {
    if let Some(first) = word.chars().next().filter(char::is_ascii_lowercase) {
        word.replace_range(..1, &first.to_ascii_uppercase().to_string());
    }
}

/// A short phrase (2 to 5 tokens) for string values.
fn phrase(rng: &mut impl Rng) -> String {
    let n = rng.random_range(2..=5);
    text_tokens(rng, n, false).concat()
}

/// Splits fixed content into at most `n` non-empty tokens of roughly equal length, on char
/// boundaries, so scripted and JSON replies stream and take time like free text does.
pub(crate) fn split_even(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let pieces = n.max(1).min(chars.len());
    (0..pieces).map(|i| chars[i * chars.len() / pieces..(i + 1) * chars.len() / pieces].iter().collect()).collect()
}

/// A rough token count for `usage`: about four ASCII bytes per token, and one token per other
/// character (CJK characters are usually a token each).
pub(crate) fn estimate_tokens(text: &str) -> u64 {
    let (ascii, other) =
        text.chars().fold((0u64, 0u64), |(a, o), c| if c.is_ascii() { (a + 1, o) } else { (a, o + 1) });
    ascii.div_ceil(4) + other
}

/// A value satisfying `schema`, a JSON Schema of the kind structured-output APIs accept.
///
/// Supported: `type` (also as an array, the first non-null entry wins), `properties` (all are
/// filled, not only the required ones), `required`, `items`/`prefixItems`, `enum`, `const`,
/// `minItems`/`maxItems`/`uniqueItems`, `minimum`/`maximum` (and the exclusive forms),
/// `minLength`/`maxLength`, a few string `format`s, `anyOf`/`oneOf` (first non-null option),
/// `allOf` (merged) and local `$ref`s such as `#/$defs/X` or `#/definitions/X`. Everything else
/// is ignored, and no property outside `properties` is ever produced, so
/// `additionalProperties: false` holds.
pub(crate) fn value_for_schema(schema: &Value, rng: &mut impl Rng) -> Value {
    SchemaFiller { root: schema, rng }.value(schema, 0)
}

struct SchemaFiller<'a, R> {
    root: &'a Value,
    rng: &'a mut R,
}

impl<'a, R: Rng> SchemaFiller<'a, R> {
    fn value(&mut self, schema: &Value, depth: usize) -> Value {
        let schema = self.resolve(schema);
        let Value::Object(keywords) = schema else {
            // `true` (or a broken schema) accepts anything.
            return Value::String(phrase(self.rng));
        };
        if let Some(value) = keywords.get("const") {
            return value.clone();
        }
        if let Some(Value::Array(options)) = keywords.get("enum")
            && !options.is_empty()
        {
            return options[self.rng.random_range(0..options.len())].clone();
        }
        for combinator in ["anyOf", "oneOf"] {
            if let Some(Value::Array(options)) = keywords.get(combinator)
                && let Some(option) = self.pick_option(options)
            {
                return self.value(&option, depth + 1);
            }
        }
        if let Some(Value::Array(parts)) = keywords.get("allOf") {
            let merged = self.merge_all_of(keywords, parts);
            return self.value(&merged, depth + 1);
        }
        match schema_type(keywords) {
            "object" => self.object(keywords, depth),
            "array" => self.array(keywords, depth),
            "integer" => self.integer(keywords),
            "number" => self.number(keywords),
            "boolean" => Value::Bool(self.rng.random_bool(0.5)),
            "null" => Value::Null,
            _ => self.string(keywords),
        }
    }

    /// Follows local `$ref`s (JSON pointers into the root schema). Unresolvable refs are
    /// treated as the empty schema.
    fn resolve<'s>(&self, mut schema: &'s Value) -> &'s Value
    where
        'a: 's,
    {
        for _ in 0..32 {
            let Some(reference) = schema.get("$ref").and_then(Value::as_str) else {
                return schema;
            };
            schema = reference.strip_prefix('#').and_then(|pointer| self.root.pointer(pointer)).unwrap_or(&ANY);
        }
        schema
    }

    /// The first option that is not just `null`: for `Option<T>`-style unions the interesting
    /// branch is the value, and filling it exercises more of the client.
    fn pick_option(&self, options: &[Value]) -> Option<Value> {
        let is_null = |option: &&Value| self.resolve(option).get("type").and_then(Value::as_str) == Some("null");
        options.iter().find(|option| !is_null(option)).or_else(|| options.first()).cloned()
    }

    fn merge_all_of(&self, keywords: &Map<String, Value>, parts: &[Value]) -> Value {
        let mut merged = keywords.clone();
        merged.remove("allOf");
        for part in parts {
            let Value::Object(part) = self.resolve(part) else {
                continue;
            };
            for (key, value) in part {
                match (key.as_str(), merged.get_mut(key), value) {
                    ("properties", Some(Value::Object(into)), Value::Object(from)) => {
                        into.extend(from.iter().map(|(k, v)| (k.clone(), v.clone())));
                    }
                    ("required", Some(Value::Array(into)), Value::Array(from)) => {
                        into.extend(from.iter().cloned());
                    }
                    (_, None, _) => {
                        merged.insert(key.clone(), value.clone());
                    }
                    _ => {}
                }
            }
        }
        Value::Object(merged)
    }

    fn object(&mut self, keywords: &Map<String, Value>, depth: usize) -> Value {
        let required: HashSet<&str> = keywords
            .get("required")
            .and_then(Value::as_array)
            .map(|names| names.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut object = Map::new();
        if let Some(Value::Object(properties)) = keywords.get("properties") {
            for (name, schema) in properties {
                if depth < MAX_DEPTH || required.contains(name.as_str()) {
                    let value = self.value(schema, depth + 1);
                    object.insert(name.clone(), value);
                }
            }
        }
        for name in required {
            if !object.contains_key(name) {
                object.insert(name.to_owned(), Value::String(phrase(self.rng)));
            }
        }
        Value::Object(object)
    }

    fn array(&mut self, keywords: &Map<String, Value>, depth: usize) -> Value {
        let tuple = match (keywords.get("prefixItems"), keywords.get("items")) {
            (Some(Value::Array(items)), _) | (None, Some(Value::Array(items))) => Some(items),
            _ => None,
        };
        if let Some(items) = tuple {
            return Value::Array(items.iter().map(|s| self.value(s, depth + 1)).collect());
        }
        let min_items = usize_keyword(keywords, "minItems");
        let max_items = usize_keyword(keywords, "maxItems");
        let (low, high) = if depth >= MAX_DEPTH {
            let low = min_items.unwrap_or(0);
            (low, low)
        } else {
            let low = min_items.unwrap_or(1).min(max_items.unwrap_or(usize::MAX));
            (low, max_items.unwrap_or(3).min(3).max(low))
        };
        let count = self.rng.random_range(low..=high);
        let unique = keywords.get("uniqueItems") == Some(&Value::Bool(true));
        let item_schema = keywords.get("items").unwrap_or(&ANY);
        let mut items: Vec<Value> = Vec::with_capacity(count);
        // Unique items can run out (a two-value enum cannot fill three slots); give up after
        // a bounded number of attempts rather than loop forever.
        for _ in 0..count * 8 {
            if items.len() == count {
                break;
            }
            let item = self.value(item_schema, depth + 1);
            if !unique || !items.contains(&item) {
                items.push(item);
            }
        }
        Value::Array(items)
    }

    fn integer(&mut self, keywords: &Map<String, Value>) -> Value {
        let (low, high) = bounds(keywords);
        let low = low.map(|(bound, exclusive)| if exclusive { bound.floor() as i64 + 1 } else { bound.ceil() as i64 });
        let high =
            high.map(|(bound, exclusive)| if exclusive { bound.ceil() as i64 - 1 } else { bound.floor() as i64 });
        let (low, high) = default_range(low, high, 100);
        if low >= high {
            return Value::from(low);
        }
        Value::from(self.rng.random_range(low..=high))
    }

    fn number(&mut self, keywords: &Map<String, Value>) -> Value {
        let (low_bound, high_bound) = bounds(keywords);
        let (low, high) = match (low_bound, high_bound) {
            (Some((low, _)), Some((high, _))) => (low, high),
            (Some((low, _)), None) => (low, low + 100.0),
            (None, Some((high, _))) => (if high >= 0.0 { 0.0 } else { high - 100.0 }, high),
            (None, None) => (0.0, 100.0),
        };
        if low >= high {
            return Value::from(low);
        }
        let raw = self.rng.random_range(low..=high);
        // Two decimals look like a model's numbers; rounding may land on an excluded bound,
        // in which case the midpoint is safe.
        let mut value = ((raw * 100.0).round() / 100.0).clamp(low, high);
        let excluded = |bound: Option<(f64, bool)>| bound.is_some_and(|(b, ex)| ex && b == value);
        if excluded(low_bound) || excluded(high_bound) {
            value = low / 2.0 + high / 2.0;
        }
        Value::from(value)
    }

    fn string(&mut self, keywords: &Map<String, Value>) -> Value {
        let mut text = match keywords.get("format").and_then(Value::as_str) {
            Some("date-time") => self.timestamp().to_rfc3339(),
            Some("date") => self.timestamp().date_naive().to_string(),
            Some("uuid") => uuid::Builder::from_random_bytes(self.rng.random()).into_uuid().to_string(),
            Some("email") => format!("npc{}@example.com", self.rng.random_range(1..1000)),
            Some("uri" | "url") => {
                format!("https://example.com/npc/{}", self.rng.random_range(1..1000))
            }
            _ => phrase(self.rng),
        };
        let min_length = usize_keyword(keywords, "minLength").unwrap_or(0);
        while text.chars().count() < min_length {
            text.push_str(&phrase(self.rng));
        }
        if let Some(max_length) = usize_keyword(keywords, "maxLength")
            && let Some((cut, _)) = text.char_indices().nth(max_length)
        {
            text.truncate(cut);
        }
        // Truncation can leave a dangling space; drop it unless that breaks minLength.
        let trimmed = text.trim_end();
        if trimmed.chars().count() >= min_length {
            text.truncate(trimmed.len());
        }
        Value::String(text)
    }

    fn timestamp(&mut self) -> chrono::DateTime<chrono::Utc> {
        let secs = 1_700_000_000 + self.rng.random_range(0..100_000_000);
        chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default()
    }
}

fn schema_type(keywords: &Map<String, Value>) -> &str {
    match keywords.get("type") {
        Some(Value::String(name)) => name,
        Some(Value::Array(names)) => {
            let mut names = names.iter().filter_map(Value::as_str);
            let first = names.clone().next().unwrap_or("null");
            names.find(|name| *name != "null").unwrap_or(first)
        }
        _ if keywords.contains_key("properties") => "object",
        _ if keywords.contains_key("items") || keywords.contains_key("prefixItems") => "array",
        _ => "string",
    }
}

fn usize_keyword(keywords: &Map<String, Value>, name: &str) -> Option<usize> {
    keywords.get(name).and_then(Value::as_u64).map(|n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// Lower and upper numeric bounds as `(bound, exclusive)`, accepting both the draft-2020
/// numeric `exclusiveMinimum` and the draft-4 boolean flag.
type Bound = Option<(f64, bool)>;

fn bounds(keywords: &Map<String, Value>) -> (Bound, Bound) {
    let bound = |inclusive: &str, exclusive: &str| -> Bound {
        match (keywords.get(inclusive).and_then(Value::as_f64), keywords.get(exclusive)) {
            (_, Some(Value::Number(n))) => n.as_f64().map(|b| (b, true)),
            (Some(b), Some(Value::Bool(flag))) => Some((b, *flag)),
            (Some(b), _) => Some((b, false)),
            (None, _) => None,
        }
    };
    (bound("minimum", "exclusiveMinimum"), bound("maximum", "exclusiveMaximum"))
}

fn default_range(low: Option<i64>, high: Option<i64>, span: i64) -> (i64, i64) {
    match (low, high) {
        (Some(low), Some(high)) => (low, high),
        (Some(low), None) => (low, low.saturating_add(span)),
        (None, Some(high)) if high >= 0 => (0, high),
        (None, Some(high)) => (high.saturating_sub(span), high),
        (None, None) => (0, span),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn text_has_exactly_the_requested_tokens_and_is_deterministic() {
        let a = text_tokens(&mut rng_for(7, 3), 40, true);
        let b = text_tokens(&mut rng_for(7, 3), 40, true);
        let other = text_tokens(&mut rng_for(7, 4), 40, true);
        assert_eq!(a.len(), 40);
        assert_eq!(a, b);
        assert_ne!(a, other);
        let text = a.concat();
        assert!(!text.starts_with(' ') && !text.contains('\n'));
        assert!(a.iter().all(|token| !token.trim().is_empty()));
    }

    #[test]
    fn split_even_keeps_the_text_and_char_boundaries() {
        let text = "你好, world! 江湖";
        for n in [0, 1, 3, 5, 100] {
            let pieces = split_even(text, n);
            assert_eq!(pieces.concat(), text);
            assert!(pieces.len() <= n.max(1));
            assert!(pieces.iter().all(|p| !p.is_empty()));
        }
        assert!(split_even("", 4).is_empty());
    }

    #[test]
    fn schema_values_respect_the_constraints() {
        let schema = json!({
            "type": "object",
            "$defs": {
                "mood": {"type": "string", "enum": ["calm", "angry"]},
                "node": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
                    "required": ["name"]
                }
            },
            "properties": {
                "short": {"type": "string", "minLength": 3, "maxLength": 5},
                "long": {"type": "string", "minLength": 40},
                "level": {"type": "integer", "minimum": 3, "maximum": 7},
                "negative": {"type": "integer", "exclusiveMaximum": -10},
                "ratio": {"type": "number", "minimum": 0.5, "exclusiveMaximum": 0.75},
                "mood": {"$ref": "#/$defs/mood"},
                "maybe": {"anyOf": [{"type": "null"}, {"type": "boolean"}]},
                "nullable": {"type": ["null", "integer"]},
                "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 10},
                "none": {"type": "array", "items": {"type": "integer"}, "maxItems": 0},
                "pair": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "boolean"}]},
                "unique": {"type": "array", "items": {"enum": [1, 2]}, "minItems": 3, "uniqueItems": true},
                "id": {"type": "string", "format": "uuid"},
                "tree": {"$ref": "#/$defs/node"},
                "fixed": {"const": "always"},
                "merged": {"allOf": [{"properties": {"a": {"type": "integer"}}}, {"properties": {"b": {"type": "null"}}}]}
            },
            "additionalProperties": false
        });
        for index in 0..50 {
            let value = value_for_schema(&schema, &mut rng_for(1, index));
            let short = value["short"].as_str().unwrap().chars().count();
            assert!((3..=5).contains(&short), "{value}");
            assert!(value["long"].as_str().unwrap().chars().count() >= 40);
            assert!((3..=7).contains(&value["level"].as_i64().unwrap()));
            assert!(value["negative"].as_i64().unwrap() < -10);
            let ratio = value["ratio"].as_f64().unwrap();
            assert!((0.5..0.75).contains(&ratio), "{ratio}");
            assert!(["calm", "angry"].contains(&value["mood"].as_str().unwrap()));
            assert!(value["maybe"].is_boolean());
            assert!(value["nullable"].is_i64());
            assert!((2..=3).contains(&value["tags"].as_array().unwrap().len()));
            assert_eq!(value["none"], json!([]));
            assert!(value["pair"][0].is_i64() && value["pair"][1].is_boolean());
            assert_eq!(value["unique"].as_array().unwrap().len(), 2);
            assert!(uuid::Uuid::parse_str(value["id"].as_str().unwrap()).is_ok());
            assert!(value["tree"]["name"].is_string());
            assert_eq!(value["fixed"], "always");
            assert!(value["merged"]["a"].is_i64() && value["merged"]["b"].is_null());
            assert_eq!(value.as_object().unwrap().len(), 16);
        }
    }
}
