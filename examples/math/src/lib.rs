//! A CPU-bound task: `primes {"below":N}` → `{"count":<number of primes below N>}`.

use serde::{Deserialize, Serialize};
use warden_guest::TaskError;

/// Above this the sieve would need more memory than a task should ask for.
const MAX_BELOW: u64 = 1 << 30;

#[derive(Deserialize)]
struct Args {
    below: u64,
}

#[derive(Serialize)]
struct Count {
    count: u64,
}

/// Counts the primes below `below` with a sieve of Eratosthenes.
fn primes(args: Args) -> Result<Count, TaskError> {
    if args.below > MAX_BELOW {
        return Err(TaskError::invalid_args(format!("`below` must be at most {MAX_BELOW}")));
    }
    Ok(Count { count: count_primes_below(args.below as usize) })
}

fn count_primes_below(n: usize) -> u64 {
    if n < 3 {
        return 0;
    }
    let mut composite = vec![false; n];
    let mut count = 0;
    for i in 2..n {
        if composite[i] {
            continue;
        }
        count += 1;
        let mut multiple = i.saturating_mul(i);
        while multiple < n {
            composite[multiple] = true;
            multiple += i;
        }
    }
    count
}

warden_guest::export_tasks! {
    primes { description: "Counts the primes below a number" },
}
