// A task body cannot capture a local: it is a function of the task, not a closure. App state
// (a pool, a client) goes to the worker with `.state(app)` and is read with `ctx.state::<App>()`.
use kiln_core::{task, Context, Result};

fn main() {
    let database_url = String::from("postgres://localhost/app");
    task! {
        pub Sync {
            id: "sync",
            run: async |_ctx: Context, _payload: ()| -> Result<usize> {
                Ok(database_url.len())
            }
        }
    }
}
