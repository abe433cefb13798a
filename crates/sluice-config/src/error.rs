//! Configuration errors: one line per problem, `file:line:col: key.path: what is wrong`.

use std::fmt;

/// A 1-based line and column in the configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Location {
    pub line: usize,
    pub col: usize,
}

impl Location {
    pub const START: Location = Location { line: 1, col: 1 };

    /// The line and column of a byte offset in `source`. For many lookups in one file,
    /// build a [`LineIndex`] once instead.
    pub fn from_offset(source: &str, offset: usize) -> Location {
        LineIndex::new(source).locate(source, offset)
    }
}

/// Where each line of a file starts, so that locating an offset is a binary search
/// rather than a scan from the top (a 10,000-route file has many offsets to locate).
#[derive(Debug)]
pub struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(source: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(source.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { starts }
    }

    /// The 1-based line and column (in characters) of `offset` in `source`.
    pub fn locate(&self, source: &str, offset: usize) -> Location {
        let offset = offset.min(source.len());
        let line = self.starts.partition_point(|s| *s <= offset).max(1);
        let start = self.starts[line - 1];
        let col = source.get(start..offset).map_or(0, |s| s.chars().count()) + 1;
        Location { line, col }
    }
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub location: Location,
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(file: &str, location: Location, key: &str, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_string(),
            location,
            key: key.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Location { line, col } = self.location;
        if self.key.is_empty() {
            write!(f, "{}:{line}:{col}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{line}:{col}: {}: {}",
                self.file, self.key, self.message
            )
        }
    }
}

/// Every problem found in one file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn single(error: ConfigError) -> Self {
        ConfigErrors(vec![error])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Rewrites serde's messages into Sluice's: unknown keys get a "did you mean".
pub(crate) fn explain_serde(message: &str) -> String {
    let message = message.trim();
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (name, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let expected: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
        return match did_you_mean(name, &expected) {
            Some(best) => format!("unknown key `{name}` (did you mean `{best}`?)"),
            None if expected.is_empty() => format!("unknown key `{name}`"),
            None => format!(
                "unknown key `{name}`; expected one of: {}",
                expected.join(", ")
            ),
        };
    }
    message.to_string()
}

/// The closest candidate to `name`, if any is close enough to be a likely typo.
pub(crate) fn did_you_mean<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(name, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_offsets() {
        let src = "a = 1\nbb = 2\n";
        assert_eq!(Location::from_offset(src, 0), Location { line: 1, col: 1 });
        assert_eq!(Location::from_offset(src, 7), Location { line: 2, col: 2 });
        assert_eq!(Location::from_offset(src, 6), Location { line: 2, col: 1 });
        assert_eq!(Location::from_offset(src, 5), Location { line: 1, col: 6 });
        assert_eq!(Location::from_offset(src, 99), Location { line: 3, col: 1 });
    }

    #[test]
    fn suggests_close_keys() {
        assert_eq!(
            did_you_mean("lisen", &["listen", "unix", "threads"]),
            Some("listen")
        );
        assert_eq!(did_you_mean("zzzzzz", &["listen", "unix"]), None);
        let m = explain_serde("unknown field `clustr`, expected one of `name`, `cluster`, `path`");
        assert_eq!(m, "unknown key `clustr` (did you mean `cluster`?)");
    }
}
