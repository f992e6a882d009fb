//! Tables for people: left-aligned columns two spaces apart, a header row,
//! no trailing spaces.

/// `rows` under `header`, each column as wide as its widest cell.
pub fn render<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let header = header.map(str::to_owned);
    let mut width = [0usize; N];
    for row in std::iter::once(&header).chain(rows) {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let line: Vec<String> = row.iter().zip(width).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_line_up_without_trailing_spaces() {
        let rows = [["a".to_owned(), "".to_owned()], ["long-id".to_owned(), "x".to_owned()]];
        assert_eq!(super::render(["ID", "N"], &rows), "ID       N\na\nlong-id  x\n");
    }
}
