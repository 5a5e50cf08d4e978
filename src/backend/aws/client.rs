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
        .interceptor(CallLog::new(region))
        .build();
    aws_sdk_ec2::Client::from_conf(conf)
}

pub fn ebs_client(sdk: &SdkConfig, region: &str) -> aws_sdk_ebs::Client {
    let conf = aws_sdk_ebs::config::Builder::from(sdk)
        .region(Region::new(region.to_string()))
        .interceptor(CallLog::new(region))
        .interceptor(Throttles::new(region))
        .build();
    aws_sdk_ebs::Client::from_conf(conf)
}

/// Every attempt of a block request EBS throttled (retries included, which
/// the SDK otherwise hides) halves the region's budget for that API.
#[derive(Debug)]
pub struct Throttles {
    region: String,
}

impl Throttles {
    pub fn new(region: &str) -> Self {
        Throttles {
            region: region.to_string(),
        }
    }
}

/// Whether an EBS block request's error is EBS pushing back.
fn throttle_of(
    e: &aws_smithy_runtime_api::client::interceptors::context::Error,
) -> Option<super::budget::Api> {
    use super::budget::Api;
    use aws_sdk_ebs::error::ProvideErrorMetadata;
    use aws_sdk_ebs::operation::get_snapshot_block::GetSnapshotBlockError;
    use aws_sdk_ebs::operation::put_snapshot_block::PutSnapshotBlockError;
    let throttling = |code: Option<&str>| {
        matches!(
            code,
            Some("RequestThrottledException" | "ThrottlingException" | "TooManyRequestsException")
        )
    };
    if let Some(p) = e.downcast_ref::<PutSnapshotBlockError>() {
        return (p.is_request_throttled_exception() || throttling(p.code()))
            .then_some(Api::PutSnapshotBlock);
    }
    if let Some(g) = e.downcast_ref::<GetSnapshotBlockError>() {
        return (g.is_request_throttled_exception() || throttling(g.code()))
            .then_some(Api::GetSnapshotBlock);
    }
    None
}

impl aws_smithy_runtime_api::client::interceptors::Intercept for Throttles {
    fn name(&self) -> &'static str {
        "amitool-throttles"
    }

    fn read_after_attempt(
        &self,
        ctx: &aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef<
            '_,
        >,
        _rc: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        _cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        if let Some(Err(e)) = ctx.output_or_error() {
            if let Some(api) = e.as_operation_error().and_then(throttle_of) {
                super::budget::of(&self.region, api).throttled();
            }
        }
        Ok(())
    }
}

pub fn ssm_client(sdk: &SdkConfig, region: &str) -> aws_sdk_ssm::Client {
    let conf = aws_sdk_ssm::config::Builder::from(sdk)
        .region(Region::new(region.to_string()))
        .interceptor(CallLog::new(region))
        .build();
    aws_sdk_ssm::Client::from_conf(conf)
}

/// Step Functions: a fleet's activity, state machine and executions.
pub fn sfn_client(sdk: &SdkConfig, region: &str) -> aws_sdk_sfn::Client {
    let conf = aws_sdk_sfn::config::Builder::from(sdk)
        .region(Region::new(region.to_string()))
        .interceptor(CallLog::new(region))
        .build();
    aws_sdk_sfn::Client::from_conf(conf)
}

/// S3: a fleet's items and their records. An endpoint of one's own
/// (LocalStack) has no bucket subdomains: path-style addresses there.
pub fn s3_client(sdk: &SdkConfig, region: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(sdk)
        .region(Region::new(region.to_string()))
        .force_path_style(sdk.endpoint_url().is_some())
        .interceptor(CallLog::new(region))
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// `-v`: every AWS call as it ends, on one line: the service, the
/// operation, the region, the outcome (HTTP status) and how long it took,
/// retries included. One interceptor for every client.
#[derive(Debug)]
struct CallLog {
    region: String,
}

impl CallLog {
    fn new(region: &str) -> Self {
        CallLog {
            region: region.to_string(),
        }
    }
}

#[derive(Debug, Clone)]
struct CallStarted(std::time::Instant);

impl aws_smithy_types::config_bag::Storable for CallStarted {
    type Storer = aws_smithy_types::config_bag::StoreReplace<Self>;
}

impl aws_smithy_runtime_api::client::interceptors::Intercept for CallLog {
    fn name(&self) -> &'static str {
        "amitool-call-log"
    }

    fn read_before_execution(
        &self,
        _ctx: &aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef<'_>,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        cfg.interceptor_state()
            .store_put(CallStarted(std::time::Instant::now()));
        Ok(())
    }

    fn read_after_execution(
        &self,
        ctx: &aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef<
            '_,
        >,
        _rc: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let meta = cfg.load::<aws_smithy_runtime_api::client::orchestrator::Metadata>();
        let ms = cfg
            .load::<CallStarted>()
            .map_or(0, |s| s.0.elapsed().as_millis());
        let outcome = match (ctx.output_or_error(), ctx.response()) {
            (Some(Ok(_)), _) => "ok".to_string(),
            (_, Some(r)) => format!("HTTP {}", r.status().as_u16()),
            _ => "no answer".to_string(),
        };
        tracing::debug!(
            target: "amitool::aws",
            "{} {} in {}: {outcome} in {ms} ms",
            meta.map_or("?", |m| m.service()),
            meta.map_or("?", |m| m.name()),
            self.region
        );
        Ok(())
    }
}
