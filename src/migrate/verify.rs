//! `migrate --verify`: boot the new image and wait for its console to say
//! `--verify-expect`. A capability of the host (`Backend::boot_check`): AWS
//! launches a small instance and reads GetConsoleOutput, the local host
//! boots the disk under QEMU; a backend without one says so.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;

/// What a verification boot saw: whether `expect` appeared, and in words
/// what booted where (or why not), for the step's detail or the error.
#[derive(Debug, Clone, PartialEq)]
pub struct Booted {
    pub reached: bool,
    pub detail: String,
}

#[async_trait]
pub trait BootCheck: Send + Sync {
    /// Boot `image_id` and wait up to `timeout` for `expect` on its console;
    /// whatever ran for it is ended.
    async fn boot(
        &self,
        region: &str,
        image_id: &str,
        expect: &str,
        timeout: Duration,
        migration_id: &str,
    ) -> Result<Booted>;
}
