//! A tiny column aligner: left-aligned cells, two spaces between columns, no trailing blanks.

/// Rows of cells under a header, rendered with aligned columns.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self { header: header.iter().map(|h| (*h).to_owned()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, each line prefixed with `indent` and ended by a newline.
    pub fn render(&self, indent: &str) -> String {
        let lines: Vec<&[String]> =
            std::iter::once(self.header.as_slice()).chain(self.rows.iter().map(Vec::as_slice)).collect();
        let columns = lines.iter().map(|l| l.len()).max().unwrap_or(0);
        let mut widths = vec![0; columns];
        for line in &lines {
            for (width, cell) in widths.iter_mut().zip(line.iter()) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for line in &lines {
            let mut text = String::from(indent);
            for (i, cell) in line.iter().enumerate() {
                if i + 1 < line.len() {
                    let pad = widths[i] - cell.chars().count() + 2;
                    text.push_str(cell);
                    text.extend(std::iter::repeat_n(' ', pad));
                } else {
                    text.push_str(cell);
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `key: value` lines with the values aligned, each prefixed with `indent`.
pub fn key_values(pairs: &[(&str, String)], indent: &str) -> String {
    let width = pairs.iter().map(|(k, _)| k.chars().count() + 1).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in pairs {
        let label = format!("{key}:");
        let line = format!("{indent}{label:<width$} {value}");
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let mut t = Table::new(&["NAME", "REVISION", "AGE"]);
        t.row(vec!["hello".into(), "3".into(), "5m".into()]);
        t.row(vec!["a-much-longer-name".into(), "12".into(), "2d".into()]);
        assert_eq!(
            t.render(""),
            "NAME                REVISION  AGE\n\
             hello               3         5m\n\
             a-much-longer-name  12        2d\n"
        );
    }

    #[test]
    fn counts_chars_not_bytes_and_trims() {
        let mut t = Table::new(&["HASH", "X"]);
        t.row(vec!["sha256:ab…".into(), "".into()]);
        t.row(vec!["s".into(), "1".into()]);
        assert_eq!(t.render("  "), "  HASH        X\n  sha256:ab…\n  s           1\n");
    }

    #[test]
    fn header_only() {
        assert_eq!(Table::new(&["A", "BB"]).render(""), "A  BB\n");
    }

    #[test]
    fn key_value_lines() {
        let text = key_values(&[("name", "hello".into()), ("min warm", "1".into()), ("x", "".into())], "  ");
        assert_eq!(text, "  name:     hello\n  min warm: 1\n  x:\n");
    }
}
