//! `type = "headers"`: remove, set and add request or response headers, with values filled per request.

use super::{fill, Context, RequestState};
use http::HeaderMap;
use sluice_config::HeaderOps;

/// Removals first, then `set` (replacing every value), then `add` (appending).
pub fn apply(ops: &HeaderOps, headers: &mut HeaderMap, state: &RequestState, cx: &Context<'_>) {
    for name in &ops.remove {
        headers.remove(name);
    }
    for (name, template) in &ops.set {
        headers.insert(name.clone(), fill(template, state, cx.request_id, cx.route));
    }
    for (name, template) in &ops.add {
        headers.append(name.clone(), fill(template, state, cx.request_id, cx.route));
    }
}
