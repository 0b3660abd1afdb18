//! Small real files for the material-file tests: a PNG that any image
//! viewer shows (a drawn ID card), a one-page PDF that a PDF viewer opens,
//! an executable's first bytes, and large PDFs of pseudo-random bytes.
//! Built here with no library: PNG's zlib stream uses stored (uncompressed)
//! blocks.

/// CRC-32 (IEEE), as PNG chunks carry it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn adler32(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in bytes {
        a = (a + u32::from(x)) % 65_521;
        b = (b + a) % 65_521;
    }
    (b << 16) | a
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    let mut typed = kind.to_vec();
    typed.extend_from_slice(data);
    out.extend_from_slice(&typed);
    out.extend(crc32(&typed).to_be_bytes());
}

/// An RGB PNG of `width` × `height`, each pixel from `pixel(x, y)`.
pub fn png(width: u32, height: u32, pixel: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(((width * 3 + 1) * height) as usize);
    for y in 0..height {
        raw.push(0); // filter: none
        for x in 0..width {
            raw.extend(pixel(x, y));
        }
    }
    // zlib: header, stored blocks of at most 65 535 bytes, Adler-32.
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        z.extend(len.to_le_bytes());
        z.extend((!len).to_le_bytes());
        z.extend_from_slice(block);
    }
    z.extend(adler32(&raw).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]); // 8 bits, RGB, deflate, no filter, no interlace
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// A drawn ID card (居民身份证 back and front are like this): a pale blue
/// card with a darker band, a photo and lines of "text".
pub fn id_card_png() -> Vec<u8> {
    png(360, 228, |x, y| {
        let card = [226, 238, 248];
        if y < 34 {
            [31, 95, 166]
        } else if (250..=336).contains(&x) && (54..=166).contains(&y) {
            // The photo: a face on a light ground.
            let (dx, dy) = (x as i32 - 293, y as i32 - 98);
            if dx * dx + dy * dy < 26 * 26 || (dy > 30 && dx.abs() < 38) {
                [120, 92, 78]
            } else {
                [245, 245, 245]
            }
        } else if (24..=220).contains(&x) && [60, 90, 120, 150, 180].iter().any(|l| (*l..*l + 8).contains(&y)) {
            [96, 110, 124]
        } else {
            card
        }
    })
}

/// A one-page PDF that viewers open, saying `text` (ASCII) on A4.
pub fn one_page_pdf(text: &str) -> Vec<u8> {
    let stream = format!("BT /F1 28 Tf 72 720 Td ({text}) Tj ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R \
         /Resources << /Font << /F1 5 0 R >> >> >>"
            .to_string(),
        format!("<< /Length {} >>\nstream\n{stream}\nendstream", stream.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_string(),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{o}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
    for o in offsets {
        out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!("trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1).as_bytes(),
    );
    out
}

/// The first bytes of an ELF executable (what a virus in a "scan" is).
pub const ELF: &[u8] = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0 this is no scan";

/// A PDF of `size` bytes: a header, then pseudo-random bytes from `seed`.
pub fn pdf_of_size(size: usize, seed: u64) -> Vec<u8> {
    let mut bytes = b"%PDF-1.4\n1 0 obj <</Type /Page>>\n".to_vec();
    let mut x = seed | 1;
    while bytes.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes.push(x as u8);
    }
    bytes
}

/// Writes `bytes` to `dir/name` and returns the path.
pub fn write_file(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Every file under a directory, recursively.
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Catalogue v`version` from the shipped one: V900 added (a copy of V001),
/// V002's promised limit changed, V006 cancelled.
pub fn next_catalogue(dir: &std::path::Path, version: u32) -> std::path::PathBuf {
    let mut c: serde_json::Value = serde_json::from_str(include_str!("../../deploy/catalogue.json")).unwrap();
    c["version"] = version.into();
    c["note"] = "2026 年第二批事项调整".into();
    let items = c["items"].as_array_mut().unwrap();
    let mut added = items.iter().find(|i| i["code"] == "V001").unwrap().clone();
    added["code"] = "V900".into();
    added["name"] = "新增便民事项".into();
    let v002 = items.iter_mut().find(|i| i["code"] == "V002").unwrap();
    v002["promised_limit_days"] = 2.into();
    items.retain(|i| i["code"] != "V006");
    items.push(added);
    let path = dir.join(format!("catalogue-v{version}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_are_the_standard_ones() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
        let p = png(2, 2, |_, _| [1, 2, 3]);
        assert!(p.starts_with(b"\x89PNG\r\n\x1a\n") && p.ends_with(&crc32(b"IEND").to_be_bytes()));
        assert!(one_page_pdf("x").starts_with(b"%PDF-1.4"));
    }
}
