//! The smallest Warden task: `hello {"name":"Ada"}` → `{"greeting":"Hello, Ada!"}`.

use serde::{Deserialize, Serialize};
use warden_guest::TaskError;

#[derive(Deserialize)]
struct Args {
    name: String,
}

#[derive(Serialize)]
struct Greeting {
    greeting: String,
}

/// Greets someone by name.
fn hello(args: Args) -> Result<Greeting, TaskError> {
    Ok(Greeting { greeting: format!("Hello, {}!", args.name) })
}

warden_guest::export_tasks! {
    hello { description: "Greets someone", max_attempts: 3 },
}
