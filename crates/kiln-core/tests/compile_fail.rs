//! Bad task definitions fail to compile with a message that names the task and the problem.

#[test]
fn bad_task_definitions_are_compile_errors() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
