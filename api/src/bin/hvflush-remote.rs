//! `hvflush-remote`: drives the hyperv-flush REST API of a running VMM
//! (the code is `hvflush_api::remote`).

fn main() -> std::process::ExitCode {
    hvflush_api::remote::main()
}
