//! amitool's integration tests, one binary: the CLI offline, the local Xen
//! host (QEMU boots, real Debian guests, day 2 of each), the AWS backend
//! against LocalStack (both migration methods, the cut-over), the helper's
//! script on loop devices and property tests of the image readers. The
//! failure matrix of the migration pipeline runs as unit tests on the fake
//! host (src/migrate/matrix.rs); these keep one test per real behaviour.

mod common;
mod day2;

mod aws_cutover;
mod aws_direct;
mod aws_fleet;
mod aws_helper;
mod aws_localstack;
mod aws_warm;
mod cli_offline;
mod local_backend;
mod prepare_script;
mod readers_props;
