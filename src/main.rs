#![forbid(unsafe_code)]

// `--features dhat-heap` only (Cargo.toml): every allocation counted for the heap profile.
#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn main() -> std::process::ExitCode {
    #[cfg(feature = "dhat-heap")]
    let _profiler = dhat::Profiler::new_heap();
    keyward::cli::main()
}
