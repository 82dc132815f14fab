use kiln_core::{task, Context, Result};

task! {
    pub ScheduleTask {
        queue: { concurrency_limit: 10 },
        run: async |_ctx: Context, _payload: ()| -> Result<()> { Ok(()) }
    }
}

fn main() {}
