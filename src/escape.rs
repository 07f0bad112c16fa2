//! Messages on stderr. Names taken from inputs (file names, tar member
//! names) end up in error messages, which must stay one line: a newline,
//! `\r` or NUL in a name would split the line or rewrite it on a terminal.
//! And stderr itself may be a pipe that closed early (`2>&1 | head`):
//! progress and errors are then lost, but must not panic as `eprintln!`
//! does.

use std::io::Write;

/// `text` with every control character escaped (`\n`, `\r`, `\u{0}` …).
pub fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Writes `text` to stderr, ignoring a failure (a closed stderr must not
/// turn a finished image into a panic).
pub fn to_stderr(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(one_line("a\nb\rc\0d é\t"), "a\\nb\\rc\\u{0}d é\\t");
    }
}
