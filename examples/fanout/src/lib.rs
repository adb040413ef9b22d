//! Calls that wait on calls: `fanout {"n":N}` calls `square {"x":i}` for i in 0..N, waits on all
//! of them and returns `{"sum":...}`; `square {"x":i}` returns `{"y":i*i}`.

use serde::{Deserialize, Serialize};
use warden_guest::TaskError;

#[derive(Deserialize)]
struct FanoutArgs {
    n: u64,
}

#[derive(Serialize)]
struct Sum {
    sum: u64,
}

#[derive(Serialize, Deserialize)]
struct SquareArgs {
    x: u64,
}

#[derive(Serialize, Deserialize)]
struct Squared {
    y: u64,
}

/// Squares `x`.
fn square(args: SquareArgs) -> Result<Squared, TaskError> {
    args.x.checked_mul(args.x).map(|y| Squared { y }).ok_or_else(|| TaskError::invalid_args("x is too large to square"))
}

/// Sums the squares of 0..n, each computed by its own `square` invocation.
fn fanout(args: FanoutArgs) -> Result<Sum, TaskError> {
    let ids = (0..args.n).map(|x| warden_guest::call("square", &SquareArgs { x })).collect::<Result<Vec<_>, _>>()?;
    let mut sum: u64 = 0;
    for result in warden_guest::wait_all::<Squared>(&ids) {
        sum = sum.checked_add(result?.y).ok_or_else(|| TaskError::invalid_args("the sum overflows"))?;
    }
    Ok(Sum { sum })
}

warden_guest::export_tasks! {
    fanout { description: "Sums squares computed by child invocations" },
    square { description: "Squares a number" },
}
