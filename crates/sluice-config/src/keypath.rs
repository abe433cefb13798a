//! Finds the dotted key path at a byte offset of a TOML file, for errors serde reports
//! with a position but no path (`routes[1].respond.status`).

/// The key path of the value or key at `offset`: the enclosing table header, the key
/// that starts the line, and the word under the offset when it is a nested key.
pub(crate) fn key_at(source: &str, offset: usize) -> String {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or("");
    let mut table = String::new();
    let mut array_counts: Vec<(String, usize)> = Vec::new();
    for line in before.lines() {
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
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line = source
        .get(line_start..)
        .and_then(|s| s.lines().next())
        .unwrap_or("");
    let line_key = line.split('=').next().map(str::trim).unwrap_or("");
    let in_line = offset - line_start;
    let key_end = line.find('=').unwrap_or(line.len());
    let mut parts: Vec<String> = Vec::new();
    if !table.is_empty() {
        parts.push(table);
    }
    let is_header = line.trim_start().starts_with('[');
    if !is_header && !line_key.is_empty() {
        parts.push(unquote(line_key));
        if in_line > key_end {
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
    fn finds_inline_keys() {
        let src = "[[routes]]\nrespond = { stauts = 200 }\n";
        assert_eq!(
            key_at(src, src.find("stauts").unwrap_or(0)),
            "routes[0].respond.stauts"
        );
    }
}
