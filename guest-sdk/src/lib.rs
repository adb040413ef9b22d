//! Write Warden tasks in Rust.
//!
//! A Warden task is a plain Rust function from a deserialisable argument type to a serialisable
//! result. [`export_tasks!`] turns a list of such functions into a WebAssembly component that
//! implements the `warden:task/handler` interface of `wit/task.wit`: it describes the tasks with
//! their options (retries, limits, concurrency, pins) and runs them, moving arguments and results
//! across the boundary as JSON text. The wit-bindgen machinery stays hidden in this crate.
//!
//! Inside a running task, the free functions of this crate reach the host: [`info`] says which
//! invocation and attempt is running, [`log`] records log lines, [`progress`] reports progress,
//! [`cancelled`] tells whether the invocation was cancelled, and [`call`] / [`wait`] /
//! [`wait_all`] call other tasks and wait on their results (the host suspends the guest while it
//! waits).
//!
//! # Example
//!
//! A crate of type `cdylib`, built with `cargo build --target wasm32-wasip2 --release`, yields a
//! component ready to upload:
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use warden_guest::TaskError;
//!
//! #[derive(Deserialize)]
//! struct Args {
//!     name: String,
//! }
//!
//! #[derive(Serialize)]
//! struct Greeting {
//!     greeting: String,
//! }
//!
//! /// Greets someone.
//! fn hello(args: Args) -> Result<Greeting, TaskError> {
//!     if args.name.is_empty() {
//!         return Err(TaskError::fatal("nobody to greet"));
//!     }
//!     warden_guest::log::info(format!("greeting {}", args.name));
//!     Ok(Greeting { greeting: format!("Hello, {}!", args.name) })
//! }
//!
//! #[derive(Deserialize)]
//! struct Square {
//!     x: u64,
//! }
//!
//! #[derive(Serialize, Deserialize)]
//! struct Squared {
//!     y: u64,
//! }
//!
//! fn square(args: Square) -> Result<Squared, TaskError> {
//!     Ok(Squared { y: args.x * args.x })
//! }
//!
//! #[derive(Deserialize)]
//! struct SumArgs {
//!     n: u64,
//! }
//!
//! /// Calls `square` for 0..n and sums the results.
//! fn sum_of_squares(args: SumArgs) -> Result<u64, TaskError> {
//!     let ids = (0..args.n)
//!         .map(|x| warden_guest::call("square", &serde_json::json!({ "x": x })))
//!         .collect::<Result<Vec<_>, _>>()?;
//!     let mut sum = 0;
//!     for result in warden_guest::wait_all::<Squared>(&ids) {
//!         sum += result?.y;
//!     }
//!     Ok(sum)
//! }
//!
//! warden_guest::export_tasks! {
//!     hello { description: "Greets someone", max_attempts: 3 },
//!     square,
//!     sum_of_squares {
//!         timeout_ms: 30_000,
//!         registration_concurrency: Arguments,
//!         pins: ["worker-%"],
//!     },
//! }
//! # fn main() {}
//! ```
//!
//! # Errors
//!
//! A task returns [`TaskError`]; its case tells the host what to do next (see its docs). Arguments
//! that do not deserialise into the task's argument type fail the attempt with
//! [`TaskError::InvalidArgs`] before the task runs. A panic aborts the attempt; the host records
//! it as a trap.

#![deny(missing_docs)]

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[doc(hidden)]
pub use wit_bindgen;

// `export_tasks!` expands in the task author's crate, where this crate is `warden_guest`; the
// bindings name the runtime by that path, so it has to resolve here too.
extern crate self as warden_guest;

/// The code wit-bindgen generates for the `task` world of `wit/task.wit`. Not a stable API:
/// use the functions and the macro of this crate instead.
#[doc(hidden)]
#[allow(missing_docs, unsafe_code, clippy::all, clippy::pedantic)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "task",
        pub_export_macro: true,
        default_bindings_module: "warden_guest::bindings",
        runtime_path: "warden_guest::wit_bindgen::rt",
    });
}

use bindings::warden::task::{calls, context, types};

/// Why a task did not produce a result. The case decides what the host does next.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "message")]
pub enum TaskError {
    /// The task can never succeed with these arguments: the host does not retry.
    Fatal(String),
    /// A passing failure (a flaky dependency, a busy resource): retried while attempts remain.
    Retryable(String),
    /// The arguments do not fit the task (bad JSON, missing field): the host does not retry.
    InvalidArgs(String),
    /// Anything else; the host treats it like [`TaskError::Retryable`].
    Other(String),
}

impl TaskError {
    /// A failure that no retry can fix.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self::Fatal(message.into())
    }

    /// A passing failure, retried while attempts remain.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::Retryable(message.into())
    }

    /// Arguments that do not fit the task.
    pub fn invalid_args(message: impl Into<String>) -> Self {
        Self::InvalidArgs(message.into())
    }

    /// Any other failure (retried like [`TaskError::retryable`]).
    pub fn other(message: impl Into<String>) -> Self {
        Self::Other(message.into())
    }

    /// The message, whatever the case.
    pub fn message(&self) -> &str {
        match self {
            Self::Fatal(m) | Self::Retryable(m) | Self::InvalidArgs(m) | Self::Other(m) => m,
        }
    }

    /// True if the host retries this error while attempts remain.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable(_) | Self::Other(_))
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fatal(m) => write!(f, "fatal: {m}"),
            Self::Retryable(m) => write!(f, "retryable: {m}"),
            Self::InvalidArgs(m) => write!(f, "invalid arguments: {m}"),
            Self::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for TaskError {}

/// A JSON error inside a task is deterministic (the same input fails the same way), so it is
/// [`TaskError::Fatal`]. Arguments that do not deserialise are reported as
/// [`TaskError::InvalidArgs`] by the macro before the task runs, not through this conversion.
impl From<serde_json::Error> for TaskError {
    fn from(error: serde_json::Error) -> Self {
        Self::Fatal(format!("json: {error}"))
    }
}

impl From<TaskError> for types::TaskError {
    fn from(error: TaskError) -> Self {
        match error {
            TaskError::Fatal(m) => Self::Fatal(m),
            TaskError::Retryable(m) => Self::Retryable(m),
            TaskError::InvalidArgs(m) => Self::InvalidArgs(m),
            TaskError::Other(m) => Self::Other(m),
        }
    }
}

impl From<types::TaskError> for TaskError {
    fn from(error: types::TaskError) -> Self {
        match error {
            types::TaskError::Fatal(m) => Self::Fatal(m),
            types::TaskError::Retryable(m) => Self::Retryable(m),
            types::TaskError::InvalidArgs(m) => Self::InvalidArgs(m),
            types::TaskError::Other(m) => Self::Other(m),
        }
    }
}

/// How invocations of a task are deduplicated (registration) or serialised (running).
///
/// In [`export_tasks!`] options, write the bare case: `running_concurrency: Keys`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Concurrency {
    /// No control: every call is its own invocation and may run at any time.
    #[default]
    Disabled,
    /// At most one invocation of the task in scope, whatever its arguments.
    Task,
    /// At most one invocation per distinct set of arguments.
    Arguments,
    /// At most one invocation per distinct value of the task's `key_arguments`.
    Keys,
}

impl From<Concurrency> for types::Concurrency {
    fn from(concurrency: Concurrency) -> Self {
        match concurrency {
            Concurrency::Disabled => Self::Disabled,
            Concurrency::Task => Self::Task,
            Concurrency::Arguments => Self::Arguments,
            Concurrency::Keys => Self::Keys,
        }
    }
}

/// What a running attempt knows about itself; see [`info`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvocationInfo {
    /// The invocation's id.
    pub id: String,
    /// The task being run.
    pub task: String,
    /// The attempt number, starting at 1.
    pub attempt: u32,
    /// The invocation that called this one, if any.
    pub parent: Option<String>,
    /// The workflow this invocation belongs to, if any.
    pub workflow: Option<String>,
}

/// Who and what the running attempt is: invocation id, task, attempt number, parent, workflow.
pub fn info() -> InvocationInfo {
    let info = context::info();
    InvocationInfo { id: info.id, task: info.task, attempt: info.attempt, parent: info.parent, workflow: info.workflow }
}

/// Reports progress: `done` out of `total` units, with an optional message.
pub fn progress(done: u64, total: u64, message: Option<&str>) {
    context::progress(done, total, message);
}

/// True once the invocation was cancelled: the task should return soon. The host interrupts it at
/// its next limit check in any case.
pub fn cancelled() -> bool {
    context::cancelled()
}

/// Log lines recorded on the running attempt (kept per task instance, capped by the host).
pub mod log {
    use crate::bindings::warden::task::{context, types::Level};

    fn log(level: Level, message: &str) {
        context::log(level, message);
    }

    /// Records a line of very fine detail.
    pub fn trace(message: impl AsRef<str>) {
        log(Level::Trace, message.as_ref());
    }

    /// Records a line useful when debugging.
    pub fn debug(message: impl AsRef<str>) {
        log(Level::Debug, message.as_ref());
    }

    /// Records a line of normal progress.
    pub fn info(message: impl AsRef<str>) {
        log(Level::Info, message.as_ref());
    }

    /// Records something odd that the task survived.
    pub fn warn(message: impl AsRef<str>) {
        log(Level::Warn, message.as_ref());
    }

    /// Records a failure.
    pub fn error(message: impl AsRef<str>) {
        log(Level::Error, message.as_ref());
    }
}

/// The id of an invocation started by [`call`]; pass it to [`wait`] or [`wait_all`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CallId(String);

impl CallId {
    /// Wraps an invocation id obtained some other way (e.g. passed in the arguments).
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The invocation id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<CallId> for String {
    fn from(id: CallId) -> Self {
        id.0
    }
}

impl AsRef<str> for CallId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Routes a call of `task` with `args` (serialised to JSON) and returns the child invocation's id
/// without waiting for it.
///
/// The id is deterministic (parent id + call sequence): a re-run of this attempt that makes the
/// same calls in the same order re-attaches to children that already exist.
pub fn call<A: Serialize + ?Sized>(task: &str, args: &A) -> Result<CallId, TaskError> {
    let args = serde_json::to_string(args)?;
    calls::call(task, &args).map(CallId).map_err(Into::into)
}

/// Waits until the invocation is final and returns its result deserialised into `T`, or its error.
///
/// The host suspends the guest while it waits and gives its run slot back.
pub fn wait<T: DeserializeOwned>(id: &CallId) -> Result<T, TaskError> {
    decode_result(id, calls::wait(id.as_str()))
}

/// Waits on several invocations; the results come back in the order of `ids`.
pub fn wait_all<T: DeserializeOwned>(ids: &[CallId]) -> Vec<Result<T, TaskError>> {
    let raw: Vec<String> = ids.iter().map(|id| id.0.clone()).collect();
    calls::wait_all(&raw).into_iter().zip(ids).map(|(result, id)| decode_result(id, result)).collect()
}

fn decode_result<T: DeserializeOwned>(id: &CallId, result: Result<String, types::TaskError>) -> Result<T, TaskError> {
    let json = result.map_err(TaskError::from)?;
    serde_json::from_str(&json)
        .map_err(|e| TaskError::fatal(format!("result of invocation {id} does not fit the expected type: {e}")))
}

/// Support for [`export_tasks!`]; not a stable API.
#[doc(hidden)]
pub mod __private {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    pub use crate::bindings::exports::warden::task::handler::Guest;
    pub use crate::bindings::warden::task::types::{TaskDef, TaskError as WitTaskError};
    use crate::{Concurrency, TaskError};

    /// The options of one task as written in `export_tasks!`, before conversion to WIT.
    #[derive(Default)]
    pub struct TaskOptions {
        pub description: Option<String>,
        pub max_attempts: Option<u32>,
        pub timeout_ms: Option<u64>,
        pub memory_limit_bytes: Option<u64>,
        pub registration_concurrency: Concurrency,
        pub running_concurrency: Concurrency,
        pub key_arguments: Vec<String>,
        pub pins: Vec<String>,
    }

    impl TaskOptions {
        pub fn into_def(self, name: &str) -> TaskDef {
            TaskDef {
                name: name.to_owned(),
                description: self.description,
                max_attempts: self.max_attempts,
                timeout_ms: self.timeout_ms,
                memory_limit_bytes: self.memory_limit_bytes,
                registration_concurrency: self.registration_concurrency.into(),
                running_concurrency: self.running_concurrency.into(),
                key_arguments: self.key_arguments,
                pins: self.pins,
            }
        }
    }

    /// Deserialises `args`, runs `task`, serialises its result.
    pub fn run_json<A, R, E, F>(args: &str, task: F) -> Result<String, WitTaskError>
    where
        A: DeserializeOwned,
        R: Serialize,
        TaskError: From<E>,
        F: FnOnce(A) -> Result<R, E>,
    {
        // An absent argument document is `null`, so tasks taking `()` or `Option<_>` work.
        let args = if args.trim().is_empty() { "null" } else { args };
        let args: A =
            serde_json::from_str(args).map_err(|e| WitTaskError::InvalidArgs(format!("arguments do not fit: {e}")))?;
        let result = task(args).map_err(|e| WitTaskError::from(TaskError::from(e)))?;
        serde_json::to_string(&result)
            .map_err(|e| WitTaskError::Fatal(format!("result does not serialise to json: {e}")))
    }

    /// The error for a task name the component does not export.
    pub fn unknown_task(task: &str, known: &[&str]) -> WitTaskError {
        WitTaskError::InvalidArgs(format!("unknown task `{task}`; this component exports: {}", known.join(", ")))
    }
}

/// Exports a list of task functions as the component's `warden:task/handler`.
///
/// Each entry is the name of a function in scope, `fn(A) -> Result<R, E>` where `A:
/// DeserializeOwned`, `R: Serialize` and `TaskError: From<E>`; the function's name is the task's
/// name. An entry may be followed by options in braces, all optional:
///
/// | option | value | meaning |
/// |---|---|---|
/// | `description` | `&str` | one line for humans |
/// | `max_attempts` | `u32` | attempts before the invocation fails for good |
/// | `timeout_ms` | `u64` | wall-clock limit of one attempt |
/// | `memory_limit_bytes` | `u64` | linear-memory limit of one attempt |
/// | `registration_concurrency` | `Disabled`, `Task`, `Arguments` or `Keys` | deduplication when a call is routed |
/// | `running_concurrency` | `Disabled`, `Task`, `Arguments` or `Keys` | serialisation when an invocation runs |
/// | `key_arguments` | `["a", "b"]` | argument names forming the key for `Keys` |
/// | `pins` | `["gpu-%"]` | ordered LIKE patterns over node names and labels |
///
/// Options left out take the host's defaults. Use the macro once per component.
///
/// ```no_run
/// # use warden_guest::TaskError;
/// # fn hello(_: serde_json::Value) -> Result<(), TaskError> { Ok(()) }
/// # fn resize(_: serde_json::Value) -> Result<(), TaskError> { Ok(()) }
/// # fn other_task(_: serde_json::Value) -> Result<(), TaskError> { Ok(()) }
/// warden_guest::export_tasks! {
///     hello { description: "Greets someone", max_attempts: 3 },
///     resize {
///         timeout_ms: 10_000,
///         memory_limit_bytes: 64 << 20,
///         running_concurrency: Keys,
///         key_arguments: ["image"],
///         pins: ["gpu-primary", "gpu-%"],
///     },
///     other_task,
/// }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_tasks {
    ($($task:ident $({ $($options:tt)* })?),+ $(,)?) => {
        /// The component's tasks, exported by `warden_guest::export_tasks!`.
        #[doc(hidden)]
        pub struct __WardenTasks;

        impl $crate::__private::Guest for __WardenTasks {
            fn describe() -> ::std::vec::Vec<$crate::__private::TaskDef> {
                ::std::vec![$({
                    #[allow(unused_mut)]
                    let mut options = $crate::__private::TaskOptions::default();
                    $($crate::__warden_task_options!(options; $($options)*);)?
                    options.into_def(::core::stringify!($task))
                }),+]
            }

            fn run(
                task: ::std::string::String,
                args: ::std::string::String,
            ) -> ::core::result::Result<::std::string::String, $crate::__private::WitTaskError> {
                match task.as_str() {
                    $(::core::stringify!($task) => $crate::__private::run_json(&args, $task),)+
                    unknown => ::core::result::Result::Err($crate::__private::unknown_task(
                        unknown,
                        &[$(::core::stringify!($task)),+],
                    )),
                }
            }
        }

        #[allow(unsafe_code)]
        const _: () = {
            $crate::bindings::export!(__WardenTasks with_types_in $crate::bindings);
        };
    };
}

/// Applies the options of one `export_tasks!` entry; not a stable API.
#[doc(hidden)]
#[macro_export]
macro_rules! __warden_task_options {
    ($o:ident;) => {};
    ($o:ident; description: $v:expr $(, $($rest:tt)*)?) => {
        $o.description = ::core::option::Option::Some(::std::string::String::from($v));
        $crate::__warden_task_options!($o; $($($rest)*)?);
    };
    ($o:ident; max_attempts: $v:expr $(, $($rest:tt)*)?) => {
        $o.max_attempts = ::core::option::Option::Some($v);
        $crate::__warden_task_options!($o; $($($rest)*)?);
    };
    ($o:ident; timeout_ms: $v:expr $(, $($rest:tt)*)?) => {
        $o.timeout_ms = ::core::option::Option::Some($v);
        $crate::__warden_task_options!($o; $($($rest)*)?);
    };
    ($o:ident; memory_limit_bytes: $v:expr $(, $($rest:tt)*)?) => {
        $o.memory_limit_bytes = ::core::option::Option::Some($v);
        $crate::__warden_task_options!($o; $($($rest)*)?);
    };
    ($o:ident; registration_concurrency: $v:ident $(, $($rest:tt)*)?) => {
        $o.registration_concurrency = $crate::Concurrency::$v;
        $crate::__warden_task_options!($o; $($($rest)*)?);
    };
    ($o:ident; running_concurrency: $v:ident $(, $($rest:tt)*)?) => {
        $o.running_concurrency = $crate::Concurrency::$v;
        $crate::__warden_task_options!($o; $($($rest)*)?);
    };
    ($o:ident; key_arguments: [$($v:expr),* $(,)?] $(, $($rest:tt)*)?) => {
        $o.key_arguments = ::std::vec![$(::std::string::String::from($v)),*];
        $crate::__warden_task_options!($o; $($($rest)*)?);
    };
    ($o:ident; pins: [$($v:expr),* $(,)?] $(, $($rest:tt)*)?) => {
        $o.pins = ::std::vec![$(::std::string::String::from($v)),*];
        $crate::__warden_task_options!($o; $($($rest)*)?);
    };
    ($o:ident; $option:ident $($rest:tt)*) => {
        ::core::compile_error!(::core::concat!(
            "unknown or malformed task option `",
            ::core::stringify!($option),
            "`; expected `description: \"..\"`, `max_attempts: N`, `timeout_ms: N`, ",
            "`memory_limit_bytes: N`, `registration_concurrency: Disabled|Task|Arguments|Keys`, ",
            "`running_concurrency: ..`, `key_arguments: [\"..\"]` or `pins: [\"..\"]`",
        ));
    };
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use serde::{Deserialize, Serialize};

    use super::__private::{Guest, WitTaskError};
    use super::{Concurrency, TaskError};

    #[derive(Deserialize)]
    struct Args {
        name: String,
    }

    #[derive(Serialize)]
    struct Greeting {
        greeting: String,
    }

    fn hello(args: Args) -> Result<Greeting, TaskError> {
        Ok(Greeting { greeting: format!("Hello, {}!", args.name) })
    }

    fn nothing(_: ()) -> Result<(), TaskError> {
        Err(TaskError::retryable("not yet"))
    }

    fn echo(args: serde_json::Value) -> Result<serde_json::Value, serde_json::Error> {
        Ok(args)
    }

    crate::export_tasks! {
        hello { description: "Greets someone", max_attempts: 3 },
        nothing,
        echo {
            timeout_ms: 1_000,
            memory_limit_bytes: 64 << 20,
            registration_concurrency: Arguments,
            running_concurrency: Keys,
            key_arguments: ["a", "b"],
            pins: ["gpu-%"],
        },
    }

    #[test]
    fn describe_lists_tasks_with_their_options() {
        let defs = __WardenTasks::describe();
        let names: Vec<_> = defs.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["hello", "nothing", "echo"]);

        assert_eq!(defs[0].description.as_deref(), Some("Greets someone"));
        assert_eq!(defs[0].max_attempts, Some(3));
        assert_eq!(defs[0].timeout_ms, None);

        assert_eq!(defs[1].description, None);
        assert!(defs[1].pins.is_empty());

        let echo = &defs[2];
        assert_eq!(echo.timeout_ms, Some(1_000));
        assert_eq!(echo.memory_limit_bytes, Some(64 << 20));
        assert_eq!(echo.registration_concurrency, Concurrency::Arguments.into());
        assert_eq!(echo.running_concurrency, Concurrency::Keys.into());
        assert_eq!(echo.key_arguments, ["a", "b"]);
        assert_eq!(echo.pins, ["gpu-%"]);
    }

    #[test]
    fn run_round_trips_json() {
        let out = __WardenTasks::run("hello".into(), r#"{"name":"Ada"}"#.into()).unwrap();
        assert_eq!(out, r#"{"greeting":"Hello, Ada!"}"#);

        let out = __WardenTasks::run("echo".into(), r#"{"x":[1,2]}"#.into()).unwrap();
        assert_eq!(out, r#"{"x":[1,2]}"#);
    }

    #[test]
    fn run_reports_errors_by_case() {
        match __WardenTasks::run("hello".into(), r#"{"nom":"Ada"}"#.into()) {
            Err(WitTaskError::InvalidArgs(m)) => assert!(m.contains("name"), "{m}"),
            other => panic!("{other:?}"),
        }
        match __WardenTasks::run("nothing".into(), String::new()) {
            Err(WitTaskError::Retryable(m)) => assert_eq!(m, "not yet"),
            other => panic!("{other:?}"),
        }
        match __WardenTasks::run("nope".into(), "{}".into()) {
            Err(WitTaskError::InvalidArgs(m)) => {
                assert!(m.contains("unknown task `nope`"), "{m}");
                assert!(m.contains("hello, nothing, echo"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn task_error_converts_both_ways() {
        for error in
            [TaskError::fatal("a"), TaskError::retryable("b"), TaskError::invalid_args("c"), TaskError::other("d")]
        {
            let wit: WitTaskError = error.clone().into();
            assert_eq!(TaskError::from(wit), error);
        }
        let json_error = serde_json::from_str::<u8>("x").unwrap_err();
        assert!(matches!(TaskError::from(json_error), TaskError::Fatal(_)));
        assert!(TaskError::other("x").is_retryable());
        assert!(!TaskError::invalid_args("x").is_retryable());
    }
}
