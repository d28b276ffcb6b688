//! keyward-dev: developer tools for tests and `make demo`. Not part of the operator image.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    keyward_dev::cli::main()
}
