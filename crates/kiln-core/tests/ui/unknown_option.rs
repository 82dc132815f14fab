use kiln_core::{task, Context, Result};

task! {
    pub ScheduleTask {
        id: "schedule-task",
        retries: 5,
        run: async |_ctx: Context, _payload: ()| -> Result<()> { Ok(()) }
    }
}

fn main() {}
