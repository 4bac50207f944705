//! The `deploy` binary.

fn main() -> std::process::ExitCode {
    deploy_cli::main_with_args(std::env::args())
}
