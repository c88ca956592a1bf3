//! The Admin API's OpenAPI 3.1 document, made from the router's own table
//! ([`super::ROUTES`]), so the two cannot drift apart.

use serde_json::{json, Map, Value};

/// The document.
pub fn document() -> Value {
    let error = json!({"$ref": "#/components/responses/Error"});
    let mut paths = Map::new();
    for (method, path, writes, summary) in super::ROUTES {
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .map(|p| json!({"name": p, "in": "path", "required": true,
                "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}}))
            .chain(writes.then(|| json!({"name": "dry_run", "in": "query",
                "schema": {"type": "boolean"}, "description": "Validate and answer what would change; store nothing."})))
            .chain(writes.then(|| json!({"name": "Idempotency-Key", "in": "header",
                "schema": {"type": "string", "maxLength": 255},
                "description": "A retried write gets the first answer (24 h, per admin key)."})))
            .chain((*writes && path.ends_with("{name}")).then(|| json!({"name": "If-Match",
                "in": "header", "schema": {"type": "string"},
                "description": "The consumer's ETag: a stale one is a 412."})))
            .collect();
        let mut op = json!({"summary": summary, "parameters": params,
            "security": [{"adminKey": []}, {"bearer": []}],
            "responses": {"200": {"description": "OK", "content": {"application/json": {}}},
                          "400": error, "401": error, "403": error, "404": error, "409": error,
                          "412": error, "422": error}});
        if *writes && !method.eq_ignore_ascii_case("DELETE") {
            op["requestBody"] =
                json!({"content": {"application/json": {"schema": {"type": "object"}}}});
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[method.to_ascii_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "ai-rate-limiter Admin API", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "adminKey": {"type": "apiKey", "in": "header", "name": "X-API-KEY"},
                "bearer": {"type": "http", "scheme": "bearer"}
            },
            "responses": {"Error": {"description": "An error", "content": {"application/json": {
                "schema": {"type": "object", "properties": {"error": {"type": "object",
                    "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                                   "param": {"type": ["string", "null"]}}}}}}}}}
        }
    })
}
