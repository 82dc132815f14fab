use kiln_core::{task, Context, Result};

task! {
    pub SyncCalendar {
        id: "google-calendar-sync",
        max_duration: "5 minutes",
        run: async |_ctx: Context, _payload: ()| -> Result<()> { Ok(()) }
    }
}

fn main() {}
