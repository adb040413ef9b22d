//! The `warden` program built inside the test crate, so end-to-end tests can start it as a real
//! process (`CARGO_BIN_EXE_warden-under-test`) and kill it with SIGKILL.

fn main() -> std::process::ExitCode {
    warden::cli::main()
}
