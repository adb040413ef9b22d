// The task both versions export (included by `versioned-one` and `versioned-two`, which
// differ only in [`VERSION`]): `which {"ms":N,"fail_times":K}` works about N ms (checking for
// cancellation), fails retryably on its first K attempts, then returns
// `{"version":VERSION,"attempt":A}`, so a test sees which code ran each attempt.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use warden_guest::TaskError;

#[derive(Deserialize)]
struct Args {
    #[serde(default)]
    ms: u64,
    #[serde(default)]
    fail_times: u32,
}

#[derive(Serialize)]
struct Ran {
    version: &'static str,
    attempt: u32,
}

fn which(args: Args) -> Result<Ran, TaskError> {
    let attempt = warden_guest::info().attempt;
    for _ in 0..args.ms / 10 {
        if warden_guest::cancelled() {
            return Err(TaskError::fatal("cancelled"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if attempt <= args.fail_times {
        return Err(TaskError::retryable(format!("version {VERSION}, attempt {attempt} fails on purpose")));
    }
    Ok(Ran { version: VERSION, attempt })
}

warden_guest::export_tasks! {
    which { description: "Says which version of its component ran", max_attempts: 5 },
}
