//! The helper's SSM side: the client, and the command that runs the
//! preparation script and reads its report.

use std::time::Duration;

use base64::Engine;

use super::WAIT;
use crate::backend::aws::AwsBackend;
use crate::error::{Error, Result};
use crate::migrate::script::{self, Report};

impl AwsBackend {
    pub fn ssm(&self, region: &str) -> aws_sdk_ssm::Client {
        crate::backend::aws::client::ssm_client(self.sdk_config(), region)
    }

    pub(super) fn ssm_err<E, R>(
        &self,
        action: &'static str,
        region: &str,
        e: aws_sdk_ssm::error::SdkError<E, R>,
    ) -> Error
    where
        E: aws_sdk_ssm::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        crate::backend::aws::error::convert(action, region, self.sdk_config().endpoint_url(), e)
    }

    pub(super) async fn run_script(
        &self,
        region: &str,
        instance: &str,
        migration_id: &str,
        body: &str,
    ) -> Result<Report> {
        run_script(&self.ssm(region), region, instance, migration_id, body).await
    }
}

/// Run the rendered script through AWS-RunShellScript and read its report.
/// SendCommand is retried while SSM does not know the instance yet, and
/// GetCommandInvocation while the invocation does not exist yet.
pub(crate) async fn run_script(
    ssm: &aws_sdk_ssm::Client,
    region: &str,
    instance: &str,
    migration_id: &str,
    body: &str,
) -> Result<Report> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(body);
    let file = format!("/tmp/amitool-{migration_id}.sh");
    let command = format!("echo {b64} | base64 -d > {file} && bash {file}");
    let started = std::time::Instant::now();
    let command_id = loop {
        let sent = ssm
            .send_command()
            .document_name("AWS-RunShellScript")
            .instance_ids(instance)
            .parameters("commands", vec![command.clone()])
            .timeout_seconds(3600)
            .comment(format!("amitool {migration_id}"))
            .send()
            .await;
        match sent {
            Ok(out) => {
                break out
                    .command()
                    .and_then(|c| c.command_id())
                    .unwrap_or_default()
                    .to_string()
            }
            Err(e)
                if crate::backend::aws::error::code(&e) == Some("InvalidInstanceId")
                    && started.elapsed() < WAIT =>
            {
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            Err(e) => {
                return Err(crate::backend::aws::error::convert(
                    "SendCommand",
                    region,
                    None,
                    e,
                ))
            }
        }
    };
    let mut delay = Duration::from_millis(500);
    loop {
        let got = ssm
            .get_command_invocation()
            .command_id(&command_id)
            .instance_id(instance)
            .send()
            .await;
        match got {
            Ok(inv) => {
                let status = inv
                    .status()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default();
                if !matches!(status.as_str(), "Pending" | "InProgress" | "Delayed") {
                    let stdout = inv.standard_output_content().unwrap_or_default();
                    let report = script::parse_report(stdout).map_err(|_| Error::Transfer {
                        action: "run the preparation script",
                        region: region.into(),
                        message: format!(
                            "status {status}, no report; stderr: {}",
                            inv.standard_error_content()
                                .unwrap_or_default()
                                .lines()
                                .last()
                                .unwrap_or_default()
                        ),
                    })?;
                    return Ok(report);
                }
            }
            Err(e) if crate::backend::aws::error::code(&e) == Some("InvocationDoesNotExist") => {}
            Err(e) => {
                return Err(crate::backend::aws::error::convert(
                    "GetCommandInvocation",
                    region,
                    None,
                    e,
                ))
            }
        }
        if started.elapsed() > Duration::from_secs(3600) {
            return Err(Error::Transfer {
                action: "run the preparation script",
                region: region.into(),
                message: "no result within an hour".into(),
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    //! SSM failures LocalStack cannot produce, with aws-smithy-mocks.
    use super::*;
    use aws_sdk_ssm::error::ErrorMetadata;
    use aws_sdk_ssm::operation::get_command_invocation::{
        GetCommandInvocationError, GetCommandInvocationOutput,
    };
    use aws_sdk_ssm::operation::send_command::SendCommandOutput;
    use aws_sdk_ssm::types::error::InvocationDoesNotExist;
    use aws_sdk_ssm::types::{Command, CommandInvocationStatus};
    use aws_sdk_ssm::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    fn sent() -> aws_smithy_mocks::Rule {
        mock!(Client::send_command).then_output(|| {
            SendCommandOutput::builder()
                .command(Command::builder().command_id("c-1").build())
                .build()
        })
    }

    fn not_yet() -> GetCommandInvocationError {
        GetCommandInvocationError::InvocationDoesNotExist(
            InvocationDoesNotExist::builder()
                .meta(
                    ErrorMetadata::builder()
                        .code("InvocationDoesNotExist")
                        .build(),
                )
                .build(),
        )
    }

    fn invocation(
        status: CommandInvocationStatus,
        stdout: &str,
        stderr: &str,
    ) -> GetCommandInvocationOutput {
        GetCommandInvocationOutput::builder()
            .status(status)
            .standard_output_content(stdout)
            .standard_error_content(stderr)
            .build()
    }

    #[tokio::test]
    async fn waits_through_invocation_does_not_exist_and_reads_a_refusal() {
        let send = sent();
        let get = mock!(Client::get_command_invocation)
            .sequence()
            .error(not_yet)
            .output(|| invocation(CommandInvocationStatus::InProgress, "", ""))
            .output(|| {
                invocation(
                    CommandInvocationStatus::Failed,
                    "amitool: refused\n{\"migration_id\":\"mig-0123456789ab\",\"mode\":\"convert\",\"ok\":false,\"reason\":\"target device /dev/sdg has 1 bytes\"}\n",
                    "",
                )
            })
            .build();
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, &[&send, &get]);
        let r = run_script(
            &ssm,
            "us-east-1",
            "i-0123456789abcdef0",
            "mig-0123456789ab",
            "#!/bin/bash\n",
        )
        .await
        .unwrap();
        assert!(!r.ok);
        assert_eq!(
            r.reason.as_deref(),
            Some("target device /dev/sdg has 1 bytes")
        );
        assert_eq!(get.num_calls(), 3);
    }

    #[tokio::test]
    async fn a_failed_command_without_report_is_a_clear_error() {
        let send = sent();
        let get = mock!(Client::get_command_invocation).then_output(|| {
            invocation(
                CommandInvocationStatus::Failed,
                "",
                "bash: line 1: base64: command not found\n",
            )
        });
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, &[&send, &get]);
        let e = run_script(
            &ssm,
            "us-east-1",
            "i-0123456789abcdef0",
            "mig-0123456789ab",
            "#!/bin/bash\n",
        )
        .await
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "run the preparation script in us-east-1: status Failed, no report; stderr: bash: line 1: base64: command not found"
        );
    }
}
