#![forbid(unsafe_code)]

// `--features dhat-heap` only (Cargo.toml): every allocation counted for the heap profile.
#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

// jemalloc on x86_64 (Cargo.toml says why not yet on arm64), with one arena and freed pages returned at once
// (.cargo/config.toml): glibc's per-thread arenas held a third more than the live heap at 10,000 objects, and
// musl's allocator is slow (docs/benchmarks.md).
#[cfg(all(target_arch = "x86_64", not(feature = "dhat-heap")))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    #[cfg(feature = "dhat-heap")]
    let _profiler = dhat::Profiler::new_heap();
    keyward::cli::main()
}
