//! Random values for strategy Generate: `length` characters drawn uniformly from the union of the requested
//! classes, with at least one of each.
//!
//! Values are made by rejection: draw every character uniformly from the union, and start over when a class
//! is missing. The result is exactly uniform over all values that satisfy the spec, so no position or class
//! is more predictable than another (forcing one position per class would make those positions weaker and
//! values with few of a class likelier). It terminates quickly: with at least 16 characters even the worst
//! spec (all four classes, a single symbol) succeeds with probability about 0.21 per draw, so the expected
//! number of draws is below 5 and `MAX_ATTEMPTS` draws all failing has probability below 1e-100.

use rand::Rng;
use rand::distr::{Distribution, Uniform};
use zeroize::Zeroizing;

use crate::api::{CharClass, Generator, MIN_GENERATOR_BITS, min_generator_length};
use crate::secret::SecretBytes;

pub const DEFAULT_LENGTH: u32 = 32;
pub const MIN_LENGTH: u32 = 16;
pub const MAX_LENGTH: u32 = 1024;
pub const DEFAULT_SYMBOLS: &str = "!#$%&()*+,-./:;<=>?@[]^_{|}~";

const ALL_CLASSES: [CharClass; 4] = [
    CharClass::Lowercase,
    CharClass::Uppercase,
    CharClass::Digits,
    CharClass::Symbols,
];

/// See the module docs: reaching this bound is practically impossible, but it bounds the work.
const MAX_ATTEMPTS: u32 = 1_000;

/// Why a generator spec is invalid (or, practically never, why drawing failed). Messages quote the spec,
/// never a generated value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GenerateError {
    #[error("rotation.generator.length {0} is out of range: use {min} to {max}", min = MIN_LENGTH, max = MAX_LENGTH)]
    Length(u32),
    #[error("rotation.generator.classes lists {0:?} more than once")]
    DuplicateClass(CharClass),
    #[error("rotation.generator.symbols is empty: leave it out for the default or list at least one symbol")]
    EmptySymbols,
    #[error(
        "rotation.generator.symbols: {0:?} is not printable ASCII punctuation (one of !\"#$%&'()*+,-./:;<=>?@[\\]^_`{{|}}~)"
    )]
    Symbol(char),
    #[error("rotation.generator.symbols lists {0:?} more than once")]
    DuplicateSymbol(char),
    #[error("rotation.generator.symbols is set but classes does not include Symbols: add Symbols or remove symbols")]
    SymbolsWithoutClass,
    #[error("rotation.generator allows no characters")]
    NoCharacters,
    #[error("no value containing every class after {MAX_ATTEMPTS} draws", MAX_ATTEMPTS = MAX_ATTEMPTS)]
    Exhausted,
    #[error(
        "rotation.generator is too weak: {length} characters of an alphabet of {alphabet} give about {bits:.0} bits; \
         at least {min} bits are needed ({need})",
        min = MIN_GENERATOR_BITS
    )]
    TooWeak {
        length: u32,
        alphabet: usize,
        bits: f64,
        /// What would be enough: a length, or a larger alphabet.
        need: String,
    },
}

impl GenerateError {
    /// A bounded label for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            GenerateError::Length(_) => "invalid_generator_length",
            GenerateError::DuplicateClass(_) | GenerateError::NoCharacters => "invalid_generator_classes",
            GenerateError::EmptySymbols
            | GenerateError::Symbol(_)
            | GenerateError::DuplicateSymbol(_)
            | GenerateError::SymbolsWithoutClass => "invalid_generator_symbols",
            GenerateError::Exhausted => "generator_exhausted",
            GenerateError::TooWeak { .. } => "generator_too_weak",
        }
    }
}

/// The union alphabet, with the class (as a bit) of each character.
struct Alphabet {
    chars: Vec<u8>,
    class_bits: Vec<u8>,
    /// Every requested class's bit.
    all: u8,
}

fn class_bit(c: CharClass) -> u8 {
    match c {
        CharClass::Lowercase => 1,
        CharClass::Uppercase => 2,
        CharClass::Digits => 4,
        CharClass::Symbols => 8,
    }
}

/// Validates a spec (None: all defaults) into a length and an alphabet.
fn parse(spec: Option<&Generator>) -> Result<(usize, Alphabet), GenerateError> {
    let length = spec.and_then(|g| g.length).unwrap_or(DEFAULT_LENGTH);
    if !(MIN_LENGTH..=MAX_LENGTH).contains(&length) {
        return Err(GenerateError::Length(length));
    }
    let classes: &[CharClass] = match spec {
        Some(g) if !g.classes.is_empty() => &g.classes,
        _ => &ALL_CLASSES,
    };
    let symbols_spec = spec.and_then(|g| g.symbols.as_deref());
    if symbols_spec.is_some() && !classes.contains(&CharClass::Symbols) {
        // Silently ignoring them would hide a spec that does not do what its author meant.
        return Err(GenerateError::SymbolsWithoutClass);
    }
    let symbols = symbols_spec.unwrap_or(DEFAULT_SYMBOLS);

    let mut alphabet = Alphabet {
        chars: Vec::new(),
        class_bits: Vec::new(),
        all: 0,
    };
    for &class in classes {
        let bit = class_bit(class);
        if alphabet.all & bit != 0 {
            return Err(GenerateError::DuplicateClass(class));
        }
        alphabet.all |= bit;
        let members: Vec<u8> = match class {
            CharClass::Lowercase => (b'a'..=b'z').collect(),
            CharClass::Uppercase => (b'A'..=b'Z').collect(),
            CharClass::Digits => (b'0'..=b'9').collect(),
            CharClass::Symbols => parse_symbols(symbols)?,
        };
        alphabet.class_bits.extend(std::iter::repeat_n(bit, members.len()));
        alphabet.chars.extend(members);
    }
    Ok((length as usize, alphabet))
}

fn parse_symbols(symbols: &str) -> Result<Vec<u8>, GenerateError> {
    if symbols.is_empty() {
        return Err(GenerateError::EmptySymbols);
    }
    let mut out = Vec::with_capacity(symbols.len());
    for c in symbols.chars() {
        // ASCII punctuation is exactly what admission allows, and is disjoint from the other classes.
        if !c.is_ascii_punctuation() {
            return Err(GenerateError::Symbol(c));
        }
        let b = c as u8;
        if out.contains(&b) {
            return Err(GenerateError::DuplicateSymbol(c));
        }
        out.push(b);
    }
    Ok(out)
}

/// Checks a spec without drawing a value, for validating a ManagedSecret before its first rotation: its form,
/// and at least [`MIN_GENERATOR_BITS`] of entropy (`length × log2(alphabet size)`, the rule admission applies).
pub fn validate(spec: Option<&Generator>) -> Result<(), GenerateError> {
    let (length, alphabet) = parse(spec)?;
    strong_enough(length, &alphabet)
}

fn strong_enough(length: usize, alphabet: &Alphabet) -> Result<(), GenerateError> {
    let size = alphabet.chars.len();
    let min = min_generator_length(size);
    if min.is_some_and(|m| length >= m as usize) {
        return Ok(());
    }
    let need = match min {
        Some(m) if m <= MAX_LENGTH => format!("use at least {m} characters of this alphabet, or more classes"),
        _ => "use more classes or symbols".to_string(),
    };
    Err(GenerateError::TooWeak {
        length: u32::try_from(length).unwrap_or(u32::MAX),
        alphabet: size,
        bits: length as f64 * (size.max(1) as f64).log2(),
        need,
    })
}

/// Makes a new value from the OS-seeded thread CSPRNG, for a spec that passes [`validate`].
pub fn generate(spec: Option<&Generator>) -> Result<SecretBytes, GenerateError> {
    validate(spec)?;
    generate_with(spec, &mut rand::rng())
}

fn generate_with<R: Rng + ?Sized>(spec: Option<&Generator>, rng: &mut R) -> Result<SecretBytes, GenerateError> {
    let (length, alphabet) = parse(spec)?;
    // Uniform's sampler rejects out-of-zone draws, so it is exactly unbiased; `random_range` uses Canon's
    // method, which is biased by a negligible but nonzero amount unless rand's `unbiased` feature is on.
    let pick = Uniform::new(0, alphabet.chars.len()).map_err(|_| GenerateError::NoCharacters)?;
    // Filled in place and never reallocated, so a rejected draw leaves no copy behind; wiped on drop.
    let mut buf = Zeroizing::new(vec![0u8; length]);
    for _ in 0..MAX_ATTEMPTS {
        let mut seen = 0u8;
        for b in buf.iter_mut() {
            let i = pick.sample(rng);
            *b = alphabet.chars[i];
            seen |= alphabet.class_bits[i];
        }
        if seen == alphabet.all {
            return Ok(SecretBytes::new(std::mem::take(&mut *buf)));
        }
    }
    Err(GenerateError::Exhausted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn spec(length: Option<u32>, classes: &[CharClass], symbols: Option<&str>) -> Generator {
        Generator {
            length,
            classes: classes.to_vec(),
            symbols: symbols.map(str::to_string),
        }
    }

    fn members(c: CharClass, symbols: &str) -> Vec<u8> {
        match c {
            CharClass::Lowercase => (b'a'..=b'z').collect(),
            CharClass::Uppercase => (b'A'..=b'Z').collect(),
            CharClass::Digits => (b'0'..=b'9').collect(),
            CharClass::Symbols => symbols.bytes().collect(),
        }
    }

    #[test]
    fn defaults() {
        let v = generate(None).unwrap();
        assert_eq!(v.expose().len(), DEFAULT_LENGTH as usize);
        for c in ALL_CLASSES {
            let m = members(c, DEFAULT_SYMBOLS);
            assert!(v.expose().iter().any(|b| m.contains(b)), "{c:?}");
        }
        let allowed: Vec<u8> = ALL_CLASSES.iter().flat_map(|&c| members(c, DEFAULT_SYMBOLS)).collect();
        assert!(v.expose().iter().all(|b| allowed.contains(b)));
        // An empty spec is the same as none.
        assert_eq!(generate(Some(&Generator::default())).unwrap().expose().len(), 32);
    }

    #[test]
    fn default_symbols_are_valid() {
        assert_eq!(parse_symbols(DEFAULT_SYMBOLS).unwrap().len(), DEFAULT_SYMBOLS.len());
    }

    #[test]
    fn debug_never_shows_the_value() {
        let v = generate(Some(&spec(Some(40), &[CharClass::Digits], None))).unwrap();
        let shown = format!("{v:?}");
        assert!(!shown.contains(std::str::from_utf8(v.expose()).unwrap()), "{shown}");
    }

    #[test]
    fn two_values_differ() {
        let a = generate(None).unwrap();
        let b = generate(None).unwrap();
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn custom_symbols_respected() {
        let g = spec(Some(64), &[CharClass::Lowercase, CharClass::Symbols], Some("-_"));
        for _ in 0..50 {
            let v = generate(Some(&g)).unwrap();
            assert!(
                v.expose()
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || *b == b'-' || *b == b'_')
            );
            assert!(v.expose().iter().any(|b| *b == b'-' || *b == b'_'));
        }
    }

    #[test]
    fn worst_case_spec_is_quick() {
        // All four classes and a single symbol, at the minimum length: the likeliest to need redraws.
        let g = spec(Some(MIN_LENGTH), &ALL_CLASSES, Some("~"));
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..2_000 {
            let v = generate_with(Some(&g), &mut rng).unwrap();
            assert!(v.expose().contains(&b'~'));
        }
    }

    #[test]
    fn refuses_bad_specs_with_clear_messages() {
        use CharClass::*;
        let cases = [
            (
                spec(Some(15), &[], None),
                "rotation.generator.length 15 is out of range: use 16 to 1024",
                "invalid_generator_length",
            ),
            (
                spec(Some(1025), &[], None),
                "rotation.generator.length 1025 is out of range: use 16 to 1024",
                "invalid_generator_length",
            ),
            (
                spec(Some(0), &[], None),
                "rotation.generator.length 0 is out of range: use 16 to 1024",
                "invalid_generator_length",
            ),
            (
                spec(None, &[Digits, Lowercase, Digits], None),
                "rotation.generator.classes lists Digits more than once",
                "invalid_generator_classes",
            ),
            (
                spec(None, &[], Some("")),
                "rotation.generator.symbols is empty: leave it out for the default or list at least one symbol",
                "invalid_generator_symbols",
            ),
            (
                spec(None, &[], Some("!a")),
                "rotation.generator.symbols: 'a' is not printable ASCII punctuation (one of !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~)",
                "invalid_generator_symbols",
            ),
            (
                spec(None, &[], Some("! ")),
                "rotation.generator.symbols: ' ' is not printable ASCII punctuation (one of !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~)",
                "invalid_generator_symbols",
            ),
            (
                spec(None, &[], Some("€")),
                "rotation.generator.symbols: '€' is not printable ASCII punctuation (one of !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~)",
                "invalid_generator_symbols",
            ),
            (
                spec(None, &[], Some("!#!")),
                "rotation.generator.symbols lists '!' more than once",
                "invalid_generator_symbols",
            ),
            (
                spec(None, &[Lowercase, Digits], Some("!")),
                "rotation.generator.symbols is set but classes does not include Symbols: add Symbols or remove symbols",
                "invalid_generator_symbols",
            ),
        ];
        for (g, msg, category) in cases {
            let e = generate(Some(&g)).unwrap_err();
            assert_eq!((e.to_string().as_str(), e.category()), (msg, category), "{g:?}");
            assert_eq!(validate(Some(&g)), Err(e));
        }
        assert_eq!(validate(None), Ok(()));
    }

    #[test]
    fn weak_generators_are_refused_with_what_would_do() {
        use CharClass::*;
        // The reproduction: one symbol, sixteen times.
        let e = validate(Some(&spec(Some(16), &[Symbols], Some("!")))).unwrap_err();
        assert_eq!(e.category(), "generator_too_weak");
        assert!(e.to_string().contains("about 0 bits"), "{e}");
        assert!(e.to_string().contains("use more classes or symbols"), "{e}");
        let e = validate(Some(&spec(Some(16), &[Digits], None))).unwrap_err();
        assert!(e.to_string().contains("use at least 39 characters"), "{e}");
        assert!(generate(Some(&spec(Some(16), &[Digits], None))).is_err());
        for (length, classes) in [
            (39, vec![Digits]),
            (28, vec![Lowercase]),
            (22, vec![Lowercase, Uppercase, Digits]),
            (20, vec![]),
        ] {
            assert_eq!(
                validate(Some(&spec(Some(length), &classes, None))),
                Ok(()),
                "{length} {classes:?}"
            );
            let shorter = spec(Some(length - 1), &classes, None);
            assert!(validate(Some(&shorter)).is_err(), "{length} {classes:?}");
        }
        // The default (32 of all classes) is well above the floor.
        assert_eq!(validate(None), Ok(()));
    }

    /// Counts characters over 20k draws: each within ±20% of its expectation, and a chi-square statistic below
    /// the 99.99th percentile for its degrees of freedom. Seeded, so it cannot flake.
    fn check_uniform(g: &Generator, alphabet: &[u8], seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut counts = [0u64; 256];
        let mut total = 0u64;
        while total < 20_000 {
            for &b in generate_with(Some(g), &mut rng).unwrap().expose() {
                counts[b as usize] += 1;
                total += 1;
            }
        }
        let expected = total as f64 / alphabet.len() as f64;
        let mut chi2 = 0.0;
        for &c in alphabet {
            let n = counts[c as usize] as f64;
            assert!(
                (n - expected).abs() <= 0.2 * expected,
                "{:?}: {n} vs {expected}",
                c as char
            );
            chi2 += (n - expected).powi(2) / expected;
        }
        // 99.99th percentiles: about 33.7 for 9 degrees of freedom, 50.0 for 19.
        let bound = if alphabet.len() == 10 { 33.7 } else { 50.0 };
        assert!(chi2 < bound, "chi2 {chi2}");
        let in_alphabet: u64 = alphabet.iter().map(|&c| counts[c as usize]).sum();
        assert_eq!(in_alphabet, total);
    }

    #[test]
    fn uniform_over_digits() {
        let g = spec(Some(1_000), &[CharClass::Digits], None);
        check_uniform(&g, b"0123456789", 1);
    }

    #[test]
    fn uniform_over_a_union() {
        // Two classes drawn jointly: each of the 20 characters as likely as any other, whatever its class.
        let g = spec(
            Some(1_000),
            &[CharClass::Digits, CharClass::Symbols],
            Some("!#$%&()*+,"),
        );
        check_uniform(&g, b"0123456789!#$%&()*+,", 2);
    }

    #[test]
    fn uniform_over_the_public_entry_point() {
        // The same check through the OS-seeded generator; ±20% is over nine standard deviations.
        let g = spec(Some(1_000), &[CharClass::Digits], None);
        let mut counts = [0u64; 10];
        for _ in 0..20 {
            for &b in generate(Some(&g)).unwrap().expose() {
                counts[(b - b'0') as usize] += 1;
            }
        }
        for n in counts {
            assert!((1_600..=2_400).contains(&n), "{counts:?}");
        }
    }

    fn classes() -> impl Strategy<Value = Vec<CharClass>> {
        proptest::sample::subsequence(ALL_CLASSES.to_vec(), 1..=4).prop_shuffle()
    }

    fn symbols() -> impl Strategy<Value = Option<String>> {
        let all: Vec<u8> = (b'!'..=b'~').filter(u8::is_ascii_punctuation).collect();
        proptest::option::of(
            proptest::sample::subsequence(all, 1..=32)
                .prop_shuffle()
                .prop_map(|s| String::from_utf8(s).unwrap()),
        )
    }

    proptest! {
        #[test]
        fn every_class_present_and_nothing_else(classes in classes(), length in 16u32..=128, symbols in symbols()) {
            let symbols = if classes.contains(&CharClass::Symbols) { symbols } else { None };
            let g = Generator { length: Some(length), classes: classes.clone(), symbols: symbols.clone() };
            // Below the entropy floor `generate` refuses; the draw itself is what this checks.
            let v = generate_with(Some(&g), &mut rand::rng()).unwrap();
            let v = v.expose();
            prop_assert_eq!(v.len(), length as usize);
            let symbols = symbols.as_deref().unwrap_or(DEFAULT_SYMBOLS);
            let mut allowed = Vec::new();
            for &c in &classes {
                let m = members(c, symbols);
                prop_assert!(v.iter().any(|b| m.contains(b)), "{:?} missing", c);
                allowed.extend(m);
            }
            prop_assert!(v.iter().all(|b| allowed.contains(b)));
        }

        #[test]
        fn any_length_in_range_is_exact(length in MIN_LENGTH..=MAX_LENGTH) {
            let v = generate_with(Some(&spec(Some(length), &[], None)), &mut rand::rng()).unwrap();
            prop_assert_eq!(v.expose().len(), length as usize);
        }

        #[test]
        fn never_panics(length in proptest::option::of(any::<u32>()), classes in proptest::collection::vec(
            prop_oneof![Just(CharClass::Lowercase), Just(CharClass::Uppercase), Just(CharClass::Digits), Just(CharClass::Symbols)],
            0..6,
        ), symbols in proptest::option::of(".{0,40}")) {
            let g = Generator { length, classes, symbols };
            let _ = validate(Some(&g));
            if length.is_none_or(|l| l <= MAX_LENGTH) {
                let _ = generate(Some(&g));
            }
        }
    }
}
