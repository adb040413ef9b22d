//! A task that fails on purpose: `flaky {"fail_times":K}` fails with a retryable error on its
//! first K attempts, then returns `{"attempt":K+1}`. Exercises the host's retries.

use serde::{Deserialize, Serialize};
use warden_guest::TaskError;

#[derive(Deserialize)]
struct Args {
    fail_times: u32,
}

#[derive(Serialize)]
struct Done {
    attempt: u32,
}

/// Fails while the attempt number is at most `fail_times`.
fn flaky(args: Args) -> Result<Done, TaskError> {
    let attempt = warden_guest::info().attempt;
    if attempt <= args.fail_times {
        warden_guest::log::warn(format!("attempt {attempt} fails on purpose"));
        return Err(TaskError::retryable(format!("attempt {attempt} of {} planned failures", args.fail_times)));
    }
    Ok(Done { attempt })
}

warden_guest::export_tasks! {
    flaky { description: "Fails retryably on its first attempts", max_attempts: 5 },
}
