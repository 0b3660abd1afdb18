//! Exports of a filtered list: CSV (UTF-8 with a byte-order mark, so
//! spreadsheet programs read the Chinese) and Excel. Personal data stays
//! masked. A cell that a spreadsheet would take for a formula (`=`, `+`,
//! `-`, `@` first) is written as text with a leading apostrophe.

use anyhow::Result;

/// The columns of an export.
pub const HEADER: [&str; 10] =
    ["办件编号", "事项编码", "事项名称", "申请人", "状态", "收件点", "当前办理", "收件时间", "最近办理", "需人工核对"];

/// One exported row, in [`HEADER`] order.
pub type Row = [String; 10];

fn defuse(cell: &str) -> String {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}"),
        _ => cell.to_string(),
    }
}

fn csv_cell(cell: &str) -> String {
    let cell = defuse(cell);
    if cell.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell
    }
}

/// The CSV file of `rows`.
pub fn csv(rows: &[Row]) -> Vec<u8> {
    let mut out = String::from("\u{feff}");
    out.push_str(&HEADER.join(","));
    out.push_str("\r\n");
    for r in rows {
        out.push_str(&r.iter().map(|c| csv_cell(c)).collect::<Vec<_>>().join(","));
        out.push_str("\r\n");
    }
    out.into_bytes()
}

/// The Excel workbook of `rows`.
pub fn xlsx(rows: &[Row]) -> Result<Vec<u8>> {
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    sheet.set_name("办件")?;
    let bold = rust_xlsxwriter::Format::new().set_bold();
    for (c, h) in HEADER.iter().enumerate() {
        sheet.write_string_with_format(0, c as u16, *h, &bold)?;
    }
    for (r, row) in rows.iter().enumerate() {
        for (c, cell) in row.iter().enumerate() {
            sheet.write_string(r as u32 + 1, c as u16, defuse(cell))?;
        }
    }
    sheet.set_column_width(0, 26)?;
    sheet.set_column_width(2, 36)?;
    sheet.set_column_width(7, 17)?;
    sheet.set_column_width(8, 17)?;
    sheet.set_freeze_panes(1, 0)?;
    Ok(book.save_to_buffer()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let mut row: Row = Default::default();
        row[0] = "v01-3".into();
        row[3] = "=HYPERLINK(\"x\")".into();
        row[2] = "低保,申请".into();
        let text = String::from_utf8(csv(&[row])).unwrap();
        assert!(text.starts_with('\u{feff}'));
        let line = text.lines().nth(1).unwrap();
        assert!(line.contains("\"低保,申请\""), "{line}");
        assert!(line.contains("\"'=HYPERLINK(\"\"x\"\")\""), "{line}");
    }

    #[test]
    fn xlsx_is_a_zip_workbook() {
        let bytes = xlsx(&[Default::default()]).unwrap();
        assert_eq!(&bytes[..2], b"PK");
    }
}
