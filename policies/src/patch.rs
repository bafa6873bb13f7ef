//! JSON Patch (RFC 6902) over `serde_json::Value`: the `ops` an agent policy
//! rule returns are applied to the policy state with it. All operations
//! (add, remove, replace, move, copy, test) are supported; a patch applies
//! wholly or not at all.

use serde_json::Value;

/// Why a patch did not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// An operation is not an object with a known `op` and its fields.
    #[error("patch operation {index} is malformed: {reason}")]
    Malformed {
        /// Position in the patch.
        index: usize,
        /// What was wrong.
        reason: String,
    },
    /// A path does not exist (or its parent does not, for add).
    #[error("patch operation {index} ({op}): path {path:?} does not exist")]
    NoPath {
        /// Position in the patch.
        index: usize,
        /// The operation.
        op: String,
        /// The JSON pointer.
        path: String,
    },
    /// A `test` operation found another value.
    #[error("patch operation {index} (test) failed at {path:?}")]
    TestFailed {
        /// Position in the patch.
        index: usize,
        /// The JSON pointer.
        path: String,
    },
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn split(path: &str) -> Option<Vec<String>> {
    if path.is_empty() {
        return Some(Vec::new());
    }
    let rest = path.strip_prefix('/')?;
    Some(rest.split('/').map(unescape).collect())
}

fn array_index(token: &str, len: usize, allow_end: bool) -> Option<usize> {
    if allow_end && token == "-" {
        return Some(len);
    }
    if token.is_empty() || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    let i: usize = token.parse().ok()?;
    let max = if allow_end {
        len
    } else {
        len.saturating_sub(1)
    };
    (i <= max && (allow_end || len > 0)).then_some(i)
}

fn parent_mut<'a>(doc: &'a mut Value, tokens: &[String]) -> Option<&'a mut Value> {
    let mut cur = doc;
    for t in tokens {
        cur = match cur {
            Value::Object(m) => m.get_mut(t)?,
            Value::Array(a) => {
                let i = array_index(t, a.len(), false)?;
                a.get_mut(i)?
            }
            _ => return None,
        };
    }
    Some(cur)
}

fn get<'a>(doc: &'a Value, tokens: &[String]) -> Option<&'a Value> {
    let mut cur = doc;
    for t in tokens {
        cur = match cur {
            Value::Object(m) => m.get(t)?,
            Value::Array(a) => a.get(array_index(t, a.len(), false)?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn add(doc: &mut Value, tokens: &[String], value: Value) -> Option<()> {
    let Some((last, parent)) = tokens.split_last() else {
        *doc = value;
        return Some(());
    };
    match parent_mut(doc, parent)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Some(())
        }
        Value::Array(a) => {
            let i = array_index(last, a.len(), true)?;
            a.insert(i, value);
            Some(())
        }
        _ => None,
    }
}

fn remove(doc: &mut Value, tokens: &[String]) -> Option<Value> {
    let (last, parent) = tokens.split_last()?;
    match parent_mut(doc, parent)? {
        Value::Object(m) => m.remove(last),
        Value::Array(a) => {
            let i = array_index(last, a.len(), false)?;
            Some(a.remove(i))
        }
        _ => None,
    }
}

/// Applies `patch` (a JSON array of operations) to `doc`. On error `doc` is
/// unchanged.
pub fn apply(doc: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let ops = patch.as_array().ok_or(PatchError::Malformed {
        index: 0,
        reason: "a patch is an array of operations".into(),
    })?;
    let mut work = doc.clone();
    for (index, op) in ops.iter().enumerate() {
        apply_one(&mut work, index, op)?;
    }
    *doc = work;
    Ok(())
}

fn apply_one(doc: &mut Value, index: usize, op: &Value) -> Result<(), PatchError> {
    let malformed = |reason: &str| PatchError::Malformed {
        index,
        reason: reason.to_owned(),
    };
    let name = op
        .get("op")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("missing string `op`"))?;
    let path = op
        .get("path")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("missing string `path`"))?;
    let tokens = split(path).ok_or_else(|| malformed("`path` is not a JSON pointer"))?;
    let no_path = || PatchError::NoPath {
        index,
        op: name.to_owned(),
        path: path.to_owned(),
    };
    let value = || {
        op.get("value")
            .cloned()
            .ok_or_else(|| malformed("missing `value`"))
    };
    let from = || {
        op.get("from")
            .and_then(Value::as_str)
            .and_then(split)
            .ok_or_else(|| malformed("missing or bad `from`"))
    };
    match name {
        "add" => add(doc, &tokens, value()?).ok_or_else(no_path),
        "remove" => remove(doc, &tokens).map(drop).ok_or_else(no_path),
        "replace" => {
            let v = value()?;
            let slot = parent_mut(doc, &tokens).ok_or_else(no_path)?;
            *slot = v;
            Ok(())
        }
        "move" => {
            let from = from()?;
            if tokens.starts_with(&from) && tokens.len() > from.len() {
                return Err(malformed("cannot move a value into itself"));
            }
            let v = remove(doc, &from).ok_or_else(no_path)?;
            add(doc, &tokens, v).ok_or_else(no_path)
        }
        "copy" => {
            let v = get(doc, &from()?).cloned().ok_or_else(no_path)?;
            add(doc, &tokens, v).ok_or_else(no_path)
        }
        "test" => {
            let want = value()?;
            match get(doc, &tokens) {
                Some(v) if *v == want => Ok(()),
                _ => Err(PatchError::TestFailed {
                    index,
                    path: path.to_owned(),
                }),
            }
        }
        _ => Err(malformed(
            "`op` is not add, remove, replace, move, copy or test",
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Cases from RFC 6902 appendix A (A.1–A.10, A.12, A.13, A.16).
    #[test]
    fn rfc6902_appendix_a() {
        let cases = [
            (
                json!({"foo": "bar"}),
                json!([{"op": "add", "path": "/baz", "value": "qux"}]),
                Some(json!({"baz": "qux", "foo": "bar"})),
            ),
            (
                json!({"foo": ["bar", "baz"]}),
                json!([{"op": "add", "path": "/foo/1", "value": "qux"}]),
                Some(json!({"foo": ["bar", "qux", "baz"]})),
            ),
            (
                json!({"baz": "qux", "foo": "bar"}),
                json!([{"op": "remove", "path": "/baz"}]),
                Some(json!({"foo": "bar"})),
            ),
            (
                json!({"foo": ["bar", "qux", "baz"]}),
                json!([{"op": "remove", "path": "/foo/1"}]),
                Some(json!({"foo": ["bar", "baz"]})),
            ),
            (
                json!({"baz": "qux", "foo": "bar"}),
                json!([{"op": "replace", "path": "/baz", "value": "boo"}]),
                Some(json!({"baz": "boo", "foo": "bar"})),
            ),
            (
                json!({"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}}),
                json!([{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}]),
                Some(json!({"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}})),
            ),
            (
                json!({"foo": ["all", "grass", "cows", "eat"]}),
                json!([{"op": "move", "from": "/foo/1", "path": "/foo/3"}]),
                Some(json!({"foo": ["all", "cows", "eat", "grass"]})),
            ),
            (
                json!({"baz": "qux", "foo": ["a", 2, "c"]}),
                json!([{"op": "test", "path": "/baz", "value": "qux"}, {"op": "test", "path": "/foo/1", "value": 2}]),
                Some(json!({"baz": "qux", "foo": ["a", 2, "c"]})),
            ),
            (
                json!({"baz": "qux"}),
                json!([{"op": "test", "path": "/baz", "value": "bar"}]),
                None,
            ),
            (
                json!({"foo": "bar"}),
                json!([{"op": "add", "path": "/child", "value": {"grandchild": {}}}]),
                Some(json!({"foo": "bar", "child": {"grandchild": {}}})),
            ),
            (
                json!({"foo": "bar"}),
                json!([{"op": "add", "path": "/baz/bat", "value": "qux"}]),
                None,
            ),
            (
                json!({"foo": ["bar"]}),
                json!([{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}]),
                Some(json!({"foo": ["bar", ["abc", "def"]]})),
            ),
            (
                json!({"/": 9, "~1": 10}),
                json!([{"op": "test", "path": "/~01", "value": 10}]),
                Some(json!({"/": 9, "~1": 10})),
            ),
        ];
        for (i, (doc, patch, want)) in cases.into_iter().enumerate() {
            let mut d = doc.clone();
            match (apply(&mut d, &patch), want) {
                (Ok(()), Some(w)) => assert_eq!(d, w, "case {i}"),
                (Err(_), None) => assert_eq!(d, doc, "case {i}: failed patch changed the doc"),
                (r, w) => panic!("case {i}: {r:?} but expected {w:?}"),
            }
        }
    }

    #[test]
    fn failure_midway_leaves_doc_unchanged() {
        let mut d = json!({"a": 1});
        let err = apply(
            &mut d,
            &json!([{"op": "add", "path": "/b", "value": 2}, {"op": "remove", "path": "/zz"}]),
        )
        .unwrap_err();
        assert!(matches!(err, PatchError::NoPath { index: 1, .. }), "{err}");
        assert_eq!(d, json!({"a": 1}));
        assert!(apply(&mut d, &json!([{"op": "frob", "path": "/a"}])).is_err());
    }
}
