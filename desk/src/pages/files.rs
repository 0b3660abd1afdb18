//! Material files (scans and photos of an ID card, a 户口簿, a signed
//! 申请表): each material's files on the case page, their upload (at
//! intake and on the case page, 补正 by replacing), 移除, and the files
//! themselves, served only to staff of a node whose scope holds the case,
//! every opening written to the access log.
//!
//! What a file is and whether it is taken is the ledger's to say
//! (`Ledger::attach_file`); the one check made here is of what arrives
//! before a case exists (intake), with the same proto rules and the same
//! refusals, so that a refused file leaves no case behind.

use super::case;
use super::{load_case, node_name};
use crate::session::{Checked, Sent, Staff, Upload};
use crate::{csrf, text, App, DeskError};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use node::Declined;
use proto::files::{FileHash, MediaType, FILE_LIMIT_DEFAULT};
use proto::fold::{CaseFile, CaseState, Happened};
use proto::Topology;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::sync::Arc;

/// What a file input offers to choose: the types the ledger takes (it
/// tells them by content, whatever the browser says).
pub const ACCEPT: &str = "application/pdf,image/jpeg,image/png,.ofd";

/// The policy of a served file: nothing in it may run, load or be framed
/// (a PDF still opens in the browser's own viewer, an image shows).
pub const FILE_CSP: &str = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; object-src 'self'; \
                            script-src 'none'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// The address of one of a case's files.
pub fn url(c: &CaseState, f: &CaseFile) -> String {
    format!("/case/{}/files/{}", c.case_id, f.file.hash.to_hex())
}

/// The note of the 移除 that took a file off, if any.
fn removal_note<'a>(c: &'a CaseState, f: &CaseFile) -> Option<&'a str> {
    let removed = f.removed.as_ref()?;
    c.history.iter().find(|h| &h.event == removed).and_then(|h| match &h.happened {
        Happened::FileDetached { note, .. } if !note.is_empty() => Some(note.as_str()),
        _ => None,
    })
}

/// A material's files, every one ever attached (replaced and removed ones
/// stay, marked, as its history), oldest first.
pub fn listed(
    staff: &Staff,
    c: &CaseState,
    material: &str,
    held: &BTreeSet<FileHash>,
    county: &BTreeSet<FileHash>,
    topology: &Topology,
    open: bool,
) -> Markup {
    let files: Vec<&CaseFile> = c.files.iter().filter(|f| f.material == material).collect();
    html! {
        @if !files.is_empty() {
            ul.files { @for f in files {
                @let here = held.contains(&f.file.hash);
                @let href = url(c, f);
                li.file class=[(!f.is_current()).then_some("old")] {
                    @if here && f.file.media_type.is_image() {
                        a.thumb href=(href) target="_blank" rel="noopener" {
                            img src=(format!("{href}?thumbnail=1")) alt=(f.file.name) loading="lazy";
                        }
                    } @else {
                        span.thumb.kind { (f.file.media_type.extension().to_uppercase()) }
                    }
                    div.file-info {
                        div.file-name {
                            @if here {
                                a href=(href) target="_blank" rel="noopener" { (f.file.name) }
                            } @else {
                                span { (f.file.name) }
                            }
                            @if f.replaced_by.is_some() { " " span.badge { (text::FILE_REPLACED) } }
                            @if f.removed.is_some() {
                                " " span.badge { (text::FILE_REMOVED) }
                                @if let Some(note) = removal_note(c, f) { span.muted { "：" (note) } }
                            }
                            @if !here { " " span.badge.maybe { (text::FILE_NOT_HERE) } }
                            @if county.contains(&f.file.hash) { " " span.badge.ok { (text::COUNTY_RECEIVED) } }
                        }
                        div.file-meta.muted.small {
                            span { (text::file_size(f.file.size)) }
                            span { (text::media_type(f.file.media_type)) }
                            @if let (Some(p), false) = (f.file.pages, f.file.media_type.is_image()) { span { (text::pages(p)) } }
                            span { (f.actor) }
                            span { (node_name(topology, &f.event.origin)) }
                            span { (crate::when(f.at.wall_ms)) }
                        }
                    }
                    @if open && f.is_current() {
                        form.remove method="post" action=(format!("{href}/remove")) {
                            (csrf(staff))
                            input type="hidden" name="material" value=(material);
                            input name="note" placeholder=(text::DETACH_NOTE) maxlength="200";
                            button.link.danger type="submit" { (text::DETACH) }
                        }
                    }
                }
            } }
        }
    }
}

/// The upload of a file for one material: 上传, or, once it has a current
/// file, 替换 (补正: the new file supersedes the old, which stays in the
/// history) or 再传一份 (another page of it). A refusal is shown beside
/// the field.
pub fn upload_form(staff: &Staff, c: &CaseState, material: &str, error: Option<&str>) -> Markup {
    let current: Vec<&CaseFile> = c.files.iter().filter(|f| f.material == material && f.is_current()).collect();
    html! {
        form.upload method="post" action=(format!("/case/{}/files", c.case_id)) enctype="multipart/form-data"
            data-material=(material) class=[error.is_some().then_some("invalid")] {
            // The token first: it is checked before the file is read.
            (csrf(staff))
            input type="hidden" name="material" value=(material);
            input type="file" name="file" accept=(ACCEPT) capture="environment" required
                aria-label=(format!("{material}：{}", text::CHOOSE_FILE));
            @if current.is_empty() {
                button type="submit" { (text::UPLOAD) }
            } @else {
                @for f in &current {
                    button type="submit" name="replaces" value=(f.file.hash.to_hex()) {
                        (text::REPLACE) @if current.len() > 1 { "“" (f.file.name) "”" }
                    }
                }
                button type="submit" name="replaces" value="" { (text::ADD_FILE) }
            }
            @if let Some(e) = error { span.field-error role="alert" { (e) } }
        }
    }
}

/// A file input of the intake form, for the material at `index`.
pub fn intake_input(index: usize, material: &str, error: Option<&str>) -> Markup {
    html! {
        span.intake-file {
            input type="file" name=(format!("file{index}")) accept=(ACCEPT) capture="environment"
                aria-label=(format!("{material}：{}", text::CHOOSE_FILE)) class=[error.is_some().then_some("invalid")];
            @if let Some(e) = error { span.field-error role="alert" { (e) } }
        }
    }
}

/// Why a file sent could not even be kept (see [`Sent::bytes`]), in words.
fn not_kept(sent: &Sent) -> String {
    if sent.size > FILE_LIMIT_DEFAULT {
        text::declined(&Declined::FileTooLarge { size: sent.size, limit: FILE_LIMIT_DEFAULT }.into()).1
    } else {
        text::FILES_TOO_LARGE_TOGETHER.to_string()
    }
}

/// A file for a case that does not exist yet (intake): the checks of
/// `Ledger::attach_file` that need no case (size, type told by content,
/// the event's limits), with its refusals in their words. The ledger checks
/// again when it attaches the file.
pub fn precheck(material: &str, sent: Sent) -> Result<(String, Vec<u8>), String> {
    let Some(bytes) = sent.bytes.as_ref() else { return Err(not_kept(&sent)) };
    let file = node::ledger::check_file(material, &sent.name, bytes).map_err(|d| text::declined(&d.into()).1)?;
    Ok((file.name, sent.bytes.unwrap_or_default()))
}

#[derive(Deserialize)]
pub struct UploadForm {
    #[serde(default)]
    material: String,
    /// The hash of the file this one replaces (补正); empty to add.
    #[serde(default)]
    replaces: String,
}

/// Attaches the file sent to a material of the case. A refusal comes back
/// as the case page with the reason beside the field, nothing written.
pub async fn upload(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    u: Upload<UploadForm>,
) -> Result<Response, DeskError> {
    let material = u.form.material.trim().to_string();
    let replaces = match u.form.replaces.trim() {
        "" => None,
        h => Some(FileHash::from_hex(h).ok_or_else(|| DeskError::BadRequest(text::BAD_FORM.into()))?),
    };
    let Some(sent) = u.files.into_iter().find(|f| f.field == "file") else {
        return case::refused_at(&app, &u.staff, &id, &material, text::NO_FILE_CHOSEN.into(), StatusCode::CONFLICT)
            .await;
    };
    let Some(bytes) = sent.bytes.clone() else {
        let why = not_kept(&sent);
        return case::refused_at(&app, &u.staff, &id, &material, why, StatusCode::PAYLOAD_TOO_LARGE).await;
    };
    let name = sent.name;
    let at = material.clone();
    case::write_at(&app, &u.staff, &id, Some(at), move |l, case, actor| {
        l.attach_file(actor, case, &material, &name, &bytes, replaces).map(drop)
    })
    .await
}

#[derive(Deserialize)]
pub struct RemoveForm {
    material: String,
    #[serde(default)]
    note: String,
}

/// 移除: takes a file off its material (an event; the file stays in the
/// case's history).
pub async fn remove(
    State(app): State<Arc<App>>,
    Path((id, hash)): Path<(String, String)>,
    c: Checked<RemoveForm>,
) -> Result<Response, DeskError> {
    let hash = FileHash::from_hex(&hash).ok_or(DeskError::NotFound)?;
    let (material, note) = (c.form.material.clone(), c.form.note.trim().to_string());
    case::write_at(&app, &c.staff, &id, None, move |l, case, actor| {
        l.detach_file(actor, case, &material, hash, &note).map(drop)
    })
    .await
}

#[derive(Deserialize, Default)]
pub struct Opening {
    /// Shown as a thumbnail on the case page (logged as such).
    thumbnail: Option<String>,
}

/// `Content-Disposition` of a served file: shown in the browser (a PDF in
/// its viewer, an image), or saved for OFD, which browsers cannot show;
/// the name as attached, ending in the extension of its type.
pub fn disposition(name: &str, media_type: MediaType) -> String {
    let ext = media_type.extension();
    let ends_right = name.rsplit_once('.').is_some_and(|(stem, e)| {
        !stem.is_empty()
            && (e.eq_ignore_ascii_case(ext) || (media_type == MediaType::Jpeg && e.eq_ignore_ascii_case("jpeg")))
    });
    let name = match (name.trim(), ends_right) {
        ("", _) => format!("file.{ext}"),
        (n, true) => n.to_string(),
        (n, false) => format!("{n}.{ext}"),
    };
    // RFC 8187: every byte but the attr-chars percent-encoded.
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    let how = if media_type == MediaType::Ofd { "attachment" } else { "inline" };
    format!("{how}; filename*=UTF-8''{encoded}")
}

/// One of a case's files, to staff of this node only when the case is
/// one this desk shows (the case page's lookup: anything else is 404),
/// checked against its hash as it is read (a damaged file is an error
/// page, never bytes), typed by its stored type (never its name), and
/// written to the access log.
pub async fn open(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path((id, hash)): Path<(String, String)>,
    Query(q): Query<Opening>,
) -> Result<Response, DeskError> {
    let c = load_case(&app, &id).await?;
    let hash = FileHash::from_hex(&hash).ok_or(DeskError::NotFound)?;
    let file = c.files.iter().find(|f| f.file.hash == hash).ok_or(DeskError::NotFound)?.file.clone();
    let what = text::file_access_key(&file.name, q.thumbnail.is_some());
    let (case, login, size) = (c.case_id.clone(), staff.member.login.clone(), file.size);
    let read = app
        .read(move |l| {
            let mut bytes = Vec::with_capacity(size.min(FILE_LIMIT_DEFAULT) as usize);
            Ok(match l.read_file(&case, &hash, &mut bytes) {
                Ok(_) => {
                    node::staff::log_access(l.store().conn(), &login, &case.0, &what, node::wall_clock_ms())?;
                    Ok(bytes)
                }
                Err(e) => Err(e),
            })
        })
        .await?;
    let bytes = match read {
        Ok(bytes) => bytes,
        Err(node::Error::DamagedFile(why)) => {
            tracing::error!("desk: {why}");
            return Err(DeskError::Damaged);
        }
        Err(e) => match e.declined() {
            Some(Declined::FileNotHere(_)) => return Err(DeskError::Missing(text::declined(&e).1)),
            Some(_) => return Err(DeskError::NotFound),
            None => return Err(DeskError::Internal(e.into())),
        },
    };
    let value = |s: &str| HeaderValue::from_str(s).map_err(|e| DeskError::Internal(e.into()));
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(file.media_type.mime())),
        (header::CONTENT_DISPOSITION, value(&disposition(&file.name, file.media_type))?),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::CACHE_CONTROL, HeaderValue::from_static("private, no-store")),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(FILE_CSP)),
    ];
    Ok((headers, bytes).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_served_name_is_encoded_and_ends_in_its_type() {
        assert_eq!(
            disposition("身份证 正面.pdf", MediaType::Pdf),
            "inline; filename*=UTF-8''%E8%BA%AB%E4%BB%BD%E8%AF%81%20%E6%AD%A3%E9%9D%A2.pdf"
        );
        assert_eq!(disposition("scan.exe", MediaType::Png), "inline; filename*=UTF-8''scan.exe.png");
        assert_eq!(disposition("photo.JPEG", MediaType::Jpeg), "inline; filename*=UTF-8''photo.JPEG");
        assert_eq!(disposition("", MediaType::Ofd), "attachment; filename*=UTF-8''file.ofd");
        assert_eq!(disposition("a\"b;c\r\n.pdf", MediaType::Pdf), "inline; filename*=UTF-8''a%22b%3Bc%0D%0A.pdf");
    }

    fn sent(name: &str, bytes: &[u8]) -> Sent {
        Sent { field: "file0".into(), name: name.into(), size: bytes.len() as u64, bytes: Some(bytes.to_vec()) }
    }

    #[test]
    fn intake_files_are_refused_as_the_ledger_refuses_them() {
        let (name, bytes) = precheck("居民身份证", sent("C:\\scans\\id.pdf", b"%PDF-1.4 x")).unwrap();
        assert_eq!((name.as_str(), bytes.len()), ("id.pdf", 10));
        let elf = precheck("居民身份证", sent("id.pdf", b"\x7fELF\x02\x01\x01\0")).unwrap_err();
        assert!(elf.contains("只能上传 PDF、JPEG、PNG 或 OFD"), "{elf}");
        let big = Sent { field: "file0".into(), name: "big.pdf".into(), size: 21 * 1_048_576, bytes: None };
        let big = precheck("居民身份证", big).unwrap_err();
        assert!(big.contains("21.0 MB") && big.contains("20 MB"), "{big}");
        let long = precheck("居民身份证", sent(&format!("{}.pdf", "长".repeat(300)), b"%PDF-1.4")).unwrap_err();
        assert!(long.contains("文件名过长"), "{long}");
    }
}
