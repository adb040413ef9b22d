//! A task that takes its time: `slow {"ms":N}` works about N ms in ten steps, reporting progress
//! after each, and returns `{"slept_ms":N}`. Exercises heartbeats, progress and cancellation.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use warden_guest::TaskError;

const STEPS: u64 = 10;

#[derive(Deserialize)]
struct Args {
    ms: u64,
}

#[derive(Serialize)]
struct Slept {
    slept_ms: u64,
}

/// Sleeps `ms` milliseconds in ten steps.
fn slow(args: Args) -> Result<Slept, TaskError> {
    for step in 0..STEPS {
        if warden_guest::cancelled() {
            return Err(TaskError::fatal("cancelled"));
        }
        // Spread the remainder so that the steps add up to exactly `ms`.
        let step_ms = args.ms * (step + 1) / STEPS - args.ms * step / STEPS;
        std::thread::sleep(Duration::from_millis(step_ms));
        let message = format!("slept {} of {} ms", args.ms * (step + 1) / STEPS, args.ms);
        warden_guest::progress(step + 1, STEPS, Some(&message));
    }
    Ok(Slept { slept_ms: args.ms })
}

warden_guest::export_tasks! {
    slow { description: "Sleeps a while, reporting progress" },
}
