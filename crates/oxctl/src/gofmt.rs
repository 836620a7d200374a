//! The Go libraries' formats that etcdctl prints through and only oxctl needs: go-humanize
//! byte sizes and olekukonko/tablewriter tables (right-aligned, as etcdctl configures them).
//! Go's standard formats (`%q`, `time.Duration`, JSON strings) are in `oxcd-gocompat`.

use std::fmt::Write as _;

/// go-humanize `Bytes`: SI units, `20 kB`, `1.2 MB`.
pub fn human_bytes(size: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if size < 10 {
        return format!("{size} B");
    }
    let exp = ((size as f64).ln() / 1000f64.ln()).floor() as usize;
    let exp = exp.min(UNITS.len() - 1);
    let val = (size as f64 / 1000f64.powi(exp as i32) * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 {
        format!("{val:.1} {}", UNITS[exp])
    } else {
        format!("{val:.0} {}", UNITS[exp])
    }
}

/// Renders a table as etcdctl does: centred upper-case header, every cell right-aligned.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let header: Vec<String> = header.iter().map(|h| h.to_uppercase()).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line: String = widths.iter().fold(String::from("+"), |mut acc, w| {
        acc.push_str(&"-".repeat(w + 2));
        acc.push('+');
        acc
    });
    let mut out = format!("{line}\n|");
    for (h, w) in header.iter().zip(&widths) {
        let gap = w - h.chars().count();
        let left = gap / 2;
        let _ = write!(out, " {}{h}{} |", " ".repeat(left), " ".repeat(gap - left));
    }
    let _ = write!(out, "\n{line}\n");
    for row in rows {
        out.push('|');
        for (cell, w) in row.iter().zip(&widths) {
            let _ = write!(out, " {cell:>w$} |");
        }
        out.push('\n');
    }
    out + &line + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_formats() {
        assert_eq!(human_bytes(9), "9 B");
        assert_eq!(human_bytes(20480), "20 kB");
        assert_eq!(human_bytes(1_234_567), "1.2 MB");
        assert_eq!(
            table(&["a", "bee"], &[vec!["1".into(), "22".into()]]),
            "+---+-----+\n| A | BEE |\n+---+-----+\n| 1 |  22 |\n+---+-----+\n"
        );
    }
}
