//! Calls that wait on calls: `fanout {"n":N}` calls `square {"x":i}` for i in 0..N, waits on all
//! of them and returns `{"sum":...}`; `square {"x":i}` returns `{"y":i*i}`. `tree {"depth":D,
//! "width":W}` calls itself W times with depth D-1 down to 0 and returns `{"leaves": W^D}`: a
//! call tree deeper and wider than a node's slots, which completes because waiting parents give
//! their slots back.

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

#[derive(Serialize, Deserialize)]
struct TreeArgs {
    depth: u32,
    width: u32,
}

#[derive(Serialize, Deserialize)]
struct Leaves {
    leaves: u64,
}

/// Counts the leaves of a call tree of the given depth and width, one invocation per node.
fn tree(args: TreeArgs) -> Result<Leaves, TaskError> {
    if args.width > 100 || args.depth > 10 {
        return Err(TaskError::invalid_args("width is at most 100 and depth at most 10"));
    }
    if args.depth == 0 {
        return Ok(Leaves { leaves: 1 });
    }
    let child = TreeArgs { depth: args.depth - 1, width: args.width };
    let ids = (0..args.width).map(|_| warden_guest::call("tree", &child)).collect::<Result<Vec<_>, _>>()?;
    let mut leaves: u64 = 0;
    for result in warden_guest::wait_all::<Leaves>(&ids) {
        leaves = leaves.saturating_add(result?.leaves);
    }
    Ok(Leaves { leaves })
}

warden_guest::export_tasks! {
    tree { description: "Counts the leaves of a call tree of invocations" },
    fanout { description: "Sums squares computed by child invocations" },
    square { description: "Squares a number" },
}
