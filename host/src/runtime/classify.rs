//! How an attempt ended, in the host's terms: conversions between the WIT types and the domain
//! types of `model`, result validation, and the classification of wasmtime errors into
//! `ErrorKind`s (timeout, cancellation, memory limit, trap, host failure).

use super::bindings::{Concurrency as WitConcurrency, GuestTaskDef, TaskError};
use super::ctx::Interrupt;
use crate::model::{Concurrency, ErrorKind, TaskDef, TaskFailure, defaults};

/// Longest trap message kept (the wasm backtrace can be long).
const MAX_TRAP_MESSAGE: usize = 4096;

/// A guest's `task-error` as a failure.
pub(crate) fn failure_from_guest(e: TaskError) -> TaskFailure {
    match e {
        TaskError::Fatal(m) => TaskFailure::new(ErrorKind::Fatal, m),
        TaskError::Retryable(m) => TaskFailure::new(ErrorKind::Retryable, m),
        TaskError::InvalidArgs(m) => TaskFailure::new(ErrorKind::InvalidArgs, m),
        TaskError::Other(m) => TaskFailure::new(ErrorKind::Other, m),
    }
}

/// A failure handed to a guest (the error of `calls.call`/`calls.wait`): the closest case, and
/// `other("kind: message")` for kinds the WIT variant does not have.
pub(crate) fn failure_to_guest(f: TaskFailure) -> TaskError {
    match f.kind {
        ErrorKind::Fatal => TaskError::Fatal(f.message),
        ErrorKind::Retryable => TaskError::Retryable(f.message),
        ErrorKind::InvalidArgs => TaskError::InvalidArgs(f.message),
        ErrorKind::Other => TaskError::Other(f.message),
        kind => TaskError::Other(format!("{}: {}", kind_name(kind), f.message)),
    }
}

/// The lower snake case name of a kind (as stored and shown in the API).
pub(crate) fn kind_name(kind: ErrorKind) -> String {
    match serde_json::to_value(kind) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{kind:?}").to_lowercase(),
    }
}

fn concurrency(c: WitConcurrency) -> Concurrency {
    match c {
        WitConcurrency::Disabled => Concurrency::Disabled,
        WitConcurrency::Task => Concurrency::Task,
        WitConcurrency::Arguments => Concurrency::Arguments,
        WitConcurrency::Keys => Concurrency::Keys,
    }
}

/// Turns a component's `describe` answer into task definitions with the host defaults applied,
/// rejecting lists the host cannot register.
pub(crate) fn task_defs(
    described: Vec<GuestTaskDef>,
    component: &str,
    max_memory_bytes: u64,
) -> Result<Vec<TaskDef>, String> {
    if described.is_empty() {
        return Err("the component describes no tasks".into());
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(described.len());
    for d in described {
        if d.name.trim().is_empty() {
            return Err("a task has an empty name".into());
        }
        if !seen.insert(d.name.clone()) {
            return Err(format!("task `{}` is described more than once", d.name));
        }
        let def = TaskDef {
            component: component.to_string(),
            description: d.description,
            max_attempts: d.max_attempts.unwrap_or(defaults::MAX_ATTEMPTS),
            timeout_ms: d.timeout_ms.unwrap_or(defaults::TIMEOUT_MS),
            memory_limit_bytes: d.memory_limit_bytes.unwrap_or(defaults::MEMORY_LIMIT_BYTES),
            registration_concurrency: concurrency(d.registration_concurrency),
            running_concurrency: concurrency(d.running_concurrency),
            key_arguments: d.key_arguments,
            pins: d.pins,
            paused: false,
            name: d.name,
            policy: crate::model::TaskPolicy::default(),
        };
        if def.max_attempts == 0 {
            return Err(format!("task `{}`: max-attempts must be at least 1", def.name));
        }
        if def.timeout_ms == 0 {
            return Err(format!("task `{}`: timeout-ms must be at least 1", def.name));
        }
        if def.memory_limit_bytes == 0 || def.memory_limit_bytes > max_memory_bytes {
            return Err(format!(
                "task `{}`: memory-limit-bytes must be between 1 and the host's maximum of {max_memory_bytes} bytes, not {}",
                def.name, def.memory_limit_bytes
            ));
        }
        out.push(def);
    }
    Ok(out)
}

/// Checks a guest's result: valid JSON text of at most `max_bytes` bytes.
pub(crate) fn validate_result(result: String, max_bytes: usize) -> Result<String, TaskFailure> {
    if result.len() > max_bytes {
        return Err(TaskFailure::new(
            ErrorKind::BadResult,
            format!("the result is {} bytes, over the limit of {max_bytes} bytes", result.len()),
        ));
    }
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&result) {
        return Err(TaskFailure::new(ErrorKind::BadResult, format!("the result is not valid JSON: {e}")));
    }
    Ok(result)
}

/// The failure of an attempt that ran out of time.
pub(crate) fn timeout(timeout_ms: u64) -> TaskFailure {
    TaskFailure::new(ErrorKind::Timeout, format!("attempt exceeded its timeout of {timeout_ms} ms"))
}

/// The failure of an attempt that asked for more memory than its limit.
pub(crate) fn memory_limit(limit_bytes: u64) -> TaskFailure {
    TaskFailure::new(ErrorKind::MemoryLimit, format!("attempt exceeded its memory limit of {limit_bytes} bytes"))
}

/// The failure of an attempt whose invocation was cancelled.
pub(crate) fn cancelled() -> TaskFailure {
    TaskFailure::new(ErrorKind::Cancelled, "the invocation was cancelled while running")
}

/// What the limits of an attempt were, for the messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seen {
    pub(crate) timeout_ms: u64,
    pub(crate) memory_limit_bytes: u64,
    /// The memory limiter refused a growth during the attempt.
    pub(crate) memory_exceeded: bool,
}

/// Classifies the error of a call into the guest (after instantiation). `stderr` is the guest's
/// captured stderr: a Rust panic message found there is added to a trap's message.
pub(crate) fn call_error(e: &wasmtime::Error, seen: Seen, stderr: &str) -> TaskFailure {
    if let Some(i) = e.downcast_ref::<Interrupt>() {
        return match i {
            Interrupt::Timeout => timeout(seen.timeout_ms),
            Interrupt::Cancelled => cancelled(),
        };
    }
    // A refused growth traps directly, or (if the guest handles `memory.grow` failing) ends in
    // the guest's own abort: either way the cause is the memory limit.
    if seen.memory_exceeded {
        return memory_limit(seen.memory_limit_bytes);
    }
    if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return TaskFailure::new(
            ErrorKind::Trap,
            format!("the guest called exit with status {} instead of returning a result", exit.0),
        );
    }
    TaskFailure::new(ErrorKind::Trap, trap_message(e, panic_message(stderr)))
}

/// The last Rust panic report in a guest's stderr (`panicked at file:line:col:` and the
/// message line after it), on one line.
pub(crate) fn panic_message(stderr: &str) -> Option<String> {
    let at = stderr.rfind("panicked at ")?;
    let mut lines = stderr[at..].lines();
    let location = lines.next()?.trim_end();
    let message = lines.next().map(str::trim).unwrap_or_default();
    Some(if message.is_empty() { location.to_string() } else { format!("{location} {message}") })
}

/// Classifies the error of instantiating the component.
pub(crate) fn instantiate_error(e: &wasmtime::Error, seen: Seen) -> TaskFailure {
    if seen.memory_exceeded {
        return memory_limit(seen.memory_limit_bytes);
    }
    if e.downcast_ref::<wasmtime::Trap>().is_some() {
        // A start function or data initialisation that trapped is the guest's fault.
        return TaskFailure::new(
            ErrorKind::Trap,
            format!("the component trapped while starting: {}", trap_message(e, None)),
        );
    }
    TaskFailure::new(ErrorKind::Host, format!("instantiating the component failed: {}", one_line(e)))
}

/// The trap's cause first, then the guest's panic message if any, then the context (the wasm
/// backtrace), capped.
fn trap_message(e: &wasmtime::Error, panic: Option<String>) -> String {
    let mut msg = match e.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => {
            let trap = trap.to_string();
            format!("guest trapped: {}", trap.strip_prefix("wasm trap: ").unwrap_or(&trap))
        }
        None => format!("guest failed: {}", e.root_cause()),
    };
    if let Some(panic) = panic {
        msg.push_str(&format!(" (the guest {panic})"));
    }
    let context = e.to_string();
    if !context.is_empty() && !msg.ends_with(&context) {
        msg.push('\n');
        msg.push_str(&context);
    }
    if msg.len() > MAX_TRAP_MESSAGE {
        let mut end = MAX_TRAP_MESSAGE;
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        msg.truncate(end);
        msg.push('…');
    }
    msg
}

/// The error chain on one line: `outer: inner: root`.
pub(crate) fn one_line(e: &wasmtime::Error) -> String {
    let parts: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen() -> Seen {
        Seen { timeout_ms: 1000, memory_limit_bytes: 1 << 20, memory_exceeded: false }
    }

    #[test]
    fn guest_errors_map_to_kinds() {
        let cases = [
            (TaskError::Fatal("a".into()), ErrorKind::Fatal),
            (TaskError::Retryable("a".into()), ErrorKind::Retryable),
            (TaskError::InvalidArgs("a".into()), ErrorKind::InvalidArgs),
            (TaskError::Other("a".into()), ErrorKind::Other),
        ];
        for (e, kind) in cases {
            let f = failure_from_guest(e);
            assert_eq!(f.kind, kind);
            assert_eq!(f.message, "a");
        }
    }

    #[test]
    fn host_failures_map_to_the_closest_case() {
        let to = |k| failure_to_guest(TaskFailure::new(k, "boom"));
        assert!(matches!(to(ErrorKind::Fatal), TaskError::Fatal(m) if m == "boom"));
        assert!(matches!(to(ErrorKind::InvalidArgs), TaskError::InvalidArgs(m) if m == "boom"));
        assert!(matches!(to(ErrorKind::Retryable), TaskError::Retryable(m) if m == "boom"));
        assert!(matches!(to(ErrorKind::Other), TaskError::Other(m) if m == "boom"));
        assert!(matches!(to(ErrorKind::Timeout), TaskError::Other(m) if m == "timeout: boom"));
        assert!(matches!(to(ErrorKind::MemoryLimit), TaskError::Other(m) if m == "memory_limit: boom"));
    }

    #[test]
    fn results_must_be_json_within_the_cap() {
        assert_eq!(validate_result(r#"{"a":1}"#.into(), 100), Ok(r#"{"a":1}"#.to_string()));
        assert_eq!(validate_result("null".into(), 100), Ok("null".to_string()));
        let bad = validate_result("{nope".into(), 100);
        assert!(bad.is_err_and(|f| f.kind == ErrorKind::BadResult && f.message.contains("not valid JSON")));
        let trailing = validate_result("1 2".into(), 100);
        assert!(trailing.is_err_and(|f| f.kind == ErrorKind::BadResult));
        let big = validate_result(format!("\"{}\"", "x".repeat(200)), 100);
        assert!(big.is_err_and(|f| f.kind == ErrorKind::BadResult && f.message.contains("over the limit")));
    }

    #[test]
    fn interrupts_classify_before_anything_else() {
        let mut s = seen();
        s.memory_exceeded = true;
        let e = wasmtime::Error::new(Interrupt::Timeout).context("error while executing at wasm backtrace");
        let f = call_error(&e, s, "");
        assert_eq!(f, TaskFailure::new(ErrorKind::Timeout, "attempt exceeded its timeout of 1000 ms"));
        let e = wasmtime::Error::new(Interrupt::Cancelled);
        assert_eq!(call_error(&e, s, "").kind, ErrorKind::Cancelled);
    }

    #[test]
    fn a_refused_growth_is_a_memory_limit_even_if_the_guest_aborts() {
        let mut s = seen();
        s.memory_exceeded = true;
        let e = wasmtime::Error::new(wasmtime::Trap::UnreachableCodeReached);
        let f = call_error(&e, s, "");
        assert_eq!(f, TaskFailure::new(ErrorKind::MemoryLimit, "attempt exceeded its memory limit of 1048576 bytes"));
        assert_eq!(instantiate_error(&e, s).kind, ErrorKind::MemoryLimit);
    }

    #[test]
    fn other_traps_keep_their_message() {
        let e = wasmtime::Error::new(wasmtime::Trap::UnreachableCodeReached).context("at wasm backtrace: 0: foo");
        let f = call_error(&e, seen(), "");
        assert_eq!(f.kind, ErrorKind::Trap);
        assert!(f.message.starts_with("guest trapped: "), "{}", f.message);
        assert!(f.message.contains("unreachable"), "{}", f.message);
        assert!(f.message.contains("foo"), "{}", f.message);
    }

    #[test]
    fn a_panic_message_joins_the_trap() {
        let stderr = "noise\nthread '<unnamed>' (1) panicked at src/lib.rs:135:5:\nthis task panics on purpose\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(panic_message(stderr).as_deref(), Some("panicked at src/lib.rs:135:5: this task panics on purpose"));
        assert_eq!(panic_message("all quiet"), None);
        let e = wasmtime::Error::new(wasmtime::Trap::UnreachableCodeReached);
        let f = call_error(&e, seen(), stderr);
        assert!(
            f.message.starts_with(
                "guest trapped: wasm `unreachable` instruction executed (the guest panicked at src/lib.rs:135:5: this task panics on purpose)"
            ),
            "{}",
            f.message
        );
    }

    #[test]
    fn instantiation_failures_are_host_errors() {
        let e = wasmtime::Error::msg("pool exhausted");
        let f = instantiate_error(&e, seen());
        assert_eq!(f.kind, ErrorKind::Host);
        assert!(f.message.contains("pool exhausted"));
    }

    fn def(name: &str) -> GuestTaskDef {
        GuestTaskDef {
            name: name.into(),
            description: None,
            max_attempts: None,
            timeout_ms: Some(5),
            memory_limit_bytes: None,
            registration_concurrency: WitConcurrency::Keys,
            running_concurrency: WitConcurrency::Task,
            key_arguments: vec!["user".into()],
            pins: vec![],
        }
    }

    #[test]
    fn describe_applies_defaults_and_names_the_component() {
        let defs = task_defs(vec![def("a"), def("b")], "comp", 4 << 30);
        let defs = defs.unwrap_or_default();
        assert_eq!(defs.len(), 2);
        assert_eq!(defs[0].component, "comp");
        assert_eq!(defs[0].max_attempts, defaults::MAX_ATTEMPTS);
        assert_eq!(defs[0].timeout_ms, 5);
        assert_eq!(defs[0].memory_limit_bytes, defaults::MEMORY_LIMIT_BYTES);
        assert_eq!(defs[0].registration_concurrency, Concurrency::Keys);
        assert_eq!(defs[0].running_concurrency, Concurrency::Task);
        assert_eq!(defs[0].key_arguments, vec!["user".to_string()]);
        assert!(!defs[0].paused);
    }

    #[test]
    fn describe_rejects_bad_lists() {
        assert!(task_defs(vec![], "c", 1 << 30).is_err());
        assert!(task_defs(vec![def("")], "c", 1 << 30).is_err());
        assert!(task_defs(vec![def("a"), def("a")], "c", 1 << 30).is_err_and(|m| m.contains("`a`")));
        let mut zero = def("z");
        zero.max_attempts = Some(0);
        assert!(task_defs(vec![zero], "c", 1 << 30).is_err());
        let mut huge = def("h");
        huge.memory_limit_bytes = Some(8 << 30);
        assert!(task_defs(vec![huge], "c", 1 << 30).is_err());
    }
}
