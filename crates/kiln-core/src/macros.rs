//! The `task!` macro: a Trigger.dev-style task definition that expands to a unit struct
//! implementing [`Task`](crate::Task), with every option checked at compile time.
//!
//! It is a `macro_rules!` macro rather than a proc-macro: the grammar is small, every check it
//! needs runs in `const` evaluation (durations, limits, ids), and it spares every user the
//! compile time of `syn`.

/// Defines a task.
///
/// ```
/// use kiln_core::{task, Context, Result};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// pub struct SchedulePayload { pub ws_id: String }
///
/// #[derive(Serialize, Deserialize)]
/// pub struct ScheduleOutcome { pub ws_id: String, pub success: bool, pub error: Option<String> }
///
/// task! {
///     /// Auto-schedules one workspace's tasks into its calendar.
///     pub ScheduleTask {
///         id: "schedule-task",
///         queue: { concurrency_limit: 10 },
///         retry: { max_attempts: 3, factor: 2.0, min_timeout: "1s", max_timeout: "60s" },
///         max_duration: "5m",
///         run: async |ctx: Context, payload: SchedulePayload| -> Result<ScheduleOutcome> {
///             let _ = ctx.attempt();
///             Ok(ScheduleOutcome { ws_id: payload.ws_id, success: true, error: None })
///         }
///     }
/// }
/// # use kiln_core::Task;
/// assert_eq!(ScheduleTask::ID, "schedule-task");
/// assert_eq!(ScheduleTask::DEFINITION.queue.concurrency_limit, Some(10));
/// ```
///
/// Options, in any order before `run`: `id` (required), `description`, `queue: { name,
/// concurrency_limit, total_limit }`, `retry: { max_attempts, factor, min_timeout, max_timeout,
/// randomize }`, `max_duration`, `ttl`, `priority` (a head start such as `"30s"`), `cron` (a
/// five-field pattern, `"0 * * * *"`, or `{ pattern: "30 2 * * *", timezone: "Europe/Berlin" }`,
/// synced to the schedules table when a worker starts), `payload_schema: true` (with the `schema`
/// feature and a payload type deriving `schemars::JsonSchema`: untyped triggers are checked
/// against the payload's JSON Schema), `state: App` (the body reads `ctx.state::<App>()`, and a
/// worker not given an `App` with `Worker::builder().state(..)` refuses to start; repeat the
/// option for several types). Durations are
/// strings with units: `"500ms"`, `"30s"`, `"5m"`, `"1h30m"`, `"2d"`.
#[macro_export]
macro_rules! task {
    (
        $(#[$attr:meta])*
        $vis:vis $name:ident { $($body:tt)* }
    ) => {
        $crate::task!(@parse [$(#[$attr])*] [$vis] $name [] $($body)*);
    };

    (@parse [$($attr:tt)*] [$vis:vis] $name:ident [$($opt:tt)*]
        run: async |$ctx:tt : $ctx_ty:ty, $payload:tt : $payload_ty:ty| -> $ret:ty $run_body:block $(,)?
    ) => {
        $($attr)*
        #[derive(Debug, Clone, Copy, Default)]
        $vis struct $name;

        impl $crate::Task for $name {
            const ID: &'static str = <Self as $crate::Task>::DEFINITION.id;
            const DEFINITION: $crate::TaskDefinition = {
                let definition = $crate::TaskDefinition::new();
                $crate::__kiln_task_doc!(definition, $($attr)*);
                $( let definition = $crate::__kiln_task_option!($name, definition, $opt); )*
                if let Err(_) = definition.validate() {
                    // The message names the problem; the definition's name is in the error span.
                    $crate::__kiln_panic_invalid!($name, definition);
                }
                definition
            };
            type Payload = $payload_ty;
            type Output = <$ret as $crate::TaskResult>::Output;

            fn payload_schema() -> ::core::option::Option<$crate::__serde_json::Value> {
                $crate::__kiln_payload_schema!($payload_ty; $($opt)*)
            }

            fn state_types() -> ::std::vec::Vec<$crate::StateType> {
                let mut types = ::std::vec::Vec::new();
                $crate::__kiln_state_types!(types; $($opt)*);
                types
            }

            fn run(
                &self,
                $ctx: $ctx_ty,
                $payload: $payload_ty,
            ) -> impl ::core::future::Future<
                Output = ::core::result::Result<Self::Output, $crate::Error>,
            > + Send {
                async move {
                    let result: $ret = async move $run_body.await;
                    $crate::TaskResult::into_task_result(result)
                }
            }
        }

        const _: () = {
            // Evaluate the definition at compile time so a bad option is a compile error.
            let _ = <$name as $crate::Task>::DEFINITION;
        };
    };

    (@parse [$($attr:tt)*] [$vis:vis] $name:ident [$($opt:tt)*]
        state : $state:ty $(, $($rest:tt)*)?
    ) => {
        $crate::task!(@parse [$($attr)*] [$vis] $name [$($opt)* (state $state)] $($($rest)*)?);
    };

    (@parse [$($attr:tt)*] [$vis:vis] $name:ident [$($opt:tt)*]
        $key:ident : $value:tt $(, $($rest:tt)*)?
    ) => {
        $crate::task!(@parse [$($attr)*] [$vis] $name [$($opt)* ($key $value)] $($($rest)*)?);
    };

    (@parse [$($attr:tt)*] [$vis:vis] $name:ident [$($opt:tt)*]) => {
        ::core::compile_error!(concat!(
            "task `", stringify!($name), "` has no body: end the definition with ",
            "`run: async |ctx: Context, payload: MyPayload| -> Result<MyOutput> { ... }`"
        ));
    };

    (@parse [$($attr:tt)*] [$vis:vis] $name:ident [$($opt:tt)*] $($other:tt)*) => {
        ::core::compile_error!(concat!(
            "task `", stringify!($name), "`: cannot read `", stringify!($($other)*), "`; ",
            "write options as `name: value,` and end with ",
            "`run: async |ctx: Context, payload: MyPayload| -> Result<MyOutput> { ... }`"
        ));
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __kiln_task_doc {
    ($def:ident, #[doc = $first:literal] $(#[doc = $doc:literal])* $($rest:tt)*) => {
        let $def = $def.description(concat!($first, "\n" $(, $doc, "\n")*));
    };
    ($def:ident, $($rest:tt)*) => {};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __kiln_task_option {
    ($name:ident, $def:ident, (id $v:literal)) => { $def.id($v) };
    ($name:ident, $def:ident, (payload_schema true)) => { $def };
    ($name:ident, $def:ident, (state $state:ty)) => { $def };
    ($name:ident, $def:ident, (payload_schema false)) => { $def };
    ($name:ident, $def:ident, (description $v:literal)) => { $def.description($v) };
    ($name:ident, $def:ident, (max_duration $v:literal)) => {
        $def.max_duration($crate::__kiln_duration!($name, max_duration, $v))
    };
    ($name:ident, $def:ident, (ttl $v:literal)) => {
        $def.ttl($crate::__kiln_duration!($name, ttl, $v))
    };
    ($name:ident, $def:ident, (cron $v:literal)) => { $def.cron($v, None) };
    ($name:ident, $def:ident, (cron { pattern: $p:literal $(, timezone: $tz:literal)? $(,)? })) => {
        $def.cron($p, $crate::__kiln_optional!($($tz)?))
    };
    ($name:ident, $def:ident, (priority $v:literal)) => {
        $def.priority($crate::__kiln_duration!($name, priority, $v))
    };
    ($name:ident, $def:ident, (queue { $($k:ident : $v:tt),* $(,)? })) => {{
        let queue = $crate::QueueDefinition::new();
        $( let queue = $crate::__kiln_queue_option!($name, queue, $k, $v); )*
        $def.queue(queue)
    }};
    ($name:ident, $def:ident, (retry { $($k:ident : $v:tt),* $(,)? })) => {{
        let retry = $crate::RetryPolicy::DEFAULT;
        $( let retry = $crate::__kiln_retry_option!($name, retry, $k, $v); )*
        $def.retry(retry)
    }};
    ($name:ident, $def:ident, ($key:ident $v:tt)) => {
        ::core::compile_error!(concat!(
            "task `", stringify!($name), "`: unknown option or bad value `", stringify!($key),
            ": ", stringify!($v), "`; options are id, description, queue { name, ",
            "concurrency_limit, total_limit }, retry { max_attempts, factor, min_timeout, ",
            "max_timeout, randomize }, max_duration, ttl, priority, cron (\"0 * * * *\" or ",
            "{ pattern: \"30 2 * * *\", timezone: \"Europe/Berlin\" }), payload_schema (true), state (a type)"
        ))
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __kiln_payload_schema {
    ($ty:ty; (payload_schema true) $($rest:tt)*) => {
        ::core::option::Option::Some($crate::payload_schema::schema_for::<$ty>())
    };
    ($ty:ty; ($key:ident $v:tt) $($rest:tt)*) => {
        $crate::__kiln_payload_schema!($ty; $($rest)*)
    };
    ($ty:ty;) => {
        ::core::option::Option::None
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __kiln_state_types {
    ($types:ident; (state $state:ty) $($rest:tt)*) => {
        $types.push($crate::StateType::of::<$state>());
        $crate::__kiln_state_types!($types; $($rest)*);
    };
    ($types:ident; ($key:ident $v:tt) $($rest:tt)*) => {
        $crate::__kiln_state_types!($types; $($rest)*);
    };
    ($types:ident;) => {};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __kiln_optional {
    () => {
        ::core::option::Option::None
    };
    ($v:literal) => {
        ::core::option::Option::Some($v)
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __kiln_queue_option {
    ($name:ident, $q:ident, name, $v:literal) => {
        $q.name($v)
    };
    ($name:ident, $q:ident, concurrency_limit, $v:literal) => {
        $q.concurrency_limit($v)
    };
    ($name:ident, $q:ident, total_limit, $v:literal) => {
        $q.total_limit($v)
    };
    ($name:ident, $q:ident, $k:ident, $v:tt) => {
        ::core::compile_error!(concat!(
            "task `",
            stringify!($name),
            "`: unknown queue option `",
            stringify!($k),
            "`; queue options are name, concurrency_limit, total_limit"
        ))
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __kiln_retry_option {
    ($name:ident, $r:ident, max_attempts, $v:literal) => {
        $crate::RetryPolicy {
            max_attempts: $v,
            ..$r
        }
    };
    ($name:ident, $r:ident, factor, $v:literal) => {
        $crate::RetryPolicy { factor: $v, ..$r }
    };
    ($name:ident, $r:ident, randomize, $v:literal) => {
        $crate::RetryPolicy {
            randomize: $v,
            ..$r
        }
    };
    ($name:ident, $r:ident, min_timeout, $v:literal) => {
        $crate::RetryPolicy {
            min_timeout: $crate::__kiln_duration!($name, retry.min_timeout, $v),
            ..$r
        }
    };
    ($name:ident, $r:ident, max_timeout, $v:literal) => {
        $crate::RetryPolicy {
            max_timeout: $crate::__kiln_duration!($name, retry.max_timeout, $v),
            ..$r
        }
    };
    ($name:ident, $r:ident, $k:ident, $v:tt) => {
        ::core::compile_error!(concat!(
            "task `",
            stringify!($name),
            "`: unknown retry option `",
            stringify!($k),
            "`; retry options are max_attempts, factor, min_timeout, max_timeout, randomize"
        ))
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __kiln_duration {
    ($name:ident, $($key:ident).+, $v:literal) => {
        match $crate::parse_duration($v) {
            Ok(duration) => duration,
            Err(_) => ::core::panic!(concat!(
                "task `", stringify!($name), "`: ", stringify!($($key).+), " = ", stringify!($v),
                " is not a duration; write a number and a unit, e.g. \"30s\", \"5m\", \"1h30m\" ",
                "(units: ms, s, m, h, d, w)"
            )),
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __kiln_panic_invalid {
    ($name:ident, $def:ident) => {
        match $def.validate() {
            Ok(()) => {}
            Err(message) => ::core::panic!("{}", message),
        }
    };
}
