//! What the fuzz targets share: cutting one input into the several texts a function takes.

/// Splits `data` at its first `n - 1` NUL bytes into exactly `n` parts (missing ones empty); the last part
/// keeps any further NULs. NUL separates because none of the texts fuzzed here may hold one legitimately
/// except the last (a secret value), and seed files stay readable: `printf 'a\0b'`.
pub fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = data.splitn(n, |b| *b == 0).collect();
    out.resize(n, &[]);
    out
}

/// The same, as UTF-8 texts; None when a part is not UTF-8 (every function fuzzed here takes `&str`).
pub fn texts(data: &[u8], n: usize) -> Option<Vec<&str>> {
    parts(data, n).into_iter().map(|p| std::str::from_utf8(p).ok()).collect()
}
