//! The `warden` binary: the daemon and its command line (all in `warden::cli`).

fn main() -> std::process::ExitCode {
    warden::cli::main()
}
