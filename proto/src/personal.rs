//! Personal data: ID number validation (GB 11643), masking, and the
//! protected form that events carry. Encryption itself happens in `node`
//! (it needs randomness and keys); here a protected value is opaque bytes.

use serde::{Deserialize, Serialize};

/// Why an ID number (身份证号) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdNumberError {
    /// It is not 17 digits followed by a digit or X.
    #[error("invalid ID number: it has 18 characters: 17 digits and a final digit or X (got {0} characters)")]
    Length(usize),
    /// A character other than a digit (or a final X).
    #[error("invalid ID number: it holds only digits, with X allowed as the last character")]
    Character,
    /// The birth date part (characters 7–14) is not a date.
    #[error("invalid ID number: characters 7-14 are the birth date YYYYMMDD; {0} is not a date")]
    BirthDate(String),
    /// The GB 11643 check digit does not match.
    #[error("invalid ID number: the check digit is wrong: expected {expected}, got {got}; check the number with the applicant")]
    CheckDigit { expected: char, got: char },
}

const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const CHECK: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];

/// The GB 11643 check character for the first 17 digits.
pub fn id_check_digit(first17: &str) -> Option<char> {
    if first17.len() != 17 || !first17.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let sum: u32 = first17.bytes().zip(WEIGHTS).map(|(b, w)| u32::from(b - b'0') * w).sum();
    Some(CHECK[(sum % 11) as usize])
}

/// Validates an 18-character ID number and returns it normalised
/// (upper-case X).
pub fn validate_id_number(raw: &str) -> Result<String, IdNumberError> {
    let id = raw.trim().to_ascii_uppercase();
    let n = id.chars().count();
    if n != 18 {
        return Err(IdNumberError::Length(n));
    }
    // Only ASCII may be sliced by byte below: a multi-byte character of
    // the right count must not reach `split_at`.
    if !id.is_ascii() {
        return Err(IdNumberError::Character);
    }
    let (body, last) = id.split_at(17);
    let last = last.chars().next().unwrap_or(' ');
    if !body.bytes().all(|b| b.is_ascii_digit()) || !(last.is_ascii_digit() || last == 'X') {
        return Err(IdNumberError::Character);
    }
    let date = &body[6..14];
    let month: u32 = date[4..6].parse().unwrap_or(0);
    let day: u32 = date[6..8].parse().unwrap_or(0);
    let year: u32 = date[0..4].parse().unwrap_or(0);
    if !(1900..=2100).contains(&year) || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return Err(IdNumberError::BirthDate(date.to_string()));
    }
    let expected = id_check_digit(body).unwrap_or('?');
    if expected != last {
        return Err(IdNumberError::CheckDigit { expected, got: last });
    }
    Ok(id)
}

/// Masks a value for display, keeping `head` leading and `tail` trailing
/// characters: `511421********1234`.
pub fn mask(value: &str, head: usize, tail: usize) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() <= head + tail {
        return "*".repeat(chars.len());
    }
    let mut out: String = chars[..head].iter().collect();
    out.push_str(&"*".repeat(chars.len() - head - tail));
    out.extend(&chars[chars.len() - tail..]);
    out
}

/// `text` (a file's name, say: clerks name scans after the applicant's
/// ID number and phone) with every ID number in it (18 characters passing
/// GB 11643's check, also inside a longer run of digits) and every mobile
/// number (a run of exactly 11 digits starting with 1) masked as their
/// fields are; everything else is kept.
pub fn mask_personal_in(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = chars.clone();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == 'X' || chars[i] == 'x') {
            i += 1;
        }
        let run = &chars[start..i];
        let mut at = 0;
        while at + 18 <= run.len() {
            let window: String = run[at..at + 18].iter().collect();
            if validate_id_number(&window).is_ok() {
                for (k, c) in PersonalKind::IdNumber.mask(&window).chars().enumerate() {
                    out[start + at + k] = c;
                }
                at += 18;
            } else {
                at += 1;
            }
        }
        if run.len() == 11 && run[0] == '1' && run.iter().all(char::is_ascii_digit) {
            let phone: String = run.iter().collect();
            for (k, c) in PersonalKind::Phone.mask(&phone).chars().enumerate() {
                out[start + k] = c;
            }
        }
    }
    out.into_iter().collect()
}

/// Which kind of personal data a protected value holds; decides the mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PersonalKind {
    IdNumber,
    Phone,
    Address,
}

impl PersonalKind {
    /// Field names whose values are personal data and always travel protected.
    pub fn of_field(field: &str) -> Option<PersonalKind> {
        match field {
            "id_number" => Some(PersonalKind::IdNumber),
            "phone" => Some(PersonalKind::Phone),
            "address" => Some(PersonalKind::Address),
            _ => None,
        }
    }

    pub fn mask(self, clear: &str) -> String {
        match self {
            PersonalKind::IdNumber => mask(clear, 6, 4),
            PersonalKind::Phone => mask(clear, 3, 4),
            PersonalKind::Address => mask(clear, 3, 0),
        }
    }
}

/// A personal value as stored and sent: masked text for display, a keyed
/// hash for look-up, and the sealed (encrypted) value. The clear value is
/// never part of an event.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Protected {
    pub kind: PersonalKind,
    pub masked: String,
    /// Hex keyed hash of the normalised clear value, for look-up.
    pub lookup: String,
    /// Nonce and ciphertext, opaque to `proto`.
    pub sealed: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_numbers_and_phones_in_a_text_are_masked() {
        assert_eq!(
            mask_personal_in("身份证-11010519491231002x-13912345678.pdf"),
            "身份证-110105********002x-139****5678.pdf"
        );
        assert_eq!(mask_personal_in("scan20240111010519491231002X.jpg"), "scan202401110105********002X.jpg");
        // Not an ID (bad check digit), not a mobile number: kept.
        assert_eq!(
            mask_personal_in("110105194912310021 1391234567 2024.pdf"),
            "110105194912310021 1391234567 2024.pdf"
        );
    }

    #[test]
    fn accepts_valid_and_refuses_bad_check_digit() {
        // 11010519491231002X is the standard's published example.
        assert_eq!(validate_id_number("11010519491231002x").unwrap(), "11010519491231002X");
        assert!(matches!(
            validate_id_number("110105194912310021"),
            Err(IdNumberError::CheckDigit { expected: 'X', got: '1' })
        ));
        assert!(matches!(validate_id_number("12345"), Err(IdNumberError::Length(5))));
        assert!(matches!(validate_id_number("11010519491331002X"), Err(IdNumberError::BirthDate(_))));
        // 18 characters, one of them multi-byte: refused, not a panic.
        assert_eq!(validate_id_number("123456789012345中67"), Err(IdNumberError::Character));
        assert_eq!(validate_id_number("中23456789012345678"), Err(IdNumberError::Character));
        assert_eq!(validate_id_number("12345678901234567中"), Err(IdNumberError::Character));
    }

    #[test]
    fn masks_keep_only_ends() {
        assert_eq!(PersonalKind::IdNumber.mask("511421199001011234"), "511421********1234");
        assert_eq!(PersonalKind::Phone.mask("13800001234"), "138****1234");
    }
}
