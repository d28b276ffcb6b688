//! Name patterns in grants: `*` matches any run of characters (`/` included), `?` one character, everything
//! else itself.

/// Whether `text` matches `pattern`.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Iterative matching with one backtrack point: linear in practice, no recursion on hostile input.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("*", ""));
        assert!(glob("team-*", "team-a"));
        assert!(!glob("team-*", "other"));
        assert!(glob("acme/*/prod", "acme/app/prod"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(glob("*a*b*", "xxaxxbxx"));
        assert!(!glob("*a*b", "xxaxxbxx"));
        assert!(glob("exact", "exact"));
    }

    proptest::proptest! {
        #[test]
        fn star_matches_everything_and_literals_match_themselves(s in "[a-z/*?-]{0,20}") {
            proptest::prop_assert!(glob("*", &s));
            let literal: String = s.chars().filter(|c| *c != '*' && *c != '?').collect();
            proptest::prop_assert!(glob(&literal, &literal));
        }
    }
}
