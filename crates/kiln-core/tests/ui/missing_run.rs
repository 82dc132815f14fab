use kiln_core::task;

task! {
    pub ScheduleTask {
        id: "schedule-task",
    }
}

fn main() {}
