use kiln_core::{task, Context, Result};

task! {
    pub Nightly {
        id: "nightly",
        cron: { pattern: "30 25 * * *", timezone: "Europe/Berlin" },
        run: async |_ctx: Context, _payload: ()| -> Result<()> { Ok(()) }
    }
}

fn main() {}
