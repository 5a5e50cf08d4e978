//! Syntactic checks of the identifiers a user types, so that a typo is a usage
//! error before any request is sent.

use crate::error::{Error, Result};

/// The kinds of EC2 resource ids amitool reads from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Image,
    Kernel,
    Instance,
    Snapshot,
    Volume,
}

impl IdKind {
    fn prefix(self) -> &'static str {
        match self {
            IdKind::Image => "ami",
            IdKind::Kernel => "aki",
            IdKind::Instance => "i",
            IdKind::Snapshot => "snap",
            IdKind::Volume => "vol",
        }
    }

    fn expected(self) -> &'static str {
        match self {
            IdKind::Image => "ami- followed by 8 or 17 hex digits",
            IdKind::Kernel => "aki- followed by 8 or 17 hex digits",
            IdKind::Instance => "i- followed by 8 or 17 hex digits",
            IdKind::Snapshot => "snap- followed by 8 or 17 hex digits",
            IdKind::Volume => "vol- followed by 8 or 17 hex digits",
        }
    }
}

/// A value as an error quotes it: whole when short, else its first 40
/// characters and how many there were (an error never echoes a huge argument).
pub fn shown(value: &str) -> String {
    const MAX: usize = 40;
    let n = value.chars().count();
    if n <= MAX {
        value.to_string()
    } else {
        format!(
            "{}… ({n} characters)",
            value.chars().take(MAX).collect::<String>()
        )
    }
}

/// A path as an error quotes it: whole up to 240 characters (any real one),
/// else its head and tail around how many there were.
pub fn shown_path(path: &std::path::Path) -> String {
    const MAX: usize = 240;
    let s = path.display().to_string();
    let n = s.chars().count();
    if n <= MAX {
        return s;
    }
    let head: String = s.chars().take(60).collect();
    let tail: String = s.chars().skip(n - 60).collect();
    format!("{head}…({n} characters)…{tail}")
}

/// `ami-0123abcd`, `aki-919dcaf8`, `i-0123456789abcdef0`: a prefix and 8 or 17 lowercase hex digits.
pub fn check_id(kind: IdKind, id: &str) -> Result<()> {
    let ok = id
        .strip_prefix(kind.prefix())
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|hex| {
            matches!(hex.len(), 8 | 17)
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
    if ok {
        Ok(())
    } else {
        Err(Error::MalformedId {
            kind: kind.prefix(),
            id: shown(id),
            expected: kind.expected(),
        })
    }
}

/// `m3.medium`, `c6gn.16xlarge`, `u-6tb1.metal`: lowercase family, a dot, a size.
/// EC2's rules for an image name: 3 to 128 characters of letters, digits,
/// spaces and ( ) [ ] . / - ' @ _ (RegisterImage, CreateImage).
pub fn check_image_name(name: Option<&str>) -> Result<()> {
    let Some(name) = name else { return Ok(()) };
    let n = name.chars().count();
    let bad = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || " ()[]./-'@_".contains(*c)));
    let shown: String = name
        .chars()
        .take(40)
        .collect::<String>()
        .escape_debug()
        .to_string();
    let more = if n > 40 { "…" } else { "" };
    if !(3..=128).contains(&n) {
        return Err(Error::InvalidInput(format!(
            "image name \"{shown}{more}\" is {n} characters: EC2 takes 3 to 128"
        )));
    }
    if let Some(c) = bad {
        return Err(Error::InvalidInput(format!(
            "image name \"{shown}{more}\" holds {:?}: EC2 takes letters, digits, spaces and ( ) [ ] . / - ' @ _",
            c
        )));
    }
    Ok(())
}

pub fn check_instance_type(t: &str) -> Result<()> {
    let ok = t.split_once('.').is_some_and(|(family, size)| {
        let part = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        part(family) && part(size)
    });
    if ok {
        Ok(())
    } else {
        Err(Error::MalformedInstanceType(shown(t)))
    }
}

/// An S3 bucket name S3 would take: 3 to 63 lowercase letters, digits, dots
/// and dashes, starting and ending with a letter or digit, no `..`.
pub fn check_bucket_name(name: &str) -> Result<()> {
    let b = name.as_bytes();
    let ok = (3..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..");
    if ok {
        Ok(())
    } else {
        Err(Error::MalformedId {
            kind: "S3 bucket",
            id: shown(name),
            expected: "3 to 63 lowercase letters, digits, dots and dashes",
        })
    }
}

/// `eu-central-1`, `us-gov-west-1`, `cn-north-1`: letters and dashes ending in a number.
pub fn region_is_well_formed(region: &str) -> bool {
    let mut parts = region.split('-').collect::<Vec<_>>();
    let Some(number) = parts.pop() else {
        return false;
    };
    parts.len() >= 2
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_ids() {
        assert!(check_id(IdKind::Image, "ami-0123abcd").is_ok());
        assert!(check_id(IdKind::Image, "ami-0123456789abcdef0").is_ok());
        assert!(check_id(IdKind::Image, "ami-0123ABCD").is_err());
        assert!(check_id(IdKind::Image, "ami-0123abc").is_err());
        assert!(check_id(IdKind::Image, "aki-0123abcd").is_err());
        assert!(check_id(IdKind::Image, "ami0123abcd").is_err());
        assert!(check_id(IdKind::Kernel, "aki-919dcaf8").is_ok());
        assert!(check_id(IdKind::Instance, "i-0123456789abcdef0").is_ok());
        let err = check_id(IdKind::Kernel, "aki-xyz").unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("aki-xyz"));
    }

    #[test]
    fn instance_types() {
        assert!(check_instance_type("m3.medium").is_ok());
        assert!(check_instance_type("u-6tb1.metal").is_ok());
        assert!(check_instance_type("m3").is_err());
        assert!(check_instance_type("M3.medium").is_err());
        assert!(check_instance_type("m3.").is_err());
        assert!(check_instance_type("m3.medium; rm").is_err());
    }

    #[test]
    fn regions() {
        assert!(region_is_well_formed("eu-central-1"));
        assert!(region_is_well_formed("us-gov-west-1"));
        assert!(!region_is_well_formed("eu-central"));
        assert!(!region_is_well_formed("EU-central-1"));
        assert!(!region_is_well_formed("eu--1"));
        assert!(!region_is_well_formed("moon"));
    }
}
