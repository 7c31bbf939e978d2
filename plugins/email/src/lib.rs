//! `email`: a Plait step that parses an RFC 5322 message (an `.eml` file)
//! into its sender, recipients, subject, date and body text, and hands each
//! attachment on as a blob, so documents that arrive by email go through
//! the same pipeline as uploaded ones.
//!
//! Input: the blob `message` (the raw message). Output: [`Parsed`], plus
//! one blob per attachment, named `attachment-1`, `attachment-2`, … with
//! the attachment's media type; the first one is also named `document`
//! (the name `ocr` and `archive` read), unless there are none.
//!
//! Parsing is [`mail_parser`]'s: MIME multipart, quoted-printable and
//! base64 transfer encodings, RFC 2047 encoded words, RFC 2231 parameters
//! and 40-odd character sets. When a message has only an HTML body, its
//! text is derived from the HTML.

use mail_parser::{Address, MessageParser, MimeHeaders};
use plait_sdk::{Blob, Context, Input, Output, Step, StepError, StepInfo};
use serde::Serialize;
use serde_json::Value;

/// The input blob holding the raw message.
pub const MESSAGE_BLOB: &str = "message";

/// The name the first attachment is also given.
pub const DOCUMENT_BLOB: &str = "document";

/// Headers of which a message has at least one.
const KNOWN_HEADERS: [&str; 9] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Received",
    "Return-Path",
];

/// The `email` step.
pub struct Email;

/// A mailbox: display name and address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mailbox {
    /// The display name, if given.
    pub name: Option<String>,
    /// The address, if given.
    pub address: Option<String>,
}

/// One attachment, described; its bytes are the blob `blob`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attachment {
    /// The blob carrying its bytes.
    pub blob: String,
    /// Its file name, if the message gives one.
    pub filename: Option<String>,
    /// Its media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: usize,
}

/// The output document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Parsed {
    /// `From`.
    pub from: Vec<Mailbox>,
    /// `To`.
    pub to: Vec<Mailbox>,
    /// `Cc`.
    pub cc: Vec<Mailbox>,
    /// `Subject`, decoded.
    pub subject: Option<String>,
    /// `Date`, as RFC 3339.
    pub date: Option<String>,
    /// `Message-ID`.
    pub message_id: Option<String>,
    /// The body as plain text (all text parts, joined by a blank line).
    pub text: String,
    /// The attachments, in order.
    pub attachments: Vec<Attachment>,
}

impl Step for Email {
    type Input = Value;
    type Output = Parsed;

    fn info() -> StepInfo {
        StepInfo::new("email", env!("CARGO_PKG_VERSION")).description(
            "Parses an RFC 5322 message (the blob `message`) into sender, recipients, subject, \
             date and body text, with each attachment as a blob (the first also as `document`).",
        )
    }

    fn run(ctx: &Context, input: Input<Value>) -> Result<Output<Parsed>, StepError> {
        let raw = &input.blobs.require(MESSAGE_BLOB)?.data;
        let (parsed, blobs) = parse(raw)?;
        ctx.info(&format!(
            "parsed a message with {} attachment(s)",
            parsed.attachments.len()
        ));
        Ok(Output::new(parsed).with_blobs(blobs))
    }
}

/// Parses `raw` into the output document and the attachment blobs.
///
/// # Errors
///
/// A fatal error when `raw` is not an email message at all (no header
/// section); a retry would read the same bytes.
pub fn parse(raw: &[u8]) -> Result<(Parsed, Vec<Blob>), StepError> {
    let message = MessageParser::default()
        .parse(raw)
        .filter(|message| {
            // The parser is liberal and finds "headers" in any bytes; a
            // message has at least one of the standard ones.
            message.headers().iter().any(|header| {
                KNOWN_HEADERS
                    .iter()
                    .any(|known| header.name().eq_ignore_ascii_case(known))
            })
        })
        .ok_or_else(|| {
            StepError::fatal(
                "the blob `message` is not an email message: it has none of the standard \
                 headers (From, To, Subject, Date, …); expected an RFC 5322 `.eml` file",
            )
        })?;
    let mut texts = Vec::new();
    for index in 0..message.text_body_count() {
        if let Some(text) = message.body_text(index) {
            let text = text.trim();
            if !text.is_empty() {
                texts.push(text.to_owned());
            }
        }
    }
    let mut attachments = Vec::new();
    let mut blobs = Vec::new();
    for (index, part) in message.attachments().enumerate() {
        let media_type = part
            .content_type()
            .map(|ct| match ct.subtype() {
                Some(subtype) => format!("{}/{subtype}", ct.ctype()),
                None => ct.ctype().to_owned(),
            })
            .unwrap_or_else(|| "application/octet-stream".to_owned())
            .to_ascii_lowercase();
        let name = format!("attachment-{}", index + 1);
        let data = part.contents().to_vec();
        attachments.push(Attachment {
            blob: name.clone(),
            filename: part.attachment_name().map(str::to_owned),
            media_type: media_type.clone(),
            size: data.len(),
        });
        if index == 0 {
            blobs.push(Blob::new(DOCUMENT_BLOB, media_type.clone(), data.clone()));
        }
        blobs.push(Blob::new(name, media_type, data));
    }
    let parsed = Parsed {
        from: mailboxes(message.from()),
        to: mailboxes(message.to()),
        cc: mailboxes(message.cc()),
        subject: message.subject().map(str::to_owned),
        date: message.date().map(|date| date.to_rfc3339()),
        message_id: message.message_id().map(str::to_owned),
        text: texts.join("\n\n"),
        attachments,
    };
    Ok((parsed, blobs))
}

fn mailboxes(address: Option<&Address<'_>>) -> Vec<Mailbox> {
    address
        .map(|address| {
            address
                .iter()
                .map(|addr| Mailbox {
                    name: addr.name().map(str::to_owned),
                    address: addr.address().map(str::to_owned),
                })
                .collect()
        })
        .unwrap_or_default()
}

plait_sdk::export_step!(Email);

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &str = "From: \"Ada Billing\" <billing@example.com>\r\n\
To: inbox@example.org, Bob <bob@example.org>\r\n\
Subject: =?UTF-8?Q?Invoice_42_=E2=80=94_March?=\r\n\
Date: Tue, 03 Mar 2026 09:15:00 +0000\r\n\
Message-ID: <42@example.com>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b1\"\r\n\
\r\n\
--b1\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
Please find invoice 42 attached. Total: 1=2C250.00 EUR\r\n\
--b1\r\n\
Content-Type: application/pdf; name=\"invoice-42.pdf\"\r\n\
Content-Disposition: attachment; filename=\"invoice-42.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
JVBERi0xLjQKJcOkw7zDtsOfCg==\r\n\
--b1--\r\n";

    #[test]
    fn a_message_with_an_attachment_is_taken_apart() {
        let (parsed, blobs) = parse(MESSAGE.as_bytes()).unwrap();
        assert_eq!(parsed.subject.as_deref(), Some("Invoice 42 — March"));
        assert_eq!(
            parsed.from[0].address.as_deref(),
            Some("billing@example.com")
        );
        assert_eq!(parsed.from[0].name.as_deref(), Some("Ada Billing"));
        assert_eq!(parsed.to.len(), 2);
        assert_eq!(parsed.date.as_deref(), Some("2026-03-03T09:15:00Z"));
        assert_eq!(parsed.message_id.as_deref(), Some("42@example.com"));
        assert_eq!(
            parsed.text,
            "Please find invoice 42 attached. Total: 1,250.00 EUR"
        );
        assert_eq!(parsed.attachments.len(), 1);
        let attachment = &parsed.attachments[0];
        assert_eq!(attachment.filename.as_deref(), Some("invoice-42.pdf"));
        assert_eq!(attachment.media_type, "application/pdf");
        assert_eq!(blobs[0].name, DOCUMENT_BLOB);
        assert_eq!(blobs[1].name, "attachment-1");
        assert_eq!(
            blobs[0].data,
            b"%PDF-1.4\n%\xc3\xa4\xc3\xbc\xc3\xb6\xc3\x9f\n"
        );
    }

    #[test]
    fn an_html_only_message_still_has_text() {
        let raw = "From: a@example.com\r\nSubject: Hi\r\nContent-Type: text/html\r\n\r\n<p>Hello <b>there</b></p>\r\n";
        let (parsed, blobs) = parse(raw.as_bytes()).unwrap();
        assert!(
            parsed.text.contains("Hello") && parsed.text.contains("there"),
            "{}",
            parsed.text
        );
        assert!(!parsed.text.contains("<p>"));
        assert!(blobs.is_empty());
    }

    #[test]
    fn bytes_that_are_not_a_message_are_refused() {
        let error = parse(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").unwrap_err();
        assert!(!error.is_retryable());
        assert!(
            error.message().contains("not an email message"),
            "{}",
            error.message()
        );
    }
}
