use kiln_core::{task, Context, Result};

task! {
    pub ScheduleTask {
        id: "schedule-task",
        queue: { concurrency_limit: 0 },
        run: async |_ctx: Context, _payload: ()| -> Result<()> { Ok(()) }
    }
}

fn main() {}
