//! The fleet engine of the AWS backend: Step Functions (activities, a
//! Distributed Map) and S3 (the items and their records).

use async_trait::async_trait;
use aws_sdk_ec2::error::ProvideErrorMetadata;

use super::error::code;
use super::AwsBackend;
use crate::error::Result;
use crate::fleet::{parse_arn, Execution, FleetEngine, MapRun, Task};

impl AwsBackend {
    fn sfn(&self, region: &str) -> aws_sdk_sfn::Client {
        super::client::sfn_client(self.sdk_config(), region)
    }

    fn s3(&self, region: &str) -> aws_sdk_s3::Client {
        super::client::s3_client(self.sdk_config(), region)
    }

    /// The region of a Step Functions ARN (its calls go there).
    fn arn_region(arn: &str) -> Result<String> {
        Ok(parse_arn(arn)?.region.to_string())
    }
}

#[async_trait]
impl FleetEngine for AwsBackend {
    async fn activity(&self, region: &str, name: &str) -> Result<String> {
        // CreateActivity gives an existing activity of the name back.
        let out = self
            .sfn(region)
            .create_activity()
            .name(name)
            .send()
            .await
            .map_err(|e| self.err("create the fleet's activity", region, e))?;
        Ok(out.activity_arn().to_string())
    }

    async fn state_machine(
        &self,
        region: &str,
        name: &str,
        definition: &str,
        role_arn: &str,
    ) -> Result<String> {
        let sfn = self.sfn(region);
        let created = sfn
            .create_state_machine()
            .name(name)
            .definition(definition)
            .role_arn(role_arn)
            .send()
            .await;
        match created {
            Ok(out) => Ok(out.state_machine_arn().to_string()),
            Err(e) if code(&e) == Some("StateMachineAlreadyExists") => {
                // Its ARN is the activity's with the other resource type.
                let activity = self.activity(region, name).await?;
                let arn = activity.replacen(":activity:", ":stateMachine:", 1);
                sfn.update_state_machine()
                    .state_machine_arn(&arn)
                    .definition(definition)
                    .role_arn(role_arn)
                    .send()
                    .await
                    .map_err(|e| self.err("update the fleet's state machine", region, e))?;
                Ok(arn)
            }
            Err(e) => Err(self.err("create the fleet's state machine", region, e)),
        }
    }

    async fn bucket(&self, region: &str, bucket: &str) -> Result<()> {
        let s3 = self.s3(region);
        if s3.head_bucket().bucket(bucket).send().await.is_ok() {
            return Ok(());
        }
        let mut create = s3.create_bucket().bucket(bucket);
        if region != "us-east-1" {
            create = create.create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(region))
                    .build(),
            );
        }
        match create.send().await {
            Ok(_) => Ok(()),
            Err(e) if code(&e) == Some("BucketAlreadyOwnedByYou") => Ok(()),
            Err(e) => Err(self.err("create the fleet's bucket", region, e)),
        }
    }

    async fn put_object(&self, region: &str, bucket: &str, key: &str, body: Vec<u8>) -> Result<()> {
        self.s3(region)
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/json")
            .body(body.into())
            .send()
            .await
            .map_err(|e| self.err("write the fleet's object", region, e))?;
        Ok(())
    }

    async fn get_object(&self, region: &str, bucket: &str, key: &str) -> Result<Option<Vec<u8>>> {
        match self
            .s3(region)
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => {
                let body = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| crate::error::Error::Sdk {
                        action: "read the fleet's object",
                        region: region.to_string(),
                        message: e.to_string(),
                        source: Box::new(e),
                    })?;
                Ok(Some(body.into_bytes().to_vec()))
            }
            Err(e) if code(&e) == Some("NoSuchKey") => Ok(None),
            Err(e) => Err(self.err("read the fleet's object", region, e)),
        }
    }

    async fn start_execution(
        &self,
        state_machine_arn: &str,
        name: &str,
        input: &str,
    ) -> Result<String> {
        let region = Self::arn_region(state_machine_arn)?;
        let out = self
            .sfn(&region)
            .start_execution()
            .state_machine_arn(state_machine_arn)
            .name(name)
            .input(input)
            .send()
            .await
            .map_err(|e| self.err("start the fleet's execution", &region, e))?;
        Ok(out.execution_arn().to_string())
    }

    async fn execution(&self, execution_arn: &str) -> Result<Execution> {
        let region = Self::arn_region(execution_arn)?;
        let out = self
            .sfn(&region)
            .describe_execution()
            .execution_arn(execution_arn)
            .send()
            .await
            .map_err(|e| self.err("describe the fleet's execution", &region, e))?;
        Ok(Execution {
            status: out.status().as_str().to_string(),
            input: out.input().unwrap_or("{}").to_string(),
            error: out.error().map(String::from),
            cause: out.cause().map(String::from),
        })
    }

    async fn map_run(&self, execution_arn: &str) -> Result<Option<MapRun>> {
        let region = Self::arn_region(execution_arn)?;
        let sfn = self.sfn(&region);
        let runs = sfn
            .list_map_runs()
            .execution_arn(execution_arn)
            .send()
            .await
            .map_err(|e| self.err("list the fleet's map runs", &region, e))?;
        let Some(run) = runs.map_runs().first() else {
            return Ok(None);
        };
        let out = sfn
            .describe_map_run()
            .map_run_arn(run.map_run_arn())
            .send()
            .await
            .map_err(|e| self.err("describe the fleet's map run", &region, e))?;
        let mut m = MapRun {
            arn: out.map_run_arn().to_string(),
            status: out.status().as_str().to_string(),
            ..MapRun::default()
        };
        if let Some(c) = out.item_counts() {
            m.total = c.total();
            m.pending = c.pending();
            m.running = c.running();
            m.succeeded = c.succeeded();
            m.failed = c.failed();
            m.timed_out = c.timed_out();
            m.aborted = c.aborted();
        }
        Ok(Some(m))
    }

    async fn next_task(&self, activity_arn: &str, worker: &str) -> Result<Option<Task>> {
        let region = Self::arn_region(activity_arn)?;
        let out = self
            .sfn(&region)
            .get_activity_task()
            .activity_arn(activity_arn)
            .worker_name(worker)
            .send()
            .await
            .map_err(|e| self.err("poll the fleet's activity", &region, e))?;
        Ok(out
            .task_token()
            .filter(|t| !t.is_empty())
            .map(|token| Task {
                token: token.to_string(),
                input: out.input().unwrap_or("{}").to_string(),
            }))
    }

    async fn heartbeat(&self, activity_arn: &str, token: &str) -> Result<bool> {
        let region = Self::arn_region(activity_arn)?;
        match self
            .sfn(&region)
            .send_task_heartbeat()
            .task_token(token)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if gone(e.code()) => Ok(false),
            Err(e) => Err(self.err("send the item's heartbeat", &region, e)),
        }
    }

    async fn succeed(&self, activity_arn: &str, token: &str, output: &str) -> Result<()> {
        let region = Self::arn_region(activity_arn)?;
        self.sfn(&region)
            .send_task_success()
            .task_token(token)
            .output(output)
            .send()
            .await
            .map_err(|e| self.err("report the item's success", &region, e))?;
        Ok(())
    }

    async fn fail(&self, activity_arn: &str, token: &str, error: &str, cause: &str) -> Result<()> {
        let region = Self::arn_region(activity_arn)?;
        self.sfn(&region)
            .send_task_failure()
            .task_token(token)
            .error(error)
            .cause(cause)
            .send()
            .await
            .map_err(|e| self.err("report the item's failure", &region, e))?;
        Ok(())
    }
}

/// The engine no longer has the task: it timed out, or its execution ended.
fn gone(code: Option<&str>) -> bool {
    matches!(
        code,
        Some("TaskTimedOut" | "TaskDoesNotExist" | "InvalidToken")
    )
}
