//! Finds the dotted key path at a byte offset of a TOML file, for errors serde reports
//! with a position but no path (`routes[1].respond.status`).

/// The key path of the value or key at `offset`: the enclosing table header, the key
/// that starts the line, and the word under the offset when it is a nested key.
pub(crate) fn key_at(source: &str, offset: usize) -> String {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or("");
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line = source
        .get(line_start..)
        .and_then(|s| s.lines().next())
        .unwrap_or("");
    let is_header = line.trim_start().starts_with('[');
    // Table headers up to this line, and this line too when it is a header itself.
    let headers_end = if is_header {
        line_start + line.len()
    } else {
        line_start
    };
    let mut table = String::new();
    let mut array_counts: Vec<(String, usize)> = Vec::new();
    for line in source.get(..headers_end).unwrap_or("").lines() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            let name = name.trim().to_string();
            let n = match array_counts.iter_mut().find(|(k, _)| *k == name) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    array_counts.push((name.clone(), 0));
                    0
                }
            };
            table = format!("{name}[{n}]");
        } else if let Some(name) = t.strip_prefix('[').and_then(|r| r.split(']').next()) {
            table = resolve_table(name.trim(), &array_counts);
        }
    }
    // A line inside a multi-line array has no key of its own: the key is on the
    // nearest line above that starts with `key =`.
    let continued = line_key_of(line).is_none();
    let line_key = line_key_of(line)
        .or_else(|| {
            source
                .get(..line_start)
                .unwrap_or("")
                .lines()
                .rev()
                .take_while(|l| !l.trim_start().starts_with('['))
                .find_map(line_key_of)
        })
        .unwrap_or("");
    let in_line = offset - line_start;
    let key_end = line.find('=').unwrap_or(line.len());
    let mut parts: Vec<String> = Vec::new();
    if !table.is_empty() {
        parts.push(table);
    }
    if !is_header && !line_key.is_empty() {
        parts.push(unquote(line_key));
        if in_line > key_end || continued {
            if let Some(word) = word_at(line, in_line) {
                if word != line_key
                    && line.get(in_line..).is_some_and(|r| {
                        r.trim_start_matches(|c: char| is_key_char(c))
                            .trim_start()
                            .starts_with('=')
                    })
                {
                    parts.push(unquote(&word));
                }
            }
        }
    }
    parts.join(".")
}

/// The key of a `key = value` line, or `None` when the line does not start with a key.
fn line_key_of(line: &str) -> Option<&str> {
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let quoted = key.len() >= 2 && key.starts_with('"') && key.ends_with('"');
    let bare = !key.is_empty() && key.chars().all(|c| is_key_char(c) || c == '.');
    (quoted || bare).then_some(key)
}

fn resolve_table(name: &str, arrays: &[(String, usize)]) -> String {
    for (array, n) in arrays {
        if let Some(rest) = name
            .strip_prefix(array.as_str())
            .and_then(|r| r.strip_prefix('.'))
        {
            return format!("{array}[{n}].{rest}");
        }
    }
    name.to_string()
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '"'
}

fn word_at(line: &str, at: usize) -> Option<String> {
    let rest = line.get(at..)?;
    let word: String = rest.chars().take_while(|c| is_key_char(*c)).collect();
    (!word.is_empty()).then_some(word)
}

fn unquote(key: &str) -> String {
    key.trim_matches('"').to_string()
}

#[cfg(test)]
mod tests {
    use super::key_at;

    #[test]
    fn finds_table_and_key() {
        let src = "[server]\nlisen = []\n";
        assert_eq!(key_at(src, src.find("lisen").unwrap_or(0)), "server.lisen");
    }

    #[test]
    fn counts_array_tables() {
        let src = "[[routes]]\nname = \"a\"\n[[routes]]\nname = \"b\"\nclustr = \"x\"\n";
        assert_eq!(
            key_at(src, src.find("clustr").unwrap_or(0)),
            "routes[1].clustr"
        );
    }

    #[test]
    fn names_the_table_of_a_header() {
        let src = "[server]\nthreads = 1\n\n[clusters.users]\nbalance = \"x\"\n";
        assert_eq!(
            key_at(src, src.find("[clusters").unwrap_or(0)),
            "clusters.users"
        );
        let src = "[server.tls]\n";
        assert_eq!(key_at(src, src.find("tls").unwrap_or(0)), "server.tls");
        let src = "[[routs]]\n";
        assert_eq!(key_at(src, src.find("routs").unwrap_or(0)), "routs[0]");
    }

    #[test]
    fn finds_the_key_of_a_continued_array() {
        let src = "[server]\nlisten = [\n  \"127.0.0.1:1\",\n  5,\n]\n";
        assert_eq!(key_at(src, src.find('5').unwrap_or(0)), "server.listen");
    }

    #[test]
    fn finds_inline_keys() {
        let src = "[[routes]]\nrespond = { stauts = 200 }\n";
        assert_eq!(
            key_at(src, src.find("stauts").unwrap_or(0)),
            "routes[0].respond.stauts"
        );
    }
}
