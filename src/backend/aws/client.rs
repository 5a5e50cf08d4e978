//! The one place that builds AWS clients: profile, endpoint URL, retries and
//! timeouts on top of the standard chain (AWS_PROFILE, AWS_REGION,
//! AWS_ENDPOINT_URL, credential files, SSO, instance roles).

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

/// What the command line may override in the standard chain.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
}

pub async fn load_sdk_config(opts: &ClientOptions) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(4))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(60))
                .build(),
        );
    if let Some(p) = &opts.profile {
        loader = loader.profile_name(p);
    }
    if let Some(u) = &opts.endpoint_url {
        loader = loader.endpoint_url(u);
    }
    loader.load().await
}

/// Whether `profile` is in the shared config or credentials file (where the
/// AWS CLI looks: AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE, else ~/.aws);
/// `Err` names the files looked in, in the AWS CLI's words.
pub fn check_profile(profile: &str) -> Result<(), String> {
    let home = dirs::home_dir().unwrap_or_default();
    let config = std::env::var_os("AWS_CONFIG_FILE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| home.join(".aws/config"));
    let creds = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| home.join(".aws/credentials"));
    let has = |path: &std::path::Path, names: &[String]| {
        std::fs::read_to_string(path).is_ok_and(|t| {
            t.lines().any(|l| {
                let l = l.trim();
                l.strip_prefix('[')
                    .and_then(|l| l.strip_suffix(']'))
                    .is_some_and(|n| names.iter().any(|w| w == n.trim()))
            })
        })
    };
    let in_config = [format!("profile {profile}"), profile.to_string()];
    if has(&config, &in_config) || has(&creds, &[profile.to_string()]) {
        return Ok(());
    }
    let shown: String = profile.chars().take(64).collect();
    Err(format!(
        "profile {shown} not found in {} or {}",
        config.display(),
        creds.display()
    ))
}

pub fn ec2_client(sdk: &SdkConfig, region: &str) -> aws_sdk_ec2::Client {
    let conf = aws_sdk_ec2::config::Builder::from(sdk)
        .region(Region::new(region.to_string()))
        .build();
    aws_sdk_ec2::Client::from_conf(conf)
}
