//! Saved searches, per user (`web_saved_searches`): a name and the search as the form
//! gives it (paging excluded). Each user sees, runs and deletes only their own; creating
//! and deleting are audited (the filter is in the entry), running is audited as a
//! `search`.

use serde::Serialize;
use serde_json::{json, Value};

use branchrec_core::console::Permission;

use super::access::SearchInput;
use super::auth::Ctx;
use super::WebError;
use crate::central::index::now_ms;

/// A saved search.
#[derive(Debug, Clone, Serialize)]
pub struct Saved {
    /// Id.
    pub id: i64,
    /// Name given by the user.
    pub name: String,
    /// The search (offset 0).
    pub search: SearchInput,
    /// Created (unix ms).
    pub created_ms: i64,
}

/// Most saved searches per user.
pub const MAX_PER_USER: i64 = 200;

fn check_name(name: &str) -> Result<String, WebError> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 100 || n.chars().any(char::is_control) {
        return Err(WebError::BadRequest(
            "a saved search needs a name of 1 to 100 printable characters".into(),
        ));
    }
    Ok(n.to_string())
}

/// The user's saved searches, by name.
pub fn list(ctx: &mut Ctx) -> Result<Vec<Saved>, WebError> {
    ctx.user.require(Permission::Metadata)?;
    let rows = ctx.db.query(
        "SELECT search_id, name, filter, created_ms FROM web_saved_searches
         WHERE user_id = $1 ORDER BY name",
        &[&ctx.user.id],
    )?;
    Ok(rows
        .iter()
        .map(|r| Saved {
            id: r.get(0),
            name: r.get(1),
            search: serde_json::from_value(r.get::<_, Value>(2)).unwrap_or_default(),
            created_ms: r.get(3),
        })
        .collect())
}

/// Save `search` under `name` (a name already used by this user is replaced).
pub fn create(ctx: &mut Ctx, name: &str, search: &SearchInput) -> Result<i64, WebError> {
    ctx.user.require(Permission::Metadata)?;
    let name = check_name(name)?;
    // Refuse a filter that would not run.
    search.filter(&ctx.user, 1)?;
    let mut search = search.clone();
    search.offset = 0;
    let n: i64 = ctx
        .db
        .query_one(
            "SELECT count(*) FROM web_saved_searches WHERE user_id = $1",
            &[&ctx.user.id],
        )?
        .get(0);
    if n >= MAX_PER_USER {
        return Err(WebError::BadRequest(format!(
            "at most {MAX_PER_USER} saved searches per user"
        )));
    }
    let filter = serde_json::to_value(&search).unwrap_or(Value::Null);
    let id: i64 = ctx
        .db
        .query_one(
            "INSERT INTO web_saved_searches (user_id, name, filter, created_ms)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id, name) DO UPDATE SET filter = EXCLUDED.filter,
                 created_ms = EXCLUDED.created_ms
             RETURNING search_id",
            &[&ctx.user.id, &name, &filter, &now_ms()],
        )?
        .get(0);
    let actor = ctx.user.actor();
    ctx.app.audit(
        &mut ctx.db,
        &actor,
        "saved_search_create",
        &format!("saved_search:{id}"),
        &json!({ "name": name, "filter": filter }),
    )?;
    Ok(id)
}

/// One of the user's saved searches (another user's answers 404).
pub fn get(ctx: &mut Ctx, id: i64) -> Result<Saved, WebError> {
    ctx.user.require(Permission::Metadata)?;
    let r = ctx
        .db
        .query_opt(
            "SELECT search_id, name, filter, created_ms FROM web_saved_searches
             WHERE search_id = $1 AND user_id = $2",
            &[&id, &ctx.user.id],
        )?
        .ok_or(WebError::NotFound)?;
    Ok(Saved {
        id: r.get(0),
        name: r.get(1),
        search: serde_json::from_value(r.get::<_, Value>(2))
            .map_err(|e| WebError::BadRequest(format!("saved search {id}: {e}")))?,
        created_ms: r.get(3),
    })
}

/// Delete one of the user's saved searches.
pub fn delete(ctx: &mut Ctx, id: i64) -> Result<(), WebError> {
    let s = get(ctx, id)?;
    ctx.db.execute(
        "DELETE FROM web_saved_searches WHERE search_id = $1 AND user_id = $2",
        &[&id, &ctx.user.id],
    )?;
    let actor = ctx.user.actor();
    ctx.app.audit(
        &mut ctx.db,
        &actor,
        "saved_search_delete",
        &format!("saved_search:{id}"),
        &json!({ "name": s.name }),
    )?;
    Ok(())
}

/// A saved-search id from a path segment.
pub fn parse_id(s: &str) -> Result<i64, WebError> {
    s.parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or(WebError::NotFound)
}
