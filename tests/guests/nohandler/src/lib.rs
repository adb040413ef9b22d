//! A wasm32-wasip2 component that exports nothing of Warden's: no `warden:task/handler`, no
//! `describe`, no `run`. The host must refuse to register it (400 on upload), not trap or hang.

/// A stray function: present in the core module, not part of any exported interface.
#[unsafe(no_mangle)]
pub extern "C" fn add(a: i32, b: i32) -> i32 {
    a.wrapping_add(b)
}
