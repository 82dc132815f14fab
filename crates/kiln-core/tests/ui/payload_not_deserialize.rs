// A payload travels as JSON: its type must implement serde's Serialize and Deserialize.
use kiln_core::{task, Context, Result};

pub struct Workspace {
    pub id: String,
}

task! {
    pub Sync {
        id: "sync",
        run: async |_ctx: Context, payload: Workspace| -> Result<String> {
            Ok(payload.id)
        }
    }
}

fn main() {}
