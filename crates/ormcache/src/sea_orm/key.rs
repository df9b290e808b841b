//! Entry keys of entity rows: `{model}:{id}`.

use std::fmt::Write as _;

use ::sea_orm::sea_query::{Value, ValueTuple};

use crate::error::{Error, Result};

/// `{model}:{id}`, the parts of a composite id joined by `:`.
pub(super) fn id_key(model: &str, id: ValueTuple) -> Result<String> {
    let mut key = String::from(model);
    for value in id {
        key.push(':');
        push_id_part(&mut key, &value)
            .map_err(|detail| Error::invalid("find_by_id", detail).with_key(&key))?;
    }
    Ok(key)
}

fn push_id_part(out: &mut String, value: &Value) -> std::result::Result<(), String> {
    let written = match value {
        Value::TinyInt(Some(n)) => write!(out, "{n}"),
        Value::SmallInt(Some(n)) => write!(out, "{n}"),
        Value::Int(Some(n)) => write!(out, "{n}"),
        Value::BigInt(Some(n)) => write!(out, "{n}"),
        Value::TinyUnsigned(Some(n)) => write!(out, "{n}"),
        Value::SmallUnsigned(Some(n)) => write!(out, "{n}"),
        Value::Unsigned(Some(n)) => write!(out, "{n}"),
        Value::BigUnsigned(Some(n)) => write!(out, "{n}"),
        Value::String(Some(s)) => {
            out.push_str(s);
            Ok(())
        }
        Value::Char(Some(c)) => {
            out.push(*c);
            Ok(())
        }
        other => {
            // SeaORM prints other types as SQL literals: 'text' or NULL.
            let literal = other.to_string();
            if literal == "NULL" {
                return Err("a primary key value is NULL".to_owned());
            }
            let bare = literal
                .strip_prefix('\'')
                .and_then(|s| s.strip_suffix('\''))
                .unwrap_or(&literal);
            out.push_str(bare);
            Ok(())
        }
    };
    written.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_keys() {
        assert_eq!(
            id_key("user", ValueTuple::One(7i32.into())).unwrap(),
            "user:7"
        );
        assert_eq!(
            id_key("user", ValueTuple::One("ann".into())).unwrap(),
            "user:ann"
        );
        assert_eq!(
            id_key("pair", ValueTuple::Two(1u64.into(), "x".into())).unwrap(),
            "pair:1:x"
        );
        assert_eq!(
            id_key("flag", ValueTuple::One(true.into())).unwrap(),
            "flag:TRUE"
        );
        let err = id_key("user", ValueTuple::One(Value::Int(None))).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
    }
}
