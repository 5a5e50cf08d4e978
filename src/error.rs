//! Typed errors of the library. Each variant names the action that failed and
//! carries what a person needs to act on it; `exit_code` maps them onto the
//! CLI's contract (1 operation failed, 2 bad usage or bad input, 130
//! interrupted by Ctrl-C).

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

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

    #[error("{0}")]
    InvalidInput(String),

    #[error("{action} in {region}: {code}: {message}")]
    Aws {
        action: &'static str,
        region: String,
        code: String,
        message: String,
    },

    #[error("{action} in {region}: cannot reach the endpoint{endpoint}: {message}")]
    Unreachable {
        action: &'static str,
        region: String,
        endpoint: String,
        message: String,
    },

    #[error("{action} in {region}: no usable AWS credentials ({message}); set AWS_PROFILE or --profile, or run `aws configure` / `aws sso login`")]
    Credentials {
        action: &'static str,
        region: String,
        message: String,
    },

    #[error("{action} in {region}: {message}")]
    Sdk {
        action: &'static str,
        region: String,
        message: String,
    },

    #[error("kernel {kernel_id} ({name}): {problem}")]
    KernelMatch {
        kernel_id: String,
        name: String,
        problem: String,
    },

    #[error("no space left on the filesystem of {} while writing {} (the partial file was removed)", dir.display(), path.display())]
    NoSpace { path: PathBuf, dir: PathBuf },

    #[error("{action} {}", path.display())]
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
    /// 2 for bad usage or bad input, 130 after Ctrl-C, 1 for an operation that failed.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::UnknownRegion { .. }
            | Error::NoRegion
            | Error::MalformedId { .. }
            | Error::MalformedInstanceType(_)
            | Error::ImageNotFound { .. }
            | Error::UnknownInstanceType { .. }
            | Error::InvalidInput(_) => 2,
            Error::Interrupted
            | Error::MigrationInterrupted {
                interrupted: true, ..
            } => 130,
            _ => 1,
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

/// The error and its sources on one line, as the CLI prints it.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
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
