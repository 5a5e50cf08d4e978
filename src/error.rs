//! Typed errors of the library. Each variant names the action that failed and
//! carries what a person needs to act on it (ids, region, path, the
//! provider's code and request id) and, where there is one, its cause as
//! `source`; `exit_code` maps them onto the CLI's contract:
//!
//! - 2: the request is wrong (usage, ids, a source of the wrong kind, a
//!   name in use): refused before anything was made;
//! - 1: it failed while running (AWS, I/O, a guest that cannot be converted);
//! - 3: a migration stopped and kept what it made: `--resume ID` goes on;
//! - 130: interrupted (Ctrl-C).

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A cause of any kind, kept as an error's `source`.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The exit status of a migration that stopped and can go on with `--resume`.
pub const EXIT_RESUMABLE: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown region {region:?}: {hint}")]
    UnknownRegion { region: String, hint: String },

    #[error("no region given: pass --region R, --pv-regions or --all-regions, or set AWS_REGION")]
    NoRegion,

    #[error("malformed {kind} id {id:?}: expected {expected}")]
    MalformedId {
        kind: &'static str,
        id: String,
        expected: &'static str,
    },

    #[error("malformed instance type {0:?}: expected FAMILY.SIZE, e.g. m3.medium")]
    MalformedInstanceType(String),

    #[error("no such image {image_id} in {region}")]
    ImageNotFound { image_id: String, region: String },

    #[error("no such instance type {instance_type} in {region}")]
    UnknownInstanceType {
        instance_type: String,
        region: String,
    },

    /// Bad usage: flags that make no sense (together), or a value of the wrong form.
    #[error("{0}")]
    InvalidInput(String),

    /// Something the request names does not exist.
    #[error("no such {what} {id} in {place}")]
    NotFound {
        what: &'static str,
        id: String,
        /// The region, or the directory (journals).
        place: String,
    },

    /// The request names something of the wrong kind or state (an HVM
    /// image, an instance-store image, a name in use): refused before
    /// anything was made.
    #[error("{reason}")]
    Refused {
        /// What was refused (an image, an instance, a migration, a file).
        id: String,
        /// The whole sentence, naming it.
        reason: String,
    },

    /// The backend cannot do what was asked (the local host has no helper,
    /// AWS launches no QEMU).
    #[error("{0}")]
    Unsupported(String),

    /// The guest cannot be converted: its own problem, named.
    #[error("{reason}")]
    Unconvertible {
        id: String,
        /// The whole sentence, naming the guest and its problem.
        reason: String,
    },

    /// The guest's disk cannot be read (not ext2/3/4, damaged, truncated).
    #[error("{id}: {source}")]
    Guest {
        id: String,
        #[source]
        source: crate::image::fs::FsError,
    },

    /// Making the HVM disk failed at `action` (the boot blocks, writing the
    /// guest's files, reading them back).
    #[error("{action}: {source}")]
    Build {
        action: String,
        #[source]
        source: Cause,
    },

    /// The helper's preparation script refused or failed.
    #[error("{action}: {message}")]
    Script {
        action: &'static str,
        message: String,
    },

    /// A worker thread of amitool's ended without finishing.
    #[error("a worker thread of amitool stopped: {source}")]
    Panicked {
        #[source]
        source: tokio::task::JoinError,
    },

    /// What the provider registered is not what was asked.
    #[error("the registered image {image_id} is not what was asked: {problems}")]
    Registered { image_id: String, problems: String },

    #[error("{action} in {region}: {code}: {message}{}", request_id.as_ref().map(|r| format!(" (request {r})")).unwrap_or_default())]
    Aws {
        action: &'static str,
        region: String,
        code: String,
        message: String,
        /// The provider's request id, for its support (boxed: an Error stays
        /// small enough to return by value).
        request_id: Option<Box<str>>,
        #[source]
        source: Cause,
    },

    #[error("{action} in {region}: cannot reach the endpoint{endpoint}: {message}")]
    Unreachable {
        action: &'static str,
        region: String,
        endpoint: String,
        message: String,
        #[source]
        source: Cause,
    },

    #[error("{action} in {region}: no usable AWS credentials ({message}); set AWS_PROFILE or --profile, or run `aws configure` / `aws sso login`")]
    Credentials {
        action: &'static str,
        region: String,
        message: String,
        #[source]
        source: Cause,
    },

    #[error("{action} in {region}: {message}")]
    Sdk {
        action: &'static str,
        region: String,
        message: String,
        #[source]
        source: Cause,
    },

    #[error("kernel {kernel_id} ({name}): {problem}")]
    KernelMatch {
        kernel_id: String,
        name: String,
        problem: String,
    },

    #[error(
        "no space left on the filesystem of {} while writing {} (the partial file was removed)",
        crate::ids::shown_path(dir),
        crate::ids::shown_path(path)
    )]
    NoSpace { path: PathBuf, dir: PathBuf },

    #[error("{action} {}", crate::ids::shown_path(path))]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{what}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("migration {migration_id} stopped: {message}; finish it with `amitool migrate --resume {migration_id}` or remove what it made with `--cleanup {migration_id}`")]
    MigrationInterrupted {
        migration_id: String,
        message: String,
        /// Stopped by Ctrl-C (exit 130).
        interrupted: bool,
    },

    #[error("interrupted (Ctrl-C)")]
    Interrupted,

    #[error("{action} in {region}: {message}")]
    Transfer {
        action: &'static str,
        region: String,
        message: String,
    },

    #[error("{failed} of {total} regions failed")]
    RegionsFailed { failed: usize, total: usize },

    /// No instance type fits as the replacement (`--replace`).
    #[error("--replace: {reason}; give --instance-type")]
    NoSuccessor { reason: String },

    /// `--verify`: the new image did not boot; it stays registered.
    #[error("{message}")]
    NotBooted {
        /// The migration, finished but for the boot.
        migration: Box<crate::migrate::Migration>,
        message: String,
    },
}

impl Error {
    /// 2 when the request is wrong, 1 when running failed, 3 when a
    /// migration stopped and can be resumed, 130 after Ctrl-C.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::UnknownRegion { .. }
            | Error::NoRegion
            | Error::MalformedId { .. }
            | Error::MalformedInstanceType(_)
            | Error::ImageNotFound { .. }
            | Error::UnknownInstanceType { .. }
            | Error::InvalidInput(_)
            | Error::NotFound { .. }
            | Error::Refused { .. }
            | Error::Unsupported(_) => 2,
            Error::Interrupted
            | Error::MigrationInterrupted {
                interrupted: true, ..
            } => 130,
            Error::MigrationInterrupted { .. } => EXIT_RESUMABLE,
            _ => 1,
        }
    }

    /// A refusal of what the request names, before anything was made.
    pub fn refused(id: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Refused {
            id: id.into(),
            reason: reason.into(),
        }
    }

    /// A name the request gives that does not exist.
    pub fn not_found(what: &'static str, id: impl Into<String>, place: impl Into<String>) -> Self {
        Error::NotFound {
            what,
            id: id.into(),
            place: place.into(),
        }
    }

    /// A step of making the disk that failed, with its cause.
    pub fn build(action: impl Into<String>, source: impl Into<Cause>) -> Self {
        Error::Build {
            action: action.into(),
            source: source.into(),
        }
    }

    /// A provider's answer that lacks what it must carry (an id): never `""`.
    pub fn missing(action: &'static str, region: &str, what: &str) -> Self {
        Error::Sdk {
            action,
            region: region.to_string(),
            message: format!("the answer carries no {what}"),
            source: format!("{action} answered without {what}").into(),
        }
    }

    /// A failed write: a full disk named as such, else the I/O error.
    pub fn write(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.raw_os_error() == Some(28) {
            let dir = path.parent().map(PathBuf::from).unwrap_or_default();
            return Error::NoSpace { path, dir };
        }
        Error::io("write", path, source)
    }

    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// The error and its sources on one line, as the CLI prints it. A
/// provider's error says all in its own line (its SDK error stays its
/// source, for -v).
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    if matches!(
        err.downcast_ref::<Error>(),
        Some(
            Error::Aws { .. }
                | Error::Sdk { .. }
                | Error::Unreachable { .. }
                | Error::Credentials { .. }
        )
    ) {
        return out;
    }
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}
