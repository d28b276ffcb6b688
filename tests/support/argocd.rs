//! Runs the chart's Argo CD Lua scripts the way Argo CD does: a real Lua 5.1 with only the libraries Argo CD's
//! sandbox opens for custom scripts (base, table, package, and an `os` with `time` and `date` only — no string
//! library), the object as the global `obj` decoded from JSON (null becomes nil), and the chunk's return value
//! read back as JSON.

use std::path::PathBuf;

use mlua::{Lua, LuaOptions, StdLib, Table, Value};
use serde_json::Value as Json;

/// The directory holding health.lua and actions/.
pub fn scripts_dir() -> PathBuf {
    super::repo().join("charts/keyward/argocd")
}

/// The text of one script, relative to [`scripts_dir`].
pub fn script(rel: &str) -> String {
    std::fs::read_to_string(scripts_dir().join(rel)).unwrap()
}

/// Runs `script` with `obj` set to `object`; the value the chunk returns, as JSON.
pub fn run(script: &str, name: &str, object: &Json) -> Result<Json, String> {
    let lua = Lua::new_with(StdLib::TABLE | StdLib::PACKAGE | StdLib::OS, LuaOptions::default())
        .map_err(|e| e.to_string())?;
    let run = || -> mlua::Result<Json> {
        let globals = lua.globals();
        let os: Table = globals.get("os")?;
        let safe = lua.create_table()?;
        safe.set("time", os.get::<mlua::Function>("time")?)?;
        safe.set("date", os.get::<mlua::Function>("date")?)?;
        globals.set("os", safe)?;
        globals.set("obj", to_lua(&lua, object)?)?;
        let out: Value = lua.load(script).set_name(name).eval()?;
        Ok(to_json(&out))
    };
    run().map_err(|e| e.to_string())
}

/// Argo CD's health result: (status, message).
pub fn health(object: &Json) -> (String, String) {
    let out = run(&script("health.lua"), "health.lua", object).unwrap();
    let status = out["status"].as_str().unwrap_or_default().to_string();
    let message = out["message"].as_str().unwrap_or_default().to_string();
    (status, message)
}

fn to_lua(lua: &Lua, v: &Json) -> mlua::Result<Value> {
    Ok(match v {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => Value::Number(n.as_f64().unwrap_or_default()),
        Json::String(s) => Value::String(lua.create_string(s)?),
        Json::Array(items) => {
            let t = lua.create_table()?;
            for (i, item) in items.iter().enumerate() {
                t.raw_set(i + 1, to_lua(lua, item)?)?;
            }
            Value::Table(t)
        }
        Json::Object(map) => {
            let t = lua.create_table()?;
            for (k, item) in map {
                t.raw_set(k.as_str(), to_lua(lua, item)?)?;
            }
            Value::Table(t)
        }
    })
}

fn to_json(v: &Value) -> Json {
    match v {
        Value::Nil => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(i) => Json::from(*i),
        Value::Number(n) if n.fract() == 0.0 && n.abs() < 1e15 => Json::from(*n as i64),
        Value::Number(n) => Json::from(*n),
        Value::String(s) => Json::String(s.to_string_lossy()),
        Value::Table(t) => {
            // A table whose keys are exactly 1..n is an array, as Argo CD's JSON encoder sees it.
            let n = t.raw_len();
            let pairs: Vec<(Value, Value)> = t.pairs::<Value, Value>().map(|p| p.unwrap()).collect();
            if n > 0 && pairs.len() == n {
                Json::Array((1..=n).map(|i| to_json(&t.raw_get::<Value>(i).unwrap())).collect())
            } else {
                let mut map = serde_json::Map::new();
                for (k, item) in pairs {
                    let key = match k {
                        Value::String(s) => s.to_string_lossy(),
                        other => to_json(&other).to_string(),
                    };
                    map.insert(key, to_json(&item));
                }
                Json::Object(map)
            }
        }
        other => Json::String(format!("<{}>", other.type_name())),
    }
}
