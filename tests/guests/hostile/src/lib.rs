//! Tasks that misbehave on purpose, one per limit the host must enforce:
//!
//! | task | args | does | expected from the host |
//! |---|---|---|---|
//! | `spin` | any | burns CPU forever (`timeout_ms: 1000`) | interrupts it: timeout |
//! | `hog` | any | allocates and touches 1 MiB blocks forever (`memory_limit_bytes: 64 MiB`) | stops it at the limit |
//! | `chatty` | `{"bytes":N}` | writes N bytes to stdout and N to stderr, returns `{"printed":N}` | caps the captured output |
//! | `sleeper` | `{"ms":N}` | one blocking sleep of N ms (`timeout_ms: 1000`) | interrupts a long one |
//! | `bigresult` | any | returns a 4 MiB JSON string | caps or stores the result |
//! | `echo` | any JSON | returns its arguments unchanged | round-trips them |
//! | `needs_memory` | `{"mb":N}` | allocates and touches N MiB, returns `{"ok":true}` (`memory_limit_bytes: 32 MiB`) | fails when N is too large, retries with a larger limit |
//! | `fatal` | any | fails with `TaskError::Fatal("nope")` | no retry |
//! | `panics` | any | panics | records a trap |
//! | `residue` | any | counts the bytes an earlier instance left in its initialised data, its zeroed statics and 24 MiB grown with `memory.grow`, then dirties them all | a fresh memory every attempt: `{"data":0,"bss":0,"heap":0}` |

use std::hint::black_box;
use std::io::Write;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use warden_guest::TaskError;

const MIB: usize = 1 << 20;

/// Burns CPU forever and never looks at `cancelled()`.
fn spin(_: Value) -> Result<(), TaskError> {
    let mut counter: u64 = 0;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

/// Allocates 1 MiB blocks, touching every byte, and never frees them.
fn hog(_: Value) -> Result<(), TaskError> {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        blocks.push(vec![0xa5; MIB]);
        black_box(&blocks);
    }
}

#[derive(Deserialize)]
struct ChattyArgs {
    bytes: usize,
}

#[derive(Serialize)]
struct Printed {
    printed: usize,
}

/// Writes `bytes` bytes of text to stdout and as many to stderr, in lines of at most 64 bytes.
///
/// Write errors are ignored: a host that caps the output by refusing writes still gets a result.
fn chatty(args: ChattyArgs) -> Result<Printed, TaskError> {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    write_lines(&mut stdout.lock(), "out", args.bytes);
    write_lines(&mut stderr.lock(), "err", args.bytes);
    Ok(Printed { printed: args.bytes })
}

/// Writes exactly `bytes` bytes: numbered lines padded to 64 bytes, the last one shorter.
fn write_lines(out: &mut impl Write, stream: &str, bytes: usize) {
    const LINE: usize = 64;
    let mut written = 0;
    let mut number = 0;
    while written < bytes {
        let len = LINE.min(bytes - written);
        let mut line = format!("chatty {stream} line {number:08} ");
        line.truncate(len.saturating_sub(1));
        while line.len() < len.saturating_sub(1) {
            line.push('.');
        }
        line.push('\n');
        let _ = out.write_all(line.as_bytes());
        written += len;
        number += 1;
    }
    let _ = out.flush();
}

#[derive(Deserialize)]
struct SleeperArgs {
    ms: u64,
}

#[derive(Serialize)]
struct Slept {
    slept_ms: u64,
}

/// One blocking sleep of `ms` milliseconds.
fn sleeper(args: SleeperArgs) -> Result<Slept, TaskError> {
    std::thread::sleep(Duration::from_millis(args.ms));
    Ok(Slept { slept_ms: args.ms })
}

/// Returns a JSON string of 4 MiB (plus its two quotes).
fn bigresult(_: Value) -> Result<String, TaskError> {
    Ok("x".repeat(4 * MIB))
}

/// Returns its arguments unchanged.
fn echo(args: Value) -> Result<Value, TaskError> {
    Ok(args)
}

/// Looks for what the sandbox must not grant: environment variables, program arguments, host
/// files (a few well-known paths and the current directory) and the network. Reports what it
/// found; a sound host gives it nothing.
fn snoop(_: Value) -> Result<Value, TaskError> {
    let env: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
    let args: Vec<String> = std::env::args().collect();
    let files: Vec<String> = ["/", ".", "/etc/passwd", "/proc/self/environ", "/tmp"]
        .iter()
        .filter(|p| std::fs::metadata(p).is_ok() || std::fs::read_dir(p).is_ok())
        .map(|p| p.to_string())
        .collect();
    let network = ["127.0.0.1:5432", "127.0.0.1:7700"]
        .iter()
        .filter(|a| std::net::TcpStream::connect(a).is_ok())
        .map(|a| a.to_string())
        .collect::<Vec<_>>();
    let dns = std::net::ToSocketAddrs::to_socket_addrs(&("localhost", 80)).is_ok();
    Ok(serde_json::json!({"env": env, "args": args, "files": files, "network": network, "dns": dns}))
}

#[derive(Deserialize)]
struct NeedsMemoryArgs {
    mb: usize,
}

#[derive(Serialize)]
struct Allocated {
    ok: bool,
}

/// Allocates and touches `mb` MiB, then returns `{"ok":true}`.
fn needs_memory(args: NeedsMemoryArgs) -> Result<Allocated, TaskError> {
    let blocks: Vec<Vec<u8>> = (0..args.mb).map(|_| vec![0x5a; MIB]).collect();
    black_box(&blocks);
    Ok(Allocated { ok: true })
}

/// Initialised data: every byte starts at 7.
static mut DATA: [u8; 64 << 10] = [7; 64 << 10];
/// Zeroed statics (`.bss`), past the first pages of the memory.
static mut BSS: [u8; 4 * MIB] = [0; 4 * MIB];
/// Memory the task grows: more than the host keeps resident of a slot, so both of its ways of
/// resetting a memory (in place, and given back to the kernel) are crossed.
const RESIDUE_HEAP: usize = 24 * MIB;

#[derive(Serialize)]
struct Residue {
    data: usize,
    bss: usize,
    heap: usize,
}

/// Counts what an earlier instance left behind (bytes of `DATA` not 7, of `BSS` not 0, of a
/// freshly grown memory not 0), then overwrites all three, as a careless or hostile earlier
/// tenant of the same memory slot would.
fn residue(_: Value) -> Result<Residue, TaskError> {
    // The statics are reached through raw pointers and volatile reads: the compiler may assume
    // nothing about what an earlier instance did to them.
    let count = |p: *mut u8, len: usize, clean: u8| -> usize {
        (0..len).filter(|&i| unsafe { std::ptr::read_volatile(p.add(i)) } != clean).count()
    };
    let dirty = |p: *mut u8, len: usize| unsafe { std::ptr::write_bytes(p, 0xab, len) };
    let data = std::ptr::addr_of_mut!(DATA).cast::<u8>();
    let bss = std::ptr::addr_of_mut!(BSS).cast::<u8>();
    // Fresh pages straight from `memory.grow`, which no allocator has written to: they
    // must read as zeros, as they would in a new instance's memory.
    let pages = RESIDUE_HEAP / 65_536;
    let first = core::arch::wasm32::memory_grow::<0>(pages);
    if first == usize::MAX {
        return Err(TaskError::fatal("memory.grow failed"));
    }
    let heap = (first * 65_536) as *mut u8;
    let found = Residue {
        data: count(data, 64 << 10, 7),
        bss: count(bss, 4 * MIB, 0),
        heap: count(heap, RESIDUE_HEAP, 0),
    };
    dirty(data, 64 << 10);
    dirty(bss, 4 * MIB);
    dirty(heap, RESIDUE_HEAP);
    Ok(found)
}

/// Fails for good.
fn fatal(_: Value) -> Result<(), TaskError> {
    Err(TaskError::fatal("nope"))
}

/// Panics, which aborts the attempt with a trap.
fn panics(_: Value) -> Result<(), TaskError> {
    panic!("this task panics on purpose")
}

warden_guest::export_tasks! {
    spin { description: "Burns CPU forever", timeout_ms: 1000 },
    hog { description: "Allocates without bound", memory_limit_bytes: 67108864 },
    chatty { description: "Writes N bytes to stdout and to stderr" },
    sleeper { description: "Sleeps N ms in one call", timeout_ms: 1000 },
    bigresult { description: "Returns a 4 MiB result" },
    echo { description: "Returns its arguments" },
    snoop { description: "Reports which host resources the sandbox lets it see" },
    needs_memory { description: "Allocates N MiB", memory_limit_bytes: 33554432 },
    fatal { description: "Fails fatally" },
    panics { description: "Panics" },
    residue { description: "Reports what an earlier instance left in its memory, then dirties it" },
}
